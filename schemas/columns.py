"""Avro values decoded a batch at a time, straight into column arrays (numpy).

The generated codecs (schemas/fastcodec.py) decode one record into one dict:
a few Python statements per field per record, which is what bounds a reader
that only wants the data column by column (the ClickHouse sink). Here every
field is read for all records of a batch at once: the records lie side by
side in one buffer, a numpy array holds each record's read position, and
reading a field advances all positions together. Nothing is built per record.

Two implementations give the same columns: a loop compiled by numba (the
default: one pass over the records, field after field, then one over the
strings to lay them out; about twice as fast as the numpy passes on the
sink's events, and it runs without the GIL), and the numpy passes, used
when numba is missing or a schema has a type the compiled loop does not
read (``ColumnDecoder(..., compiled=False)`` asks for them).

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
from types import ModuleType
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
        strings = list(_string_columns(columns.values()))
        if numba is not None:
            _lay_out_compiled(self.buffer, strings)
        else:
            _lay_out(self.buffer, _words(self.buffer), strings)
        return ColumnBatch(self.buffer, self.data, int(keep.sum()), columns, self.bad[keep])

    def equals(self, strings: StringColumn, value: bytes) -> Bools:
        """Which rows of ``strings`` hold exactly ``value`` (compared 8 bytes at a time)."""
        same: Bools = strings.length == len(value)
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

    def __init__(self, schema: dict[str, Any], header: bytes = b"", compiled: bool = True) -> None:
        self.name: str = schema["name"]
        if 0 < len(header) < 8:
            raise ValueError("a header is empty or 8 bytes long at least")
        self.header = header
        self.fields = [(field["name"], _reader(field["type"])) for field in schema["fields"]]
        plan = _plan(schema) if compiled else None
        self._compiled = None if plan is None else _Compiled(plan, header)
        if self._compiled is not None:
            self.decode([])  # compiled now (or loaded from numba's cache), not on the first batch

    @property
    def compiled(self) -> bool:
        """Whether batches are decoded by the compiled loop (else by numpy passes)."""
        return self._compiled is not None

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
        if self._compiled is not None:
            compiled, bad = self._compiled.decode(buffer, starts, ends)
            return ColumnBatch(buffer, data, n, compiled, bad)
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
            item_rows = np.repeat(np.arange(len(column.counts)), column.counts)
            for items in _string_columns([column]):
                row_of[id(items)] = item_rows
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


# -- The compiled decoder ------------------------------------------------------
#
# numba compiles the loop below to machine code (at first use, then from its
# cache in __pycache__): one pass over the records, field after field, which
# is what a hand-written C decoder would do. It takes the same values and
# gives the same columns and the same ``bad`` flags as the numpy passes
# above (the unit tests run both against the one-record codec), in about
# half their time, and without the GIL, so the sink's insert thread runs
# meanwhile. Without numba (or for a schema it does not cover) the numpy
# passes are used.

numba: ModuleType | None
try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; the numpy passes still work
    numba = None

# Field kinds of the compiled decoder (``_plan``); an optional field has a
# ``present`` slot too.
_K_LONG, _K_INT, _K_BOOL, _K_STRING, _K_LIST, _K_MAP = range(6)
_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U7 = np.uint64(7)
_U127 = np.uint64(0x7F)


def _jit(function: Callable[..., Any], inline: bool = False) -> Any:
    """``function`` compiled (cached on disk); ``inline``: into each compiled caller."""
    if numba is None:
        return None
    options: dict[str, Any] = {"nogil": True, "boundscheck": False}
    if inline:
        options["inline"] = "always"
    try:
        return numba.njit(cache=True, **options)(function)
    except RuntimeError:  # no writable place for the cache: compiled at every start
        return numba.njit(**options)(function)


def _varint_py(buf: Any, pos: int, end: int) -> tuple[Any, int, bool]:
    """An unsigned varint of at most 64 bits inside ``[pos, end)``: (raw, next pos, ok)."""
    raw = _U0
    shift = _U0
    for i in range(10):
        if pos >= end:
            return raw, pos, False
        byte = buf[pos]
        pos += 1
        if i == 9 and byte > 1:
            return raw, pos, False
        raw |= (np.uint64(byte) & _U127) << shift
        if byte < 0x80:
            return raw, pos, True
        shift += _U7
    return raw, pos, False


def _zigzag_py(raw: Any) -> np.int64:
    return np.int64((raw >> _U1) ^ (_U0 - (raw & _U1)))


def _utf8_py(buf: Any, start: int, end: int) -> bool:
    """Whether ``buf[start:end]`` is UTF-8 as Python's strict decoder reads it."""
    i = start
    while i < end:
        c = buf[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            need, low, high = 1, 0x80, 0xBF
        elif c == 0xE0:
            need, low, high = 2, 0xA0, 0xBF
        elif 0xE1 <= c <= 0xEC or 0xEE <= c <= 0xEF:
            need, low, high = 2, 0x80, 0xBF
        elif c == 0xED:  # no surrogates
            need, low, high = 2, 0x80, 0x9F
        elif c == 0xF0:
            need, low, high = 3, 0x90, 0xBF
        elif 0xF1 <= c <= 0xF3:
            need, low, high = 3, 0x80, 0xBF
        elif c == 0xF4:  # nothing above U+10FFFF
            need, low, high = 3, 0x80, 0x8F
        else:
            return False
        if i + need >= end:
            return False
        second = buf[i + 1]
        if second < low or second > high:
            return False
        for j in range(2, need + 1):
            if buf[i + j] < 0x80 or buf[i + j] > 0xBF:
                return False
        i += need + 1
    return True


def _string_py(buf: Any, pos: int, end: int) -> tuple[int, int | np.int64, int | np.int64, bool]:
    """A string inside ``[pos, end)``: (start, length, next pos, ok)."""
    raw, pos, ok = _c_varint(buf, pos, end)
    if not ok or raw & _U1:  # a negative length
        return pos, 0, pos, False
    length = np.int64(raw >> _U1)
    if length > end - pos:
        return pos, 0, pos, False
    high = 0
    for i in range(pos, pos + length):  # a loop the compiler vectorises
        high |= buf[i]
    if high >= 0x80 and not _c_utf8(buf, pos, pos + length):
        return pos, 0, pos, False
    return pos, length, pos + length, True


def _decode_py(  # noqa: PLR0915 (one loop over every field: compiled, calls cost)
    buf: Any,
    starts: Any,
    ends: Any,
    header: Any,
    plan: Any,
    longs: Any,
    flags: Any,
    present: Any,
    string_start: Any,
    string_length: Any,
    counts: Any,
    bad: Any,
    max_items: int,
    items: Any,
    first_row: int,
    first_item: int,
) -> tuple[int, int]:
    """Records from ``first_row`` on, field after field, into the given arrays (zeros
    for a bad record); the strings of arrays and maps from ``first_item`` on into
    ``items`` (field, row, key start, key length, value start, value length).

    Returns (rows, items) done: fewer rows than given when ``items`` is full
    (the caller makes it larger and calls again from there). Nothing here
    allocates: an array made or replaced in the loop costs reference counting
    on every step, which measured several times slower.
    """
    n = len(starts)
    capacity = items.shape[0]
    item = first_item
    fields = plan.shape[0]
    size = len(header)
    for row in range(first_row, n):
        pos = starts[row]
        end = ends[row]
        row_items = item
        ok = end - pos >= size
        if ok:
            for j in range(size):
                if buf[pos + j] != header[j]:
                    ok = False
                    break
        pos += size
        f = 0
        while ok and f < fields:
            kind = plan[f, 0]
            slot = plan[f, 1]
            optional = plan[f, 2]
            f += 1
            if optional >= 0:
                if pos >= end:
                    ok = False
                    break
                tag = buf[pos]
                pos += 1
                if tag == 0:
                    continue
                if tag != 2:
                    ok = False
                    break
                present[row, optional] = 1
            if kind == _K_STRING:
                start, length, pos, ok = _c_string(buf, pos, end)
                string_start[row, slot] = start
                string_length[row, slot] = length
            elif kind in (_K_LONG, _K_INT):
                raw, pos, ok = _c_varint(buf, pos, end)
                value = _c_zigzag(raw)
                if kind == _K_INT and (value < -(2**31) or value >= 2**31):
                    ok = False
                longs[row, slot] = value
            elif kind == _K_BOOL:
                if pos >= end or buf[pos] > 1:
                    ok = False
                    break
                flags[row, slot] = buf[pos]
                pos += 1
            else:  # an array or map of strings, in blocks until an empty one
                total = 0
                while ok:
                    raw, pos, ok = _c_varint(buf, pos, end)
                    count = _c_zigzag(raw)
                    if not ok or count == 0:
                        break
                    if count < 0:  # followed by the block's size in bytes
                        count = -count
                        raw, pos, ok = _c_varint(buf, pos, end)
                    if count < 0 or total + count > max_items:
                        ok = False
                        break
                    if item + count > capacity:
                        return row, row_items  # this record again, with more room
                    for _ in range(count):
                        if kind == _K_MAP:
                            start, length, pos, ok = _c_string(buf, pos, end)
                            if not ok:
                                break
                            items[item, 2] = start
                            items[item, 3] = length
                        start, length, pos, ok = _c_string(buf, pos, end)
                        if not ok:
                            break
                        items[item, 0] = slot
                        items[item, 1] = row
                        items[item, 4] = start
                        items[item, 5] = length
                        item += 1
                    total += count
                counts[row, slot] = total
        if ok and pos != end:  # bytes after the record
            ok = False
        if not ok:
            bad[row] = 1
            item = row_items
            for j in range(longs.shape[1]):
                longs[row, j] = 0
            for j in range(flags.shape[1]):
                flags[row, j] = 0
            for j in range(present.shape[1]):
                present[row, j] = 0
            for j in range(string_start.shape[1]):
                string_start[row, j] = 0
                string_length[row, j] = 0
            for j in range(counts.shape[1]):
                counts[row, j] = 0
    return n, item


def _layout_py(buf: Any, start: Any, length: Any, bounds: Any) -> tuple[Any, Any]:
    """The strings ``buf[start:start+length]``, each after its LEB128 length, in one array;
    and where in it each row of ``bounds`` (the first rows of columns laid end to end) starts."""
    n = len(start)
    total = 0
    for i in range(n):
        total += _c_size(length[i])
    out = np.empty(total, np.uint8)
    marks = np.empty(len(bounds), np.int64)
    column = 0
    at = 0
    for i in range(n):
        while column < len(bounds) and bounds[column] == i:
            marks[column] = at
            column += 1
        at = _c_put(out, at, buf, start[i], length[i])
    while column < len(bounds):
        marks[column] = at
        column += 1
    return out, marks


def _put_py(out: Any, at: int, buf: Any, start: int, length: int) -> int:
    """``buf[start:start+length]`` after its LEB128 length at ``out[at]``; the next ``at``."""
    rest = length
    while rest >= 0x80:
        out[at] = (rest & 0x7F) | 0x80
        rest >>= 7
        at += 1
    out[at] = rest
    at += 1
    for j in range(length):
        out[at + j] = buf[start + j]
    return at + length


def _size_py(length: int) -> int:
    """Bytes of a string laid out: its LEB128 length, then itself."""
    size = length + 1
    while length >= 0x80:
        length >>= 7
        size += 1
    return size


def _layout_batch_py(
    buf: Any, string_start: Any, string_length: Any, items: Any, maps: Any
) -> tuple[Any, Any]:
    """Every string column of a decoded batch laid out, one after the other, in one
    array: the plain string fields (``string_start``/``string_length``, a row per
    record), then per array or map field (``maps``: whether it is a map) its keys
    and its values (``items`` as ``_decode_py`` fills it). Returns the array and
    where each column starts in it (and where the last one ends).

    Both passes go record by record (the arrays' row order: column by column
    would read a cache line per value), each column written at its own cursor.
    """
    n, strings = string_start.shape
    first_item = np.empty(len(maps), np.int64)  # each array or map field's first column
    columns = strings
    for k in range(len(maps)):
        first_item[k] = columns
        columns += 2 if maps[k] else 1
    marks = np.zeros(columns + 1, np.int64)
    for row in range(n):
        for slot in range(strings):
            marks[slot + 1] += _c_size(string_length[row, slot])
    for i in range(items.shape[0]):
        column = first_item[items[i, 0]]
        if maps[items[i, 0]]:
            marks[column + 1] += _c_size(items[i, 3])
            column += 1
        marks[column + 1] += _c_size(items[i, 5])
    for column in range(columns):
        marks[column + 1] += marks[column]
    out = np.empty(marks[columns], np.uint8)
    at = marks[:columns].copy()
    for row in range(n):
        for slot in range(strings):
            at[slot] = _c_put(out, at[slot], buf, string_start[row, slot], string_length[row, slot])
    for i in range(items.shape[0]):
        column = first_item[items[i, 0]]
        if maps[items[i, 0]]:
            at[column] = _c_put(out, at[column], buf, items[i, 2], items[i, 3])
            column += 1
        at[column] = _c_put(out, at[column], buf, items[i, 4], items[i, 5])
    return out, marks


# Compiled in dependency order: a compiled function calls compiled ones only.
_c_varint = _jit(_varint_py, inline=True)
_c_zigzag = _jit(_zigzag_py, inline=True)
_c_utf8 = _jit(_utf8_py)
_c_string = _jit(_string_py, inline=True)
_c_decode_records = _jit(_decode_py)
_c_layout = _jit(_layout_py)
_c_put = _jit(_put_py, inline=True)
_c_size = _jit(_size_py, inline=True)
_c_layout_batch = _jit(_layout_batch_py)


def _plan(schema: dict[str, Any]) -> list[tuple[str, int, int, int]] | None:
    """Each field as (name, kind, slot, present slot or -1) for the compiled decoder;
    None when numba is missing or a field is of a type it does not read."""
    if numba is None:
        return None
    slots = {"long": 0, "bool": 0, "string": 0, "items": 0, "present": 0}
    plan = []
    for field_ in schema["fields"]:
        avro_type = field_["type"]
        optional = -1
        if isinstance(avro_type, list):
            if len(avro_type) != 2 or avro_type[0] != "null":
                return None
            optional = slots["present"]
            slots["present"] += 1
            avro_type = avro_type[1]
        kind_name = avro_type["type"] if isinstance(avro_type, dict) else avro_type
        if kind_name in ("array", "map"):
            items = avro_type["items"] if kind_name == "array" else avro_type["values"]
            if items != "string" or optional >= 0:
                return None
            kind, storage = (_K_LIST if kind_name == "array" else _K_MAP), "items"
        elif kind_name in ("int", "long"):
            kind, storage = (_K_INT if kind_name == "int" else _K_LONG), "long"
        elif kind_name == "boolean":
            kind, storage = _K_BOOL, "bool"
        elif kind_name == "string":
            kind, storage = _K_STRING, "string"
        else:
            return None
        plan.append((field_["name"], kind, slots[storage], optional))
        slots[storage] += 1
    return plan


class _Compiled:
    """A schema's plan for ``_c_decode_records``, and the columns made of its arrays."""

    def __init__(self, plan: list[tuple[str, int, int, int]], header: bytes) -> None:
        self.plan = plan
        self.table = np.array([p[1:] for p in plan], dtype=np.int64).reshape(-1, 3)
        self.header = np.frombuffer(header, dtype=np.uint8).copy()

        def count(*kinds: int) -> int:
            return sum(1 for p in plan if p[1] in kinds)

        self.maps = np.array(
            [p[1] == _K_MAP for p in plan if p[1] in (_K_LIST, _K_MAP)], dtype=np.bool_
        )
        self.sizes = (
            count(_K_LONG, _K_INT),
            count(_K_BOOL),
            sum(1 for p in plan if p[3] >= 0),
            count(_K_STRING),
            count(_K_LIST, _K_MAP),
        )

    def decode(
        self, buffer: npt.NDArray[np.uint8], starts: Int64s, ends: Int64s
    ) -> tuple[dict[str, Column], Bools]:
        n = len(starts)
        longs, flags, present, strings, item_fields = self.sizes
        # One row per record, its fields side by side: what the loop writes
        # for one record stays in one or two cache lines.
        long_values = np.zeros((n, longs), dtype=np.int64)
        flag_values = np.zeros((n, flags), dtype=np.uint8)
        present_flags = np.zeros((n, present), dtype=np.uint8)
        string_start = np.zeros((n, strings), dtype=np.int64)
        string_length = np.zeros((n, strings), dtype=np.int64)
        counts = np.zeros((n, item_fields), dtype=np.int64)
        bad = np.zeros(n, dtype=np.uint8)
        # Items of arrays and maps: (field, row, key start, key length, start, length).
        # Room for 8 items a record (only what is written costs: the memory is
        # not touched before); a batch with more goes on in a larger array.
        items = np.empty((8 * n + 64, 6), dtype=np.int64)
        row = used = 0
        while True:
            row, used = _c_decode_records(
                buffer,
                starts,
                ends,
                self.header,
                self.table,
                long_values,
                flag_values,
                present_flags,
                string_start,
                string_length,
                counts,
                bad,
                MAX_ITEMS,
                items,
                row,
                used,
            )
            if row == n:
                break
            items = np.concatenate([items, np.empty_like(items)])  # room for more items
        items = items[:used]
        # Each array or map field's items, in record order: one stable sort
        # by field, then a slice per field (not a pass over all items each).
        by_field = items[np.argsort(items[:, 0], kind="stable")]
        bounds = np.zeros(len(self.maps) + 1, dtype=np.int64)
        np.cumsum(np.bincount(items[:, 0], minlength=len(self.maps)), out=bounds[1:])
        columns: dict[str, Column] = {}
        for name, kind, slot, optional in self.plan:
            column: Column
            if kind == _K_STRING:
                column = StringColumn(string_start[:, slot], string_length[:, slot])
            elif kind in (_K_LONG, _K_INT):
                column = LongColumn(long_values[:, slot])
            elif kind == _K_BOOL:
                column = BoolColumn(flag_values[:, slot])
            else:
                mine = by_field[bounds[slot] : bounds[slot + 1]]
                values = StringColumn(mine[:, 4], mine[:, 5])
                if kind == _K_LIST:
                    column = StringListColumn(counts[:, slot], values)
                else:
                    keys = StringColumn(mine[:, 2], mine[:, 3])
                    column = StringMapColumn(counts[:, slot], keys, values)
            if optional >= 0:
                column = OptionalColumn(present_flags[:, optional].view(np.bool_), column)
            columns[name] = column
        out, marks = _c_layout_batch(buffer, string_start, string_length, items, self.maps)
        for index, strings_ in enumerate(self._laid_out(columns)):
            strings_.data = out[marks[index] : marks[index + 1]]
        return columns, bad.view(np.bool_)

    def _laid_out(self, columns: dict[str, Column]) -> list[StringColumn]:
        """The string columns in the order ``_c_layout_batch`` lays them out."""
        plain: list[StringColumn] = []
        items: list[StringColumn] = []
        for name, kind, _slot, _optional in self.plan:
            column = columns[name]
            inner = column.inner if isinstance(column, OptionalColumn) else column
            if kind == _K_STRING:
                assert isinstance(inner, StringColumn)
                plain.append(inner)
            elif kind == _K_LIST:
                assert isinstance(inner, StringListColumn)
                items.append(inner.items)
            elif kind == _K_MAP:
                assert isinstance(inner, StringMapColumn)
                items += [inner.keys, inner.values]
        return plain + items


def _lay_out_compiled(buffer: npt.NDArray[np.uint8], strings: list[StringColumn]) -> None:
    """``_lay_out`` in one compiled pass over every column (their strings known valid)."""
    if not strings:
        return
    rows = np.fromiter((len(c.length) for c in strings), dtype=np.int64, count=len(strings))
    bounds = np.zeros(len(strings) + 1, dtype=np.int64)
    np.cumsum(rows, out=bounds[1:])
    out, marks = _c_layout(
        buffer,
        np.concatenate([c.start for c in strings]),
        np.concatenate([c.length for c in strings]),
        bounds,
    )
    for index, column in enumerate(strings):
        column.data = out[marks[index] : marks[index + 1]]


@cache
def decoder(name: str) -> ColumnDecoder:
    """The column decoder of a record type's current schema (values in single-object encoding)."""
    current = registry.current(name)
    return ColumnDecoder(current.schema, b"\xc3\x01" + current.fingerprint)
