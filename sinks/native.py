"""ClickHouse Native blocks made of column arrays, written on clickhouse-driver's connection.

clickhouse-driver serialises the values of an insert one by one in Python
(every string encoded and copied on its own): about 350 ns a value on the
reference machine, fifty columns a row. The sink's columns are arrays
already in the Native layout (``schemas.columns`` lays strings out
length-prefixed; numbers are fixed width), so a block is written as it is:
the driver's own framing (packet type, block info, column names and types)
around the column bytes, which go to the socket without a copy. Everything
else stays the driver's: the connection, the query and its settings, the
table's sample block, the server's answers and errors (see
``sinks.clickhouse``).

The framing mirrors ``Connection.send_data`` and ``BlockOutputStream.write``
of clickhouse-driver 0.2.x; a unit test checks that a block written here is
byte for byte what the driver writes for the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from clickhouse_driver import defines
from clickhouse_driver.block import BlockInfo
from clickhouse_driver.protocol import ClientPacketTypes
from clickhouse_driver.streams.native import BlockOutputStream
from clickhouse_driver.varint import write_varint
from clickhouse_driver.writer import write_binary_str, write_binary_uint8

from schemas.columns import StringColumn

# Column bytes at least this large go to the socket directly (after the
# driver's buffer is flushed); smaller ones are copied into that buffer.
_DIRECT_BYTES = 64 * 1024

Part = bytes | npt.NDArray[Any]


@dataclass(frozen=True)
class NativeColumn:
    """One column of a block: its name, ClickHouse type and serialised bytes (in parts)."""

    name: str
    type: str
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class NativeBlock:
    """Rows given column by column in the Native format, ready to send."""

    rows: int
    columns: tuple[NativeColumn, ...]

    @property
    def columns_with_types(self) -> list[tuple[str, str]]:
        return [(c.name, c.type) for c in self.columns]

    @property
    def nbytes(self) -> int:
        return sum(_size(p) for c in self.columns for p in c.parts)


def strings(name: str, column: StringColumn, ch_type: str = "String") -> NativeColumn:
    """A ``String`` column: the strings as laid out by ``schemas.columns`` (length-prefixed)."""
    return NativeColumn(name, ch_type, (column.data,))


def empty_strings(name: str, rows: int) -> NativeColumn:
    """A ``String`` column of ``rows`` empty strings (a zero length each)."""
    return NativeColumn(name, "String", (np.zeros(rows, dtype=np.uint8),))


def numbers(name: str, ch_type: str, values: npt.NDArray[Any], dtype: str) -> NativeColumn:
    """A fixed-width column (integers, ``DateTime``, ``Enum8``, ``Decimal``) of ``dtype``."""
    return NativeColumn(name, ch_type, (np.ascontiguousarray(values, dtype=dtype),))


def nullable(
    name: str, inner: str, present: npt.NDArray[np.bool_], values: npt.NDArray[Any], dtype: str
) -> NativeColumn:
    """A ``Nullable`` fixed-width column: the null map (1 = NULL), then every row's value."""
    nulls = np.logical_not(present).view(np.uint8)
    values = np.where(present, values, 0).astype(dtype)
    return NativeColumn(name, f"Nullable({inner})", (nulls, values))


def string_arrays(name: str, counts: npt.NDArray[np.int64], items: StringColumn) -> NativeColumn:
    """An ``Array(String)`` column: each row's end offset (UInt64), then all items."""
    offsets = np.cumsum(counts, dtype=np.uint64).astype("<u8", copy=False)
    return NativeColumn(name, "Array(String)", (offsets, items.data))


def write_block(connection: Any, block: NativeBlock) -> None:
    """Send ``block`` as a Data packet of the insert in progress on ``connection``."""
    revision = connection.server_info.used_revision
    write_varint(ClientPacketTypes.DATA, connection.fout)
    if revision >= defines.DBMS_MIN_REVISION_WITH_TEMPORARY_TABLES:
        write_binary_str("", connection.fout)  # the table: '' for the query's own data
    stream = connection.block_out
    out = stream.fout
    # Column bytes skip the driver's buffer only on a plain (uncompressed)
    # stream, whose buffer is the socket's: a compressed one must see them.
    direct = type(stream) is BlockOutputStream and out is connection.fout
    if revision >= defines.DBMS_MIN_REVISION_WITH_BLOCK_INFO:
        BlockInfo().write(out)
    write_varint(len(block.columns), out)
    write_varint(block.rows, out)
    for column in block.columns:
        write_binary_str(column.name, out)
        write_binary_str(column.type, out)
        if revision >= defines.DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION:
            write_binary_uint8(0, out)  # no custom serialization, as the driver sends
        for part in column.parts:
            _write(connection, out, part, direct)
    stream.finalize()


def _write(connection: Any, out: Any, part: Part, direct: bool) -> None:
    if isinstance(part, bytes):
        out.write(part)
        return
    if direct and part.nbytes >= _DIRECT_BYTES:
        out.flush()
        connection.socket.sendall(np.ascontiguousarray(part).data.cast("B"))
        return
    out.write(np.ascontiguousarray(part).tobytes())  # the driver's buffer takes bytes only


def _size(part: Part) -> int:
    return len(part) if isinstance(part, bytes) else int(part.nbytes)


def concat(blocks: Sequence[NativeBlock]) -> list[NativeBlock]:
    """``blocks`` without the empty ones (a block of no rows is never sent)."""
    return [b for b in blocks if b.rows]
