"""Thin adapter over clickhouse-driver: columnar inserts and queries, our errors.

Every failure to talk to the server (refused connection, timeout, a server
exception such as "too many parts" or "table is read-only") becomes
``ClickHouseUnavailableError``, which the writer answers with backoff and
retry: a batch is never skipped, because skipping is losing. An insert whose
*data* is refused (the server's parse, type and range errors, or a value
the driver cannot serialize for the column) is ``ClickHouseRejectedError``:
retrying it would never end, so the writer isolates the rejected records
and parks them in the DLQ.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from typing import Any

from clickhouse_driver import Client
from clickhouse_driver.block import ColumnOrientedBlock
from clickhouse_driver.errors import Error as DriverError
from clickhouse_driver.errors import ServerException, TypeMismatchError

from sinks.ddl import ServerFeatures, quote_identifier
from sinks.errors import (
    ClickHouseRejectedError,
    ClickHouseUnavailableError,
    ColumnsMismatchError,
)
from sinks.native import NativeBlock, write_block

_TRANSPORT_ERRORS = (DriverError, OSError, EOFError, socket.timeout)
# Server error codes that mean "this data can never be inserted" (ClickHouse's
# ErrorCodes): parse failures, type mismatches, values out of range, a NULL in
# a non-Nullable column, decimal overflow, a string too large. Everything else
# (too many parts, memory, timeouts, read-only tables) is worth retrying.
REJECTING_CODES = frozenset({6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 321, 349, 407})
# What the driver raises when a Python value does not fit the column's type.
_SERIALIZATION_ERRORS = (struct.error, OverflowError, ValueError, TypeError, AttributeError)


class _Blocks(tuple[Any, ...]):
    """The data of an insert of Native blocks (and, last, a block of Python columns).

    A tuple, so that ``Client.execute`` treats the query as an insert.
    """

    blocks: list[NativeBlock]
    python: Sequence[list[Any]] | None

    def __new__(cls, blocks: Sequence[NativeBlock], python: Sequence[list[Any]] | None) -> _Blocks:
        data = super().__new__(cls, ())
        data.blocks = list(blocks)
        data.python = python
        return data


class _Client(Client):  # type: ignore[misc]
    """clickhouse-driver's client, able to send ready Native blocks as an insert's data."""

    def send_data(
        self, sample_block: Any, data: Any, types_check: bool = False, columnar: bool = False
    ) -> int:
        if not isinstance(data, _Blocks):
            return int(super().send_data(sample_block, data, types_check, columnar))
        wanted = data.blocks[0].columns_with_types
        if list(map(tuple, sample_block.columns_with_types)) != wanted:
            # The table's columns are not what the blocks were made for (a column
            # changed by hand, say): nothing is sent, the caller writes rows instead.
            raise ColumnsMismatchError(list(sample_block.columns_with_types), wanted)
        rows = 0
        for block in data.blocks:
            write_block(self.connection, block)
            rows += block.rows
            self.receive_profile_events()
        if data.python:
            extra = ColumnOrientedBlock(sample_block.columns_with_types, list(data.python))
            self.connection.send_data(extra)
            rows += extra.num_rows
            self.receive_profile_events()
        self.connection.send_data(ColumnOrientedBlock())  # an empty block ends the data
        self.receive_profile_events()
        return rows


class ClickHouse:
    """One connection used for one database (clickhouse-driver connects lazily, reconnects).

    ``url`` should name a database that exists (e.g. ``default``): statements
    name ``database`` explicitly, so the migrations can create it.
    """

    def __init__(self, url: str, database: str, connect_timeout: float = 3.0) -> None:
        self.url = url
        self.database = database
        # send_receive_timeout bounds a hung server. An insert of 50k rows
        # usually takes about a second, but one that creates many partitions on
        # a loaded old server took over 30 s here, and a timed-out insert is
        # retried whole; 120 s stays well inside Kafka's 300 s poll interval.
        sep = "&" if "?" in url else "?"
        self.client = _Client.from_url(
            f"{url}{sep}connect_timeout={connect_timeout}&send_receive_timeout=120"
        )
        self._features: ServerFeatures | None = None

    def features(self) -> ServerFeatures:
        """What the server supports (asked once per connection object)."""
        if self._features is None:
            self._features = ServerFeatures.parse(str(self.scalar("SELECT version()")))
        return self._features

    def execute(self, sql: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        try:
            return self.client.execute(sql, params, **kwargs)
        except _TRANSPORT_ERRORS as exc:
            self.client.disconnect()
            raise ClickHouseUnavailableError(f"ClickHouse: {_first_line(exc)}") from exc

    def scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None

    def insert_columns(
        self,
        table: str,
        names: Sequence[str],
        columns: Sequence[list[Any]],
        token: str | None = None,
    ) -> int:
        """Insert one block given column by column; returns the rows sent.

        ``token`` becomes ``insert_deduplication_token`` on servers that know it
        (see ``ServerFeatures.insert_settings``).
        """
        if not columns or not columns[0]:
            return 0
        self._insert(table, names, list(columns), token)
        return len(columns[0])

    def insert_blocks(
        self,
        table: str,
        blocks: Sequence[NativeBlock],
        token: str | None = None,
        python: Sequence[list[Any]] | None = None,
    ) -> int:
        """Insert Native blocks (``sinks.native``) as one insert; returns the rows sent.

        ``python`` (columns of Python values, in the blocks' column order) is
        sent last in the same insert, serialised by the driver. Raises
        ``ColumnsMismatchError`` (having sent nothing) when the table's columns
        are not the blocks' names and types.
        """
        blocks = [b for b in blocks if b.rows]
        if not blocks:
            return 0
        names = [name for name, _ in blocks[0].columns_with_types]
        if python is not None and not python[0]:
            python = None
        self._insert(table, names, _Blocks(blocks, python), token)
        return sum(b.rows for b in blocks) + (len(python[0]) if python else 0)

    def _insert(self, table: str, names: Sequence[str], data: Any, token: str | None) -> None:
        settings = self.features().insert_settings(token)
        column_list = ", ".join(quote_identifier(n) for n in names)
        sql = (
            f"INSERT INTO {quote_identifier(self.database)}.{quote_identifier(table)} "
            f"({column_list}) VALUES"
        )
        try:
            self.client.execute(sql, data, columnar=True, settings=settings)
        except ColumnsMismatchError:
            self.client.disconnect()
            raise
        except ServerException as exc:
            self.client.disconnect()
            message = f"insert into {table}: {_first_line(exc)}"
            if exc.code in REJECTING_CODES:
                raise ClickHouseRejectedError(exc.code, message) from exc
            raise ClickHouseUnavailableError(message) from exc
        except TypeMismatchError as exc:
            self.client.disconnect()
            raise ClickHouseRejectedError(53, f"insert into {table}: {_first_line(exc)}") from exc
        except _TRANSPORT_ERRORS as exc:
            self.client.disconnect()
            raise ClickHouseUnavailableError(f"insert into {table}: {_first_line(exc)}") from exc
        except _SERIALIZATION_ERRORS as exc:
            # Half a block may have been sent: the connection is not reusable.
            self.client.disconnect()
            message = f"insert into {table}: {type(exc).__name__}: {_first_line(exc)}"
            raise ClickHouseRejectedError(0, message) from exc

    def ping(self) -> bool:
        """Whether the server answers a trivial query now (used while it is down)."""
        try:
            self.execute("SELECT 1")
        except ClickHouseUnavailableError:
            return False
        return True

    def close(self) -> None:
        self.client.disconnect()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
