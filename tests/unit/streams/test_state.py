from streams.state import ExpiryIndex, InMemoryState


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
