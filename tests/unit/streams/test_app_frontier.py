"""The per-partition frontier: records are decided in offset order, never past a hole."""

from __future__ import annotations

from streams.app import Admit, _Frontier


def test_decides_in_order_and_skips_redeliveries():
    f = _Frontier(10, 10, 10)
    assert [f.admit(o) for o in (10, 11, 10, 11, 12)] == [
        Admit.DECIDE,
        Admit.DECIDE,
        Admit.SKIP,
        Admit.SKIP,
        Admit.DECIDE,
    ]
    assert f.next == 13
    assert f.committable == 10  # moves only when outputs are acknowledged


def test_a_record_after_a_hole_waits_for_the_hole():
    f = _Frontier(71, 71, 71)
    assert f.admit(72) is Admit.HOLE
    assert f.admit(73) is Admit.HOLE
    assert f.next == 71
    assert f.admit(71) is Admit.DECIDE
    assert f.admit(72) is Admit.DECIDE


def test_offsets_the_broker_confirmed_empty_are_stepped_over():
    f = _Frontier(5, 5, 5)
    assert f.admit(7) is Admit.HOLE
    # The broker, read to the end: records at 7 and 9 only (markers at 5, 6, 8, 10).
    f.empty.update({5, 6, 8, 10})
    assert f.admit(9) is Admit.HOLE  # 7 lies between, not decided yet
    assert f.admit(7) is Admit.DECIDE
    assert f.admit(9) is Admit.DECIDE  # over the marker at 8, with no second question
    assert f.empty == {10}  # what lies behind is forgotten
    assert f.admit(12) is Admit.HOLE  # 11 is not known to be empty
