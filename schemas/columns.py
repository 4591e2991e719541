"""Avro values decoded a batch at a time, straight into column arrays (numpy).

The generated codecs (schemas/fastcodec.py) decode one record into one dict:
a few Python statements per field per record, which is what bounds a reader
that only wants the data column by column (the ClickHouse sink). Here every
field is read for all records of a batch at once: the records lie side by
side in one buffer, a numpy array holds each record's read position, and
reading a field advances all positions together. Nothing is built per record.

What comes out, per field (``ColumnBatch.columns``):

- ``LongColumn``: ``int``/``long`` values (int64), ``BoolColumn`` (uint8 0/1);
- ``StringColumn``: each value as (start, length) in ``ColumnBatch.buffer``,
  the UTF-8 bytes exactly as they were sent, never copied into Python
  strings;
- ``OptionalColumn``: a ``["null", T]`` union: ``present`` and T's column
  (absent rows hold 0 or an empty string);
- ``StringListColumn`` / ``StringMapColumn``: arrays and maps of strings as a
  count per row and their items flattened in row order.

A record that is not a valid value of the schema (truncated, malformed,
written with another schema, bytes after its end, a string that is not
UTF-8, a number that needs more than 64 bits) is flagged in
``ColumnBatch.bad`` and its columns hold garbage: callers decode those
records one by one with ``schemas.codecs`` to learn why (and to resolve
other writer versions and JSON). So is a record whose arrays or maps are
unusually long (``MAX_ITEMS``): the batch reader loops once per item index.
``int`` values outside 32 bits are flagged too, so the caller's strict path
sees them.

Supported types: null (in unions), boolean, int, long, string, bytes,
``["null", T]`` unions, and arrays and maps of strings, in a flat record;
anything else raises ``NotImplementedError`` when the decoder is built.
Unit tests check every column against the generated decoder's output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from schemas import registry

Int64s = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

# Strings up to this many bytes (with their length) are copied row by row
# through a window of this width; longer ones byte by byte.
_SLAB_MAX = 1024
# Bytes of zeros after the last record: reads that start at or before a
# record's end (a few varints, an 8-byte word, a slab) never leave the buffer.
_PAD = _SLAB_MAX + 64
_PADDING = bytes(_PAD)
_HIGH_BITS = np.uint64(0x8080808080808080)
_LOW_BITS = np.uint64(0x7F7F7F7F7F7F7F7F)
# Folding seven-bit groups together, pairs of lanes at a time.
_FOLDS = tuple(
    (np.uint64(keep), np.uint64(move), np.uint64(shift))
    for keep, move, shift in (
        (0x007F007F007F007F, 0x7F007F007F007F00, 1),
        (0x00003FFF00003FFF, 0x3FFF00003FFF0000, 2),
        (0x000000000FFFFFFF, 0x0FFFFFFF00000000, 4),
    )
)
_ONE = np.uint64(1)
_ZERO = np.uint64(0)
_COLUMNS = np.arange(_SLAB_MAX + 8, dtype=np.int64)
# Items per array or map beyond which a record takes the one-by-one path: the
# batch reader loops once per item index, which must stay short.
MAX_ITEMS = 256
# Values per decode call that keep the passes over them in cache (see decode).
DECODE_CHUNK = 4_096
_WIDTH = np.arange(10, dtype=np.int64)
_SHIFTS = np.arange(0, 70, 7, dtype=np.uint64)
_INT32 = 2**31
_NO_BYTES = np.zeros(0, dtype=np.uint8)


@dataclass
class StringColumn:
    """One string per row: the bytes ``buffer[start:start + length]``.

    ``data`` holds the same strings concatenated in row order, each after its
    length as an unsigned LEB128 varint (the length-delimited layout of
    protobuf, and of ClickHouse's Native ``String`` columns); it is filled
    by ``ColumnDecoder.decode`` and by ``ColumnBatch.select``.
    """

    start: Int64s
    length: Int64s
    data: npt.NDArray[np.uint8] = field(default_factory=lambda: _NO_BYTES)

    def select(self, keep: Bools) -> StringColumn:
        return StringColumn(self.start[keep], self.length[keep])


@dataclass
class LongColumn:
    values: Int64s

    def select(self, keep: Bools) -> LongColumn:
        return LongColumn(self.values[keep])


@dataclass
class BoolColumn:
    values: npt.NDArray[np.uint8]

    def select(self, keep: Bools) -> BoolColumn:
        return BoolColumn(self.values[keep])


@dataclass
class OptionalColumn:
    """A ``["null", T]`` field: ``present`` per row, T's column for every row."""

    present: Bools
    inner: Column

    def select(self, keep: Bools) -> OptionalColumn:
        return OptionalColumn(self.present[keep], self.inner.select(keep))


@dataclass
class StringListColumn:
    """An array of strings per row: ``counts`` and the items of all rows, in row order."""

    counts: Int64s
    items: StringColumn

    def select(self, keep: Bools) -> StringListColumn:
        items = np.repeat(keep, self.counts)
        return StringListColumn(self.counts[keep], self.items.select(items))


@dataclass
class StringMapColumn:
    """A map of strings per row: ``counts``, keys and values of all rows, in row order."""

    counts: Int64s
    keys: StringColumn
    values: StringColumn

    def select(self, keep: Bools) -> StringMapColumn:
        items = np.repeat(keep, self.counts)
        return StringMapColumn(
            self.counts[keep], self.keys.select(items), self.values.select(items)
        )


Column = (
    StringColumn | LongColumn | BoolColumn | OptionalColumn | StringListColumn | StringMapColumn
)


@dataclass
class ColumnBatch:
    """Decoded records, column by column; ``bad`` flags the records that did not decode."""

    buffer: npt.NDArray[np.uint8]
    data: bytes
    rows: int
    columns: dict[str, Column]
    bad: Bools

    def select(self, keep: Bools) -> ColumnBatch:
        """The rows where ``keep`` is true (typically ``~bad``), strings laid out again."""
        columns = {name: column.select(keep) for name, column in self.columns.items()}
        _lay_out(self.buffer, _words(self.buffer), list(_string_columns(columns.values())))
        return ColumnBatch(self.buffer, self.data, int(keep.sum()), columns, self.bad[keep])

    def equals(self, strings: StringColumn, value: bytes) -> Bools:
        """Which rows of ``strings`` hold exactly ``value`` (compared 8 bytes at a time)."""
        same = strings.length == len(value)
        if not value or not same.any():
            return same
        words = _words(self.buffer)
        for at in range(0, len(value), 8):
            chunk = value[at : at + 8]
            word = words[strings.start + at]
            if len(chunk) < 8:
                word &= np.uint64((1 << (8 * len(chunk))) - 1)
            same &= word == np.uint64(int.from_bytes(chunk, "little"))
        return same

    def text(self, strings: StringColumn, index: int) -> str:
        start = int(strings.start[index])
        return self.data[start : start + int(strings.length[index])].decode()

    def record(self, row: int, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """One row (``fields`` of it) as the generated decoder's dict, for the few rows
        that need Python values."""
        names = self.columns if fields is None else fields
        return {name: self._value(self.columns[name], row) for name in names}

    def _value(self, column: Column, row: int) -> Any:
        if isinstance(column, OptionalColumn):
            return self._value(column.inner, row) if column.present[row] else None
        if isinstance(column, StringColumn):
            return self.text(column, row)
        if isinstance(column, LongColumn):
            return int(column.values[row])
        if isinstance(column, BoolColumn):
            return bool(column.values[row])
        first = int(column.counts[:row].sum())
        items = range(first, first + int(column.counts[row]))
        if isinstance(column, StringListColumn):
            return [self.text(column.items, i) for i in items]
        return {self.text(column.keys, i): self.text(column.values, i) for i in items}


class _Reads:
    """The positions of the records being read and what is known to be wrong with them.

    Reads of fixed size (tags, varints) may run a few bytes past a record's
    end; the padding after the last record absorbs that, and ``clamp`` (after
    every string and every field) brings positions back and flags the record.
    """

    def __init__(self, buffer: npt.NDArray[np.uint8], ends: Int64s) -> None:
        self.buffer = buffer
        self.words = _words(buffer)
        self.ends = ends
        self.bad = np.zeros(len(ends), dtype=np.bool_)

    def flag(self, rows: Int64s | None, mask: Bools) -> None:
        """Flag the records at ``mask`` (of the active ``rows``, or of all when None)."""
        if mask.any():
            self.bad[mask if rows is None else rows[mask]] = True

    def varints(self, rows: Int64s | None, pos: Int64s) -> tuple[Int64s, Int64s]:
        """The zig-zag longs at ``pos``: ``(values, next positions)``.

        Each value's first eight bytes are read as one little-endian word;
        the last byte is the lowest one without its high bit, and the seven
        low bits of each byte up to it fold into the value in three steps.
        """
        first = self.buffer[pos]
        if not len(first) or int(first.max()) < 0x80:  # every value fits in one byte
            small = first.astype(np.int64)
            return (small >> 1) ^ -(small & 1), pos + 1
        words = self.words[pos]
        stops = ~words & _HIGH_BITS
        last = stops & (_ZERO - stops)
        nine = last == 0  # nine or ten bytes
        if nine.any():
            last[nine] = _ONE << np.uint64(63)
        size = (np.log2(last).astype(np.int64) + 1) >> 3
        raw = words & _LOW_BITS & ((last << _ONE) - _ONE)
        for keep, move, shift in _FOLDS:
            raw = (raw & keep) | ((raw & move) >> shift)
        if nine.any():
            where = np.flatnonzero(nine)
            raw[where], size[where], wrong = self._long_varints(pos[where])
            self.flag(rows, _scatter(len(pos), where, wrong))
        values = ((raw >> _ONE) ^ (_ZERO - (raw & _ONE))).view(np.int64)
        return values, pos + size

    def _long_varints(self, pos: Int64s) -> tuple[npt.NDArray[np.uint64], Int64s, Bools]:
        """Varints of nine or ten bytes (64 bits at most: longer ones are wrong)."""
        window = self.buffer[pos[:, None] + _WIDTH]
        more = window >= 0x80
        size = np.argmin(more, axis=1) + 1
        wrong = more.all(axis=1) | ((size == 10) & (window[:, 9] > 1))
        parts = (window & 0x7F).astype(np.uint64) << _SHIFTS
        parts[size[:, None] <= _WIDTH] = 0
        return np.bitwise_or.reduce(parts, axis=1), size, wrong

    def clamp(self, rows: Int64s | None, pos: Int64s) -> Int64s:
        """Positions past their record's end flag it, and are held at the end."""
        ends = self.ends if rows is None else self.ends[rows]
        over = pos > ends
        if over.any():
            self.flag(rows, over)
            pos = np.minimum(pos, ends)
        return pos


def _words(buffer: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """The little-endian 8-byte word starting at each byte of ``buffer`` (a view, no copy)."""
    return sliding_window_view(buffer, 8).view("<u8")[:, 0]


def _scatter(n: int, where: Int64s, values: Bools) -> Bools:
    out = np.zeros(n, dtype=np.bool_)
    out[where] = values
    return out


Reader = Callable[[_Reads, "Int64s | None", Int64s], tuple[Column, Int64s]]


def _read_long(is_int: bool) -> Reader:
    def read(reads: _Reads, rows: Int64s | None, pos: Int64s) -> tuple[Column, Int64s]:
        values, pos = reads.varints(rows, pos)
        if is_int:
            reads.flag(rows, (values < -_INT32) | (values >= _INT32))
        return LongColumn(values), pos

    return read


def _read_boolean(reads: _Reads, rows: Int64s | None, pos: Int64s) -> tuple[Column, Int64s]:
    values = reads.buffer[pos]
    reads.flag(rows, values > 1)
    return BoolColumn(values), pos + 1


def _read_string(optional: bool) -> Reader:
    """A string, or a ``["null", "string"]`` union (absent: an empty string, ``present`` false).

    The common case costs a handful of whole-column operations: a length
    below 64 is one varint byte, read for every row at once (for an absent
    row it is the next field's byte, and masked out); only the rows whose
    length takes more bytes go through ``_Reads.varints``.
    """

    def read(reads: _Reads, rows: Int64s | None, pos: Int64s) -> tuple[Column, Int64s]:
        buffer = reads.buffer
        if optional:
            tag = buffer[pos]
            present = tag >> 1
            reads.flag(rows, (tag & 0xFD) != 0)
            pos = pos + 1
            first = buffer[pos] * present
        else:
            present = None
            first = buffer[pos]
        # A length's sign is the low bit of its first byte (zig-zag).
        reads.flag(rows, (first & 1) != 0)
        length = (first >> 1).astype(np.int64)
        start = pos + (1 if present is None else present)
        wide = np.flatnonzero(first >= 0x80)
        if len(wide):
            length[wide], start[wide] = reads.varints(
                None if rows is None else rows[wide], pos[wide]
            )
            negative = length < 0
            if negative.any():
                reads.flag(rows, negative)
                length[negative] = 0
        end = reads.clamp(rows, start + length)
        start = np.minimum(start, end)
        column = StringColumn(start, end - start)
        if present is None:
            return column, end
        return OptionalColumn(present.view(np.bool_), column), end

    return read


def _strings(reads: _Reads, rows: Int64s | None, pos: Int64s) -> tuple[StringColumn, Int64s]:
    column, pos = _read_string(False)(reads, rows, pos)
    assert isinstance(column, StringColumn)
    return column, pos


def _read_optional(inner: Reader) -> Reader:
    """``["null", T]``: a 0 byte (null) or a 2 byte (the second branch) then T."""

    def read(reads: _Reads, rows: Int64s | None, pos: Int64s) -> tuple[Column, Int64s]:
        tag = reads.buffer[pos]
        reads.flag(rows, (tag & 0xFD) != 0)
        present = tag == 2
        pos = pos + 1
        where = np.flatnonzero(present)
        if len(where) == len(pos):
            column, pos = inner(reads, rows, pos)
            return OptionalColumn(present, column), pos
        sub_rows = where if rows is None else rows[where]
        sub, sub_pos = inner(reads, sub_rows, pos[where])
        pos = pos.copy()
        pos[where] = sub_pos
        return OptionalColumn(present, _widen(sub, where, len(pos), pos)), pos

    return read


def _widen(column: Column, where: Int64s, n: int, pos: Int64s) -> Column:
    """A column of the rows ``where`` spread over ``n`` rows (the others empty)."""
    if isinstance(column, StringColumn):
        start = pos.copy()
        start[where] = column.start
        length = np.zeros(n, dtype=np.int64)
        length[where] = column.length
        return StringColumn(start, length)
    if isinstance(column, LongColumn):
        values = np.zeros(n, dtype=np.int64)
        values[where] = column.values
        return LongColumn(values)
    if isinstance(column, BoolColumn):
        flags = np.zeros(n, dtype=np.uint8)
        flags[where] = column.values
        return BoolColumn(flags)
    raise NotImplementedError(f"optional {type(column).__name__}")


def _read_items(is_map: bool) -> Reader:
    """An array or map of strings: blocks of ``count`` items until a block of 0."""

    def read(reads: _Reads, rows: Int64s | None, pos: Int64s) -> tuple[Column, Int64s]:
        n = len(pos)
        counts = np.zeros(n, dtype=np.int64)
        active = np.arange(n)
        # Per block and item index: (row of the active set, item number, key, value).
        parts: list[tuple[Int64s, Int64s, StringColumn | None, StringColumn]] = []
        pos = pos.copy()
        while len(active):
            act_rows = active if rows is None else rows[active]
            count, at = reads.varints(act_rows, pos[active])
            negative = count < 0
            if negative.any():  # a negative count is followed by the block's size in bytes
                count = np.abs(count)
                where = np.flatnonzero(negative)
                _size, at[where] = reads.varints(act_rows[where], at[where])
            at = reads.clamp(act_rows, at)
            too_many = counts[active] + count > MAX_ITEMS
            if too_many.any():
                reads.flag(act_rows, too_many)
                count[too_many] = 0
            pos[active] = at
            for item in range(int(count.max(initial=0))):
                take = np.flatnonzero(count > item)
                who = active[take]
                who_rows = who if rows is None else rows[who]
                key = None
                if is_map:
                    key, pos[who] = _strings(reads, who_rows, pos[who])
                value, pos[who] = _strings(reads, who_rows, pos[who])
                parts.append((who, counts[who] + item, key, value))
            counts[active] += count
            active = active[count > 0]
        order, total = _item_order(parts, counts)
        values = _gather_strings([p[3] for p in parts], order, total)
        if is_map:
            keys = _gather_strings([p[2] for p in parts if p[2] is not None], order, total)
            return StringMapColumn(counts, keys, values), pos
        return StringListColumn(counts, values), pos

    return read


def _item_order(
    parts: list[tuple[Int64s, Int64s, StringColumn | None, StringColumn]], counts: Int64s
) -> tuple[Int64s, int]:
    """Where each item read (in reading order) goes in the flat, row-ordered item list."""
    total = int(counts.sum())
    if not parts:
        return np.zeros(0, dtype=np.int64), total
    first = np.cumsum(counts) - counts
    order = np.concatenate([first[who] + number for who, number, _k, _v in parts])
    return order, total


def _gather_strings(columns: list[StringColumn | None], order: Int64s, total: int) -> StringColumn:
    start = np.zeros(total, dtype=np.int64)
    length = np.zeros(total, dtype=np.int64)
    if columns:
        start[order] = np.concatenate([c.start for c in columns if c is not None])
        length[order] = np.concatenate([c.length for c in columns if c is not None])
    return StringColumn(start, length)


def _reader(avro_type: Any) -> Reader:
    kind = avro_type["type"] if isinstance(avro_type, dict) else avro_type
    if isinstance(avro_type, list):
        if avro_type == ["null", "string"]:
            return _read_string(True)
        if len(avro_type) == 2 and avro_type[0] == "null" and avro_type[1] != "null":
            return _read_optional(_reader(avro_type[1]))
        raise NotImplementedError(f"column decoder: union {avro_type!r}")
    if kind in ("int", "long"):
        return _read_long(kind == "int")
    if kind == "boolean":
        return _read_boolean
    if kind == "string":
        return _read_string(False)
    if kind in ("array", "map"):
        items = avro_type["items"] if kind == "array" else avro_type["values"]
        if items != "string":
            raise NotImplementedError(f"column decoder: {kind} of {items!r}")
        return _read_items(kind == "map")
    raise NotImplementedError(f"column decoder: Avro type {avro_type!r}")


class ColumnDecoder:
    """Decodes batches of one record schema's values (each after ``header``) into columns."""

    def __init__(self, schema: dict[str, Any], header: bytes = b"") -> None:
        self.name: str = schema["name"]
        if 0 < len(header) < 8:
            raise ValueError("a header is empty or 8 bytes long at least")
        self.header = header
        self.fields = [(field["name"], _reader(field["type"])) for field in schema["fields"]]

    def decode(self, values: Sequence[bytes]) -> ColumnBatch:
        """The columns of ``values``; every value must start with ``header``.

        Every column is a pass over all the values: a few thousand values at
        a time (``DECODE_CHUNK``) stay in the CPU's cache across the passes,
        which measured about twice as fast as tens of thousands.
        """
        n = len(values)
        data = b"".join([*values, _PADDING])  # one copy, the padding included
        sizes = np.fromiter(map(len, values), dtype=np.int64, count=n)
        ends = np.cumsum(sizes)
        starts = ends - sizes
        buffer = np.frombuffer(data, dtype=np.uint8)
        reads = _Reads(buffer, ends)
        header = len(self.header)
        if header:
            reads.flag(None, (sizes < header) | self._foreign(reads.words, starts))
        pos = np.minimum(starts + header, ends)
        columns: dict[str, Column] = {}
        for name, read in self.fields:
            columns[name], pos = read(reads, None, pos)
            pos = reads.clamp(None, pos)
        reads.flag(None, pos != ends)
        failed = _lay_out(buffer, reads.words, list(_string_columns(columns.values())))
        if failed:
            _check_utf8(reads, failed, columns.values())
        return ColumnBatch(buffer, data, n, columns, reads.bad)

    def _foreign(self, words: npt.NDArray[np.uint64], starts: Int64s) -> Bools:
        """Records whose first bytes are not ``header`` (compared 8 bytes at a time)."""
        foreign = np.zeros(len(starts), dtype=np.bool_)
        header = self.header
        for at in range(0, len(header), 8):
            chunk = header[at : at + 8]
            if len(chunk) < 8:
                at, chunk = len(header) - 8, header[-8:]  # noqa: PLW2901 (a last, overlapping word)
            foreign |= words[starts + at] != np.frombuffer(chunk, dtype="<u8")[0]
        return foreign


def _string_columns(columns: Iterable[Column]) -> Iterator[StringColumn]:
    for outer in columns:
        column = outer.inner if isinstance(outer, OptionalColumn) else outer
        if isinstance(column, StringColumn):
            yield column
        elif isinstance(column, StringListColumn):
            yield column.items
        elif isinstance(column, StringMapColumn):
            yield column.keys
            yield column.values


def _varint_sizes(length: Int64s) -> Int64s:
    """Bytes of the unsigned LEB128 varint of each length."""
    size = np.ones(len(length), dtype=np.int64)
    for bits in (7, 14, 21, 28, 35):
        size += length >= (1 << bits)
    return size


def _lay_out(
    buffer: npt.NDArray[np.uint8], words: npt.NDArray[np.uint64], strings: list[StringColumn]
) -> list[StringColumn]:
    """Fill each column's ``data``; return the columns that are not all valid UTF-8.

    No Python code runs per string. Strings of up to 7 bytes are copied as
    one 8-byte word per row, longer ones (up to ``_SLAB_MAX``) as one window
    of fixed width per row, the bytes past each string dropped by a mask
    (not even that when all have one length); a column with a few long
    strings is gathered byte by byte, the source of each output byte given
    by a running sum (1 within a string, a jump at each string).

    Each string is preceded by its length slot. While a slot holds zeros,
    or a length below 128 (one byte), a column decodes as UTF-8 if and only
    if each of its strings does: so one check per column, and most columns
    (no byte above 0x7F) need no decoding at all.
    """
    failed = []
    for column in strings:
        if not _column_bytes(buffer, words, column):
            failed.append(column)
    return failed


def _column_bytes(
    buffer: npt.NDArray[np.uint8], words: npt.NDArray[np.uint64], column: StringColumn
) -> bool:
    """Lay out one column (see ``_lay_out``); False when it is not all UTF-8."""
    length = column.length
    n = len(length)
    longest = int(length.max(initial=0))
    if longest == 0:  # every string empty (or no rows): n lengths of 0
        column.data = np.zeros(n, dtype=np.uint8)
        return True
    slot = _varint_sizes(length) if longest >= 0x80 else np.ones(n, dtype=np.int64)
    size = slot + length
    width = int(size.max())
    source = column.start - slot  # the slot's bytes are the ones before the string
    if width == int(size.min()):  # one length for all: the windows are the output
        out = _windows(buffer, words, source, width)[:, :width].reshape(-1)
    elif width <= _SLAB_MAX and n * width <= 3 * int(size.sum()):
        rows = _windows(buffer, words, source, width)
        out = rows[_COLUMNS[: rows.shape[1]] < size[:, None]]
    else:
        at = np.cumsum(size) - size
        steps = np.ones(int(size.sum()), dtype=np.int64)  # numpy turns other index types into int64
        steps[at[1:]] += np.diff(source - at)  # every string takes one byte at least
        steps[0] = source[0]
        np.cumsum(steps, out=steps)
        out = np.take(buffer, steps, mode="clip")
    column.data = out
    at = np.cumsum(size) - size
    if longest < 0x80:
        out[at] = length
        return int(out.max()) < 0x80 or _utf8(out)
    for extra in range(int(slot.max())):
        out[at[slot > extra] + extra] = 0
    valid = int(out.max()) < 0x80 or _utf8(out)
    rest = length.copy()
    for extra in range(int(slot.max())):
        wide = slot > extra
        more = slot > extra + 1
        out[at[wide] + extra] = (rest[wide] & 0x7F) | np.where(more[wide], 0x80, 0)
        rest >>= 7
    return valid


def _windows(
    buffer: npt.NDArray[np.uint8], words: npt.NDArray[np.uint64], source: Int64s, width: int
) -> npt.NDArray[np.uint8]:
    """The ``width`` (or a few more) bytes from each ``source``, one row each.

    Up to 32 bytes as 8-byte words (a one-dimensional gather each, the
    cheapest numpy copy), wider through a window view of the buffer.
    """
    if width > 32:
        return sliding_window_view(buffer, width)[source]
    count = (width + 7) // 8
    rows = np.empty((len(source), count), dtype=np.uint64)
    for word in range(count):
        rows[:, word] = words[source + 8 * word]
    return rows.view(np.uint8)


def _utf8(data: npt.NDArray[np.uint8]) -> bool:
    try:
        data.tobytes().decode()
    except UnicodeDecodeError:
        return False
    return True


def _check_utf8(reads: _Reads, failed: list[StringColumn], columns: Iterable[Column]) -> None:
    """Flag the records of the strings that are not UTF-8, in columns that failed as a whole."""
    row_of: dict[int, Int64s] = {}  # item → row, for the items of arrays and maps
    for column in columns:
        if isinstance(column, StringListColumn | StringMapColumn):
            rows = np.repeat(np.arange(len(column.counts)), column.counts)
            for items in _string_columns([column]):
                row_of[id(items)] = rows
    data = reads.buffer.data
    for column in failed:
        rows = row_of.get(id(column))
        for index, (start, length) in enumerate(
            zip(column.start.tolist(), column.length.tolist(), strict=True)
        ):
            try:
                str(data[start : start + length], "utf-8")
            except UnicodeDecodeError:
                reads.bad[index if rows is None else rows[index]] = True


@cache
def decoder(name: str) -> ColumnDecoder:
    """The column decoder of a record type's current schema (values in single-object encoding)."""
    current = registry.current(name)
    return ColumnDecoder(current.schema, b"\xc3\x01" + current.fingerprint)
