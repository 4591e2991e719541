from streams.eventtime import event_time_ms

RECEIVED = 1_767_225_600_000
TOL = 600_000


def test_client_time_within_tolerance_is_used():
    assert event_time_ms(RECEIVED - TOL, RECEIVED, TOL) == RECEIVED - TOL
    assert event_time_ms(RECEIVED + TOL, RECEIVED, TOL) == RECEIVED + TOL


def test_client_time_one_ms_beyond_tolerance_falls_back_to_received_at():
    assert event_time_ms(RECEIVED - TOL - 1, RECEIVED, TOL) == RECEIVED
    assert event_time_ms(RECEIVED + TOL + 1, RECEIVED, TOL) == RECEIVED


def test_zero_tolerance_always_uses_received_at_unless_equal():
    assert event_time_ms(RECEIVED - 1, RECEIVED, 0) == RECEIVED
    assert event_time_ms(RECEIVED, RECEIVED, 0) == RECEIVED
