"""Local state stores of the kafka engine: a cache of one changelog partition each.

A store holds one store's partition (``user-state`` partition 3, say) as
bytes under bytes, exactly the changelog's records, plus the changelog
offset it reflects. The engine writes a store only *after* the transaction
that wrote the same records to the changelog has committed, in one atomic
write with that offset, so a store is never ahead of its changelog. After a
crash it may be behind: ``restore`` reads the changelog from the offset after
the recorded one. A store with no offset (new or wiped) restores from the
start.

``MemoryStore`` keeps a dict (unit tests, ``store = "memory"``: restored in
full at every start). ``RocksStore`` keeps one rocksdict ``Rdict`` per store
and partition under ``data_dir``, written with one ``WriteBatch`` per
micro-batch; every ``Rdict`` of a process shares one block cache and has
small write buffers (PITFALLS.md: RocksDB's defaults are per database and
multiply with stores × partitions).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Protocol, cast

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteOptions

OFFSET_KEY = b"\x00changelog-offset"
"""Where a store records the changelog offset it reflects (never a changelog key)."""

Changes = Mapping[bytes, bytes | None]
"""Key -> new value, or None for a deletion (a tombstone in the changelog)."""


class Store(Protocol):
    """One store partition: the changelog's content up to ``offset()``."""

    def get(self, key: bytes) -> bytes | None: ...

    def write(self, changes: Changes, offset: int) -> None:
        """Apply ``changes`` and record ``offset`` (the last changelog record they include)."""
        ...

    def offset(self) -> int | None:
        """The changelog offset this store reflects; None: nothing (restore from the start)."""
        ...

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every key and value (not the recorded offset)."""
        ...

    def close(self) -> None: ...


class MemoryStore:
    """``Store`` in a dict: lost with the process, restored in full from the changelog."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self._offset: int | None = None

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def write(self, changes: Changes, offset: int) -> None:
        data = self.data
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        self._offset = offset

    def offset(self) -> int | None:
        return self._offset

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self.data.items()))

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self.data)


class RocksStore:
    """``Store`` in one RocksDB database (rocksdict, raw bytes), under ``path``.

    The write-ahead log is off: a write is the changelog's content up to an
    offset, recorded in the same atomic batch, so losing the newest writes
    in a crash only means restoring a little more from the changelog.
    """

    def __init__(self, path: Path, options: RocksOptions) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = Rdict(str(path), options.options)
        self._write_options = WriteOptions()
        # A property at run time; rocksdict's stub declares a method of that name.
        self._write_options.disable_wal = True  # type: ignore[method-assign,assignment]
        raw = self.db.get(OFFSET_KEY)
        self._offset: int | None = int(raw) if raw is not None else None
        # Reads go straight to rocksdict (a read per rule and record: no wrapper call).
        self.get: Callable[[bytes], bytes | None] = self.db.get

    def write(self, changes: Changes, offset: int) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(OFFSET_KEY, str(offset).encode())
        self.db.write(batch, self._write_options)
        self._offset = offset

    def offset(self) -> int | None:
        return self._offset

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.db.items():
            if key != OFFSET_KEY:
                yield cast(bytes, key), value  # raw mode: keys are bytes

    def close(self) -> None:
        self.db.close()


class RocksOptions:
    """Options every ``RocksStore`` of a process shares: one block cache, small write buffers."""

    # 64 MiB of block cache for all stores together, and 4 MiB memtables (2
    # per database): a 6-partition worker with two stores stays near 160 MiB
    # instead of RocksDB's default of a 2 GiB-capable cache per database.
    CACHE_BYTES = 64 << 20
    WRITE_BUFFER_BYTES = 4 << 20

    def __init__(self) -> None:
        self.cache = Cache(self.CACHE_BYTES)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(self.WRITE_BUFFER_BYTES)
        options.set_max_write_buffer_number(2)
        table = BlockBasedOptions()
        table.set_block_cache(self.cache)
        # Most reads are of keys that do not exist (a new fingerprint, a first
        # email open): a bloom filter answers them without searching every
        # level-0 file's index (10 bits a key: about 1% false positives).
        table.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table)
        self.options = options


class StoreFactory(Protocol):
    def open(self, store: str, partition: int) -> Store: ...

    def wipe(self) -> None: ...


class MemoryStores:
    """A fresh ``MemoryStore`` per open: nothing survives the process."""

    def open(self, store: str, partition: int) -> Store:
        return MemoryStore()

    def wipe(self) -> None:
        pass


class RocksStores:
    """``RocksStore`` s under ``root``: ``<root>/<store>-<partition>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._options: RocksOptions | None = None

    def open(self, store: str, partition: int) -> Store:
        if self._options is None:
            self._options = RocksOptions()
        return RocksStore(self.root / f"{store}-{partition}", self._options)

    def wipe(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
