"""The kafka engine's state: batch writes coalesced per key, applied only after commit,
expiry in event time that survives a restore, and both local stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.batched import WATERMARK, BatchedState, decode_entry
from streams.instance import claim_instance
from streams.store import MemoryStore, RocksStores, Store

T0 = 1_767_225_600_000


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    opened = RocksStores(tmp_path / "stores").open("user-state", 0)
    yield opened
    opened.close()


def test_writes_stay_in_the_batch_until_committed(store: Store) -> None:
    state = BatchedState(store)
    state.put("k", [[T0, "e1"]], T0 + 10)
    assert state.get("k") == [[T0, "e1"]]  # the batch sees its own write
    assert store.get(b"k") is None  # the store does not, before the commit
    state.committed(41)
    assert decode_entry(store.get(b"k") or b"") == (T0 + 10, [[T0, "e1"]])
    assert store.offset() == 41
    assert state.pending == {}


def test_one_changelog_record_per_key_per_batch(store: Store) -> None:
    state = BatchedState(store)
    for i in range(5):
        state.put("k", [[T0 + i, f"e{i}"]], T0 + i + 10)
    state.put("other", [[T0, "x"]], T0 + 10)
    changes = dict(state.changes())
    assert sorted(changes) == [b"k", b"other"]
    assert decode_entry(changes[b"k"] or b"") == (T0 + 14, [[T0 + 4, "e4"]])


def test_an_aborted_batch_leaves_no_trace(store: Store) -> None:
    state = BatchedState(store)
    state.put("kept", [1], T0 + 100)
    state.committed(1)
    state.put("kept", [2], T0 + 200)
    state.put("new", [3], T0 + 200)
    state.advance(T0 + 150)  # would expire "kept" as committed
    state.discard()
    assert state.get("kept") == [1]
    assert state.get("new") is None
    assert state.watermark() == 0
    assert store.offset() == 1


def test_the_next_batch_reads_the_sealed_one_and_commits_apart(store: Store) -> None:
    state = BatchedState(store)
    state.put("a", [1], T0 + 100)
    sealed = state.seal()  # its transaction commits while the next batch is decided
    assert [key for key, _ in sealed] == [b"a"]
    assert state.get("a") == [1]
    state.put("a", [2], T0 + 200)
    state.put("b", [3], T0 + 200)
    assert state.get("a") == [2]
    state.committed(7)  # the sealed batch only
    assert decode_entry(store.get(b"a") or b"") == (T0 + 100, [1])
    assert store.get(b"b") is None
    assert sorted(k for k, _ in state.seal()) == [b"a", b"b"]
    state.committed(9)
    assert decode_entry(store.get(b"a") or b"") == (T0 + 200, [2])
    assert store.offset() == 9


def test_a_failed_commit_discards_the_batch_decided_meanwhile(store: Store) -> None:
    state = BatchedState(store)
    state.put("a", [1], T0 + 100)
    state.committed(1)
    state.put("a", [2], T0 + 200)
    state.seal()
    state.put("b", [3], T0 + 200)
    state.advance(T0 + 150)  # expires nothing the store holds: "a" was rewritten
    state.discard()
    assert state.get("a") == [1]
    assert state.get("b") is None
    assert state.seal() == []  # nothing left to commit
    assert store.offset() == 1


def test_a_batch_that_changed_nothing_is_not_sealed(store: Store) -> None:
    state = BatchedState(store)
    assert state.seal() == []
    state.put("a", [1], T0 + 100)
    state.seal()
    with pytest.raises(RuntimeError):
        state.seal()


def test_expiry_follows_event_time_and_writes_tombstones(store: Store) -> None:
    state = BatchedState(store)
    state.put("short", [1], T0 + 10)
    state.put("long", [2], T0 + 1_000)
    state.committed(5)
    assert state.advance(T0 + 10) == 0  # exactly at expiry: still there
    assert state.advance(T0 + 11) == 1
    assert dict(state.changes())[b"short"] is None
    state.committed(9)
    assert store.get(b"short") is None
    assert state.get("long") == [2]
    assert state.advance(T0) == 0  # event time going back does not move the watermark


def test_a_rewritten_key_outlives_its_first_expiry(store: Store) -> None:
    state = BatchedState(store)
    state.put("k", [1], T0 + 10)
    state.committed(1)
    state.advance(T0 + 5)  # the expiry index is built from the store here
    state.put("k", [2], T0 + 100)
    assert state.advance(T0 + 50) == 0  # the first expiry is stale: the key was rewritten
    assert state.get("k") == [2]
    state.committed(2)
    assert len(state) == 1
    assert state.advance(T0 + 101) == 1
    assert state.get("k") is None
    assert len(state) == 0


def test_watermark_and_expiry_are_rebuilt_from_the_store_after_a_restore(store: Store) -> None:
    first = BatchedState(store)
    first.put("a", [1], T0 + 10)
    first.put("b", [2], T0 + 50)
    first.advance(T0 + 5)
    first.committed(3)
    assert store.get(WATERMARK) is not None
    again = BatchedState(store)  # what a new assignment sees
    assert again.watermark() == T0 + 5
    assert again.advance(T0 + 20) == 1
    assert again.get("a") is None
    assert again.get("b") == [2]


def test_rocks_store_keeps_its_offset_across_reopen(tmp_path: Path) -> None:
    stores = RocksStores(tmp_path / "s")
    first = stores.open("order-state", 2)
    first.write({b"k": b"v", b"gone": b"x"}, 7)
    first.write({b"gone": None}, 8)
    first.close()
    again = stores.open("order-state", 2)
    try:
        assert again.offset() == 8
        assert dict(again.items()) == {b"k": b"v"}
    finally:
        again.close()
    stores.wipe()
    fresh = stores.open("order-state", 2)
    try:
        assert fresh.offset() is None
        assert dict(fresh.items()) == {}
    finally:
        fresh.close()


def test_instances_beside_each_other_get_distinct_slots_and_ids(tmp_path: Path) -> None:
    first = claim_instance(tmp_path, "app")
    second = claim_instance(tmp_path, "app")
    assert (first.slot, second.slot) == (0, 1)
    assert first.transactional_id != second.transactional_id
    assert first.directory != second.directory
    first.release()
    again = claim_instance(tmp_path, "app")  # a restart takes the freed slot again
    assert again.slot == 0
    assert again.transactional_id == first.transactional_id
    second.release()
    again.release()
