"""``eventsieve replay`` against the real broker, the real ClickHouse and the real worker and sink.

Each test lets the live pipeline (worker + sink subprocesses) decide a
synthetic mix first, then replays a middle range of event time and checks
ClickHouse's latest decision of every event:

(a) same rules → nothing changes, yet every in-range row was rewritten;
(b) a new shield → exactly the affected in-range events move, equal to a
    fresh run with the new rules; events outside the range keep theirs;
(c) a replay stopped mid-way and resumed → the same result as (b);
(d) live traffic published while the replay runs → neither lost nor doubled.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from eventsieve.config import Settings, settings_environment
from eventsieve.services import kafka_bootstrap
from ops.pipeline import eventsieve_argv
from ops.replay import ReplayInterrupted, ReplayOptions, load_checkpoint, run_replay
from sinks.errors import ClickHouseUnavailableError
from sinks.queries import event_count
from sinks.service import connect
from streams.replay import ReplayRange, changes
from streams.synthetic import synthetic_events

EVENTS = 600
BLOCKED = "198.51.100.0/28"  # 16 of the mix's 256 client addresses


def middle_range(events) -> ReplayRange:
    """Seconds from about a third to about two thirds of the mix's event times."""
    seconds = sorted(e["timestamp"] // 1000 for e in events)
    return ReplayRange(seconds[len(seconds) // 3], seconds[2 * len(seconds) // 3])


def landed(settings: Settings, kit, pipeline, want: int) -> dict[str, str]:
    """Wait until ClickHouse holds ``want`` distinct events; their latest decisions."""

    def enough() -> bool:
        ch = connect(settings)
        try:
            return event_count(ch) >= want
        except ClickHouseUnavailableError:  # the sink has not created the table yet
            return False
        finally:
            ch.close()

    kit.wait_until(enough, f"{want} events in ClickHouse", pipeline)
    return kit.latest(settings)


def replayed(settings: Settings, kit, pipeline, span: ReplayRange, decided_at: int, n: int):
    """Wait until ``n`` in-range events show the replay's decision; all latest decisions."""
    ch = connect(settings)
    sql = f"""
SELECT count() FROM (
  SELECT event_id, argMax(decided_at_ms, version) AS d FROM `{ch.database}`.events
  WHERE event_time >= toDateTime({span.start_s}) AND event_time < toDateTime({span.end_s})
  GROUP BY event_id) WHERE d = {decided_at}"""
    try:
        kit.wait_until(lambda: ch.scalar(sql) == n, f"{n} replayed decisions", pipeline)
    finally:
        ch.close()
    return kit.latest(settings)


def iso(seconds: int | None) -> str:
    assert seconds is not None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()


def with_shield(settings: Settings) -> Settings:
    """The same settings with an IP blocklist on the demo project: the "changed rule"."""
    projects = tuple(
        p.model_copy(update={"shields": p.shields.model_copy(update={"ip_blocklist": (BLOCKED,)})})
        if p.id == "demo"
        else p
        for p in settings.projects
    )
    return settings.model_copy(update={"projects": projects})


def in_span(span: ReplayRange, events) -> set[str]:
    return {e["event_id"] for e in events if span.contains(e["project"], e["timestamp"])}


def end_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap(settings), "group.id": "offsets"})
    try:
        out = {}
        for topic in (settings.topics.clean, settings.topics.dropped):
            for p in range(settings.topics.partitions):
                out[(topic, p)] = consumer.get_watermark_offsets(TopicPartition(topic, p))[1]
        return out
    finally:
        consumer.close()


def test_a_replay_with_unchanged_rules_leaves_clickhouse_unchanged(
    live_settings, pipeline, kit, tmp_path: Path
):
    events = list(synthetic_events(EVENTS, seed=7))
    kit.Topic(live_settings).publish(events)
    before = landed(live_settings, kit, pipeline, EVENTS)
    span = middle_range(events)

    report = run_replay(live_settings, ReplayOptions(span=span, state_dir=tmp_path / "replay"))

    inside = in_span(span, events)
    assert report.counts.in_range == len(inside) == report.produced
    assert 100 < len(inside) < EVENTS - 100
    assert report.changes == []
    after = replayed(live_settings, kit, pipeline, span, report.decided_at, len(inside))
    assert after == before
    assert len(after) == EVENTS


def test_a_changed_rule_moves_exactly_the_affected_events_like_a_fresh_run(
    live_settings, pipeline, kit, tmp_path: Path
):
    events = list(synthetic_events(EVENTS, seed=8))
    records = kit.Topic(live_settings).publish(events)
    before = landed(live_settings, kit, pipeline, EVENTS)
    assert before == kit.fresh_run(live_settings, records)  # the live worker, as a fresh run
    new_rules = with_shield(live_settings)
    span = middle_range(events)
    inside = in_span(span, events)
    fresh = kit.fresh_run(new_rules, records)
    want = {i: (fresh[i] if i in inside else before[i]) for i in before}
    moved = {i for i in want if want[i] != before[i]}
    assert any(want[i] == "dropped:site_ip_blocklist" for i in moved)
    assert moved <= inside

    # The dry run, through the CLI: prints the moves, produces nothing.
    offsets = end_offsets(live_settings)
    dry = subprocess.run(
        [
            *eventsieve_argv(None, "replay"),
            "--dry-run",
            *("--from", iso(span.start_s)),
            *("--to", iso(span.end_s)),
        ],
        env={**os.environ, **settings_environment(new_rules), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    expected = changes(before, {i: want[i] for i in inside})
    assert sum(n for _, _, n in expected) == len(moved)
    for old, new, n in expected:
        assert re.search(rf"^  {old} → {new} +{n:,}$", dry.stdout, re.M), dry.stdout
    assert f"{len(moved):,} decision(s) would change" in dry.stdout, dry.stdout
    assert end_offsets(live_settings) == offsets
    assert kit.latest(live_settings) == before

    report = run_replay(new_rules, ReplayOptions(span=span, state_dir=tmp_path / "replay"))

    assert report.changed == len(moved)
    after = replayed(live_settings, kit, pipeline, span, report.decided_at, len(inside))
    assert after == want
    assert {i for i in after if after[i] != before[i]} == moved


def test_an_interrupted_replay_resumes_to_the_same_result(
    live_settings, pipeline, kit, tmp_path: Path
):
    events = list(synthetic_events(EVENTS, seed=9))
    records = kit.Topic(live_settings).publish(events)
    before = landed(live_settings, kit, pipeline, EVENTS)
    new_rules = with_shield(live_settings)
    span = middle_range(events)
    inside = in_span(span, events)
    fresh = kit.fresh_run(new_rules, records)
    want = {i: (fresh[i] if i in inside else before[i]) for i in before}
    assert want != before
    state_dir = tmp_path / "replay"
    half = len(inside) // 2

    def options(**kw) -> ReplayOptions:
        return ReplayOptions(span=span, state_dir=state_dir, checkpoint_every=40, **kw)

    try:
        run_replay(new_rules, options(stop_after=half))
        raise AssertionError("the replay was not stopped")
    except ReplayInterrupted:
        pass
    [path] = state_dir.glob("replay-*.json")
    stopped = load_checkpoint(path)
    assert stopped is not None
    assert not stopped.done
    # The checkpoint lags what was produced: the resume produces some again.
    assert 0 < stopped.acked < half

    report = run_replay(new_rules, options())

    assert report.resumed
    assert report.decided_at == stopped.decided_at
    assert report.skipped == stopped.acked
    assert report.produced == len(inside) - stopped.acked
    done = load_checkpoint(path)
    assert done is not None
    assert done.done
    after = replayed(live_settings, kit, pipeline, span, report.decided_at, len(inside))
    assert after == want


def test_live_traffic_during_a_replay_is_neither_lost_nor_doubled(
    live_settings, pipeline, kit, tmp_path: Path
):
    topic = kit.Topic(live_settings)
    events = list(synthetic_events(EVENTS, seed=10))
    topic.publish(events)
    before = landed(live_settings, kit, pipeline, EVENTS)
    span = middle_range(events)
    # Later traffic of the same users (an hour on: outside the range and its windows).
    live = [
        {**e, "timestamp": e["timestamp"] + 3_600_000, "received_at": e["received_at"] + 3_600_000}
        for e in synthetic_events(300, seed=11)
    ]
    published: list[int] = []

    def publish_midway(done: int, total: int) -> None:
        if not published and done >= total // 2:
            published.append(len(topic.publish(live)))

    report = run_replay(
        live_settings,
        ReplayOptions(span=span, state_dir=tmp_path / "replay", progress=publish_midway),
    )

    assert published == [len(live)]
    assert report.counts.records == EVENTS  # the snapshot: live records are the worker's
    replayed(live_settings, kit, pipeline, span, report.decided_at, len(in_span(span, events)))
    after = landed(live_settings, kit, pipeline, EVENTS + len(live))
    assert len(after) == EVENTS + len(live)
    assert {i: after[i] for i in before} == before
    assert after == kit.fresh_run(live_settings, topic.records)
    ch = connect(live_settings)
    try:
        accepted, dropped = ch.execute(
            "SELECT countIf(d = 'accepted'), countIf(d = 'dropped') FROM "
            f"(SELECT event_id, toString(argMax(decision, version)) AS d "
            f"FROM `{ch.database}`.events GROUP BY event_id)"
        )[0]
    finally:
        ch.close()
    assert accepted + dropped == EVENTS + len(live)
