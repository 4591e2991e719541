from streams.state import ExpiryIndex, InMemoryState
from streams.tables import TableState


def test_put_get_and_missing():
    state = InMemoryState()
    assert state.get("k") is None
    state.put("k", [[1, "a"]], expires_at=10)
    assert state.get("k") == [[1, "a"]]


def test_advance_forgets_only_entries_expired_before_now():
    state = InMemoryState()
    state.put("a", [1], expires_at=10)
    state.put("b", [2], expires_at=20)
    assert state.advance(10) == 0  # expires_at == now: still kept
    assert state.advance(11) == 1
    assert state.get("a") is None
    assert state.get("b") == [2]


def test_rewritten_key_keeps_its_later_expiry():
    state = InMemoryState()
    state.put("a", [1], expires_at=10)
    state.put("a", [2], expires_at=30)
    assert state.advance(20) == 0  # the stale heap entry (10) is skipped
    assert state.get("a") == [2]
    assert state.advance(31) == 1
    assert len(state) == 0


def test_expiry_index_pops_in_order():
    index = ExpiryIndex()
    for t, k in [(5, "c"), (1, "a"), (3, "b")]:
        index.push(t, k)
    assert index.pop_expired(4) == [(1, "a"), (3, "b")]
    assert len(index) == 1


def test_a_faust_table_forgets_only_what_committed_records_expired():
    """The watermark a record raises deletes nothing until that record's offset is committed."""
    state = TableState({}).at(0)
    state.put("a", [1], expires_at=10)
    state.put("b", [2], expires_at=20)
    state.advance(15, "raw-0", offset=7)  # expires "a" once offset 7 is committed
    assert state.expire("raw-0", committed=7) == 0
    assert state.get("a") == [1]
    state.advance(25, "raw-0", offset=8)
    assert state.expire("raw-0", committed=8) == 1  # offset 7 committed: its watermark, 15
    assert state.get("a") is None
    assert state.get("b") == [2]
    assert state.expire("raw-1", committed=100) == 0  # another source's commit releases nothing
    assert state.expire("raw-0", committed=9) == 1
    assert state.get("b") is None
