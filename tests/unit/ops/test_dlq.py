"""The pure parts of the DLQ re-drive: plans, filters, repeats, groups, the report."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from eventsieve.config import ProjectSettings, Settings, load_settings
from ops import dlq
from schemas.codecs import decode_raw, encode_clean, encode_raw
from schemas.events import DlqRecord, clean_event, derived_event_id, new_raw_event

ROOT = Path(__file__).resolve().parents[3]
SINKS = frozenset({"events.clean", "events.dropped"})


def settings() -> Settings:
    return load_settings(ROOT / "eventsieve.toml")


def record(
    value: bytes | None,
    *,
    topic: str = "events.raw",
    partition: int = 2,
    offset: int = 41,
    error_type: str = "invalid",
    error: str = "unknown project 'shop'",
    key: bytes | None = b"shop:u1",
    headers: list[tuple[str, bytes | None]] | None = None,
    failed_at: int = 1_700_000_000_000,
) -> DlqRecord:
    return {
        "key": key,
        "value": value,
        "headers": [{"key": k, "value": v} for k, v in headers or []],
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "record_timestamp": 1_700_000_000_000,
        "error_type": error_type,
        "error": error,
        "stage": "validate",
        "failed_at": failed_at,
    }


def entry(r: DlqRecord, offset: int = 7) -> dlq.Entry:
    return dlq.Entry(0, offset, r)


def plan(r: DlqRecord, **kw) -> dlq.Plan:
    return dlq.plan(entry(r), dlq_topic="events.dlq", sink_topics=SINKS, **kw)


JSON_WITHOUT_ID = orjson.dumps({"project": "shop", "name": "Signup", "user_id": "u1"})


def test_json_without_id_gets_the_id_derived_from_its_original_position():
    p = plan(record(JSON_WITHOUT_ID, partition=2, offset=41))

    assert p.action is dlq.Action.REDRIVE
    assert p.topic == "events.raw"
    assert p.key == b"shop:u1"
    assert p.event_id == derived_event_id("events.raw", 2, 41)
    assert p.value is not None
    assert p.value[:1] == b"\xc3"
    event = decode_raw(p.value)
    assert event["event_id"] == p.event_id
    assert (event["project"], event["name"], event["user_id"]) == ("shop", "Signup", "u1")
    # No received_at in the JSON: the original record's timestamp, as the stream does.
    assert event["received_at"] == event["timestamp"] == 1_700_000_000_000


def test_the_id_is_the_same_on_every_redrive_and_differs_by_position():
    first = plan(record(JSON_WITHOUT_ID))
    again = plan(record(JSON_WITHOUT_ID))
    elsewhere = plan(record(JSON_WITHOUT_ID, offset=42))

    assert first.event_id == again.event_id
    assert first.value == again.value
    assert elsewhere.event_id != first.event_id


def test_an_event_with_its_own_id_keeps_it():
    own = orjson.dumps({"event_id": "e-1", "project": "shop", "name": "x", "user_id": "u"})
    avro = encode_raw(new_raw_event(project="shop", name="x", event_id="e-2", user_id="u"))

    assert plan(record(own)).event_id == "e-1"
    assert plan(record(avro)).event_id == "e-2"
    assert decode_raw(plan(record(avro)).value)["event_id"] == "e-2"


def test_still_undecodable_records_are_never_published():
    missing = plan(record(orjson.dumps({"project": "shop"}), error_type="missing_field"))
    garbage = plan(record(b"\xc3\x01\x00\x01\x02", error_type="truncated"))
    tombstone = plan(record(None, error_type="tombstone"))

    assert missing.action is dlq.Action.STILL_FAILING
    assert missing.error_type == "missing_field"
    assert "name" in (missing.error or "")
    assert garbage.action is dlq.Action.STILL_FAILING
    assert garbage.value is None
    assert tombstone.action is dlq.Action.STILL_FAILING
    assert tombstone.error_type == "tombstone"


def test_the_check_can_refuse_a_decodable_event():
    refused = plan(record(JSON_WITHOUT_ID), check=lambda raw: ("invalid", raw["project"]))

    assert refused.action is dlq.Action.STILL_FAILING
    assert (refused.error_type, refused.error) == ("invalid", "shop")


def test_settings_check_follows_the_configured_projects():
    base = settings()
    fixed = base.model_copy(update={"projects": (*base.projects, ProjectSettings(id="shop"))})
    event = decode_raw(JSON_WITHOUT_ID, event_id="e", received_at=1)

    problem = dlq.settings_check(base)(event)
    assert problem is not None
    assert problem[0] == "invalid"
    assert "shop" in problem[1]
    assert dlq.settings_check(fixed)(event) is None
    assert event["visitor_id"] is None  # the check works on a copy


def test_sink_records_are_republished_byte_for_byte():
    raw = new_raw_event(project="demo", name="x", event_id="e-9", user_id="u")
    value = encode_clean(
        clean_event(
            raw,
            normalised_name="x",
            user_key="u",
            decided_at=1,
            fingerprint="f",
            checks=[],
            source_topic="events.raw",
            source_partition=0,
            source_offset=1,
        )
    )
    p = plan(record(value, topic="events.clean", error_type="clickhouse_rejected"))

    assert p.action is dlq.Action.REDRIVE
    assert (p.topic, p.value, p.key) == ("events.clean", value, b"shop:u1")
    assert p.identity
    assert p.identity.startswith("sha256:")


def test_headers_are_kept_and_the_redrive_is_marked_once():
    r = record(
        JSON_WITHOUT_ID,
        headers=[("trace", b"t1"), (dlq.REDRIVE_HEADER, b"events.dlq/0/1")],
    )
    p = dlq.plan(dlq.Entry(3, 99, r), dlq_topic="events.dlq", sink_topics=SINKS)

    assert p.headers == (("trace", b"t1"), (dlq.REDRIVE_HEADER, b"events.dlq/3/99"))


@pytest.mark.parametrize(
    ("sources", "errors", "selected"),
    [
        ((), (), True),
        (("events.raw",), (), True),
        (("events.clean",), (), False),
        ((), ("invalid",), True),
        ((), ("missing_field", "wrong_type"), False),
        (("events.raw",), ("wrong_type",), False),
    ],
)
def test_filters(sources, errors, selected):
    r = record(JSON_WITHOUT_ID)
    assert dlq.matches(r, sources, errors) is selected
    action = plan(r, sources=sources, errors=errors).action
    assert (action is dlq.Action.REDRIVE) is selected
    assert (action is dlq.Action.FILTERED) is not selected


def test_an_event_is_redriven_once_per_run():
    seen: set[str] = set()
    a, b = plan(record(JSON_WITHOUT_ID)), plan(record(JSON_WITHOUT_ID))
    other = plan(record(JSON_WITHOUT_ID, offset=5))

    first = dlq.drop_repeats([a, other], seen)
    second = dlq.drop_repeats([b], seen)

    assert [p.action for p in first] == [dlq.Action.REDRIVE, dlq.Action.REDRIVE]
    assert [p.action for p in second] == [dlq.Action.REPEAT]


def test_group_ids_by_filter():
    assert dlq.group_id_for("g", (), ()) == "g"
    a = dlq.group_id_for("g", ("events.raw",), ("invalid",))
    assert a.startswith("g.")
    assert a != "g"
    assert a == dlq.group_id_for("g", ("events.raw",), ("invalid",))
    assert a != dlq.group_id_for("g", ("events.raw",), ())
    assert a != dlq.group_id_for("g", (), ("invalid",))
    # A source and an error of the same text are different filters.
    assert dlq.group_id_for("g", ("x",), ()) != dlq.group_id_for("g", (), ("x",))


def test_summarise_groups_by_topic_and_error_with_distinct_examples():
    records = [
        record(b"{}", error="m1", failed_at=5),
        record(b"{}", error="m1", failed_at=3),
        record(b"{}", error="m2", failed_at=9),
        record(b"{}", error_type="missing_field", error="n", failed_at=1),
        record(b"{}", topic="events.clean", error_type="x", error="c"),
        record(b"{}", error="m3"),
        record(b"{}", error="m4"),
    ]
    groups = dlq.summarise(records, examples=3)

    assert [(g.topic, g.error_type, g.count) for g in groups] == [
        ("events.raw", "invalid", 5),
        ("events.clean", "x", 1),
        ("events.raw", "missing_field", 1),
    ]
    assert groups[0].examples == ["m1", "m2", "m3"]
    assert (groups[0].first_failed_at, groups[0].last_failed_at) == (3, 1_700_000_000_000)


def test_report_counts_every_action():
    seen: set[str] = set()
    plans = dlq.drop_repeats(
        [
            plan(record(JSON_WITHOUT_ID)),
            plan(record(JSON_WITHOUT_ID)),
            plan(record(b"nope", error_type="not_json")),
            plan(record(JSON_WITHOUT_ID, offset=1), errors=("other",)),
        ],
        seen,
    )
    report = dlq.Report()
    report.add(plans, keep_samples=5)

    assert report.read == 4
    assert report.redriven == {("events.raw", "invalid"): 1}
    assert (report.repeats, report.filtered, report.still_failing_total) == (1, 1, 1)
    assert report.still_failing[0].error_type == "not_json"
    assert len(report.samples) == 1
    doc = report.as_dict()
    assert doc["redriven"] == 1
    assert doc["still_failing_by"][0]["count"] == 1


def test_span_counts_what_is_left():
    span = dlq.Span(starts={0: 5, 1: 0, 2: 9}, ends={0: 10, 1: 0, 2: 9})
    assert span.pending == 5
