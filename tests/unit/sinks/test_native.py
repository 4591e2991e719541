"""Native blocks built from columns are, byte for byte, what clickhouse-driver sends for the
rows ``sinks.rows`` builds from the same events: same values, same framing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from clickhouse_driver import Client
from clickhouse_driver.block import ColumnOrientedBlock
from clickhouse_driver.bufferedwriter import BufferedSocketWriter
from clickhouse_driver.connection import Connection
from clickhouse_driver.streams.native import BlockOutputStream
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import registry
from schemas.codecs import decode_clean, decode_dropped, encode_clean, encode_dropped
from schemas.columns import ColumnDecoder, decoder
from schemas.events import clean_event, dropped_event, new_raw_event
from schemas.reasons import DropReason, Stage
from sinks.blocks import Revenue, add_profiles, events_block, suspects
from sinks.ddl import EVENT_COLUMNS
from sinks.native import NativeBlock, NativeColumn, write_block
from sinks.rows import Batch, Decision

T0 = 1_764_288_000_000
# 18.16 speaks a revision with block info but without custom serialization;
# current servers one with both.
REVISIONS = (54_213, 54_470)


class Socket:
    def __init__(self) -> None:
        self.sent = bytearray()

    def sendall(self, data: Any) -> None:
        self.sent += bytes(data)


class ServerInfo:
    def __init__(self, revision: int) -> None:
        self.used_revision = revision

    def get_timezone(self) -> str:
        return "UTC"


class FakeConnection:
    """What ``write_block`` and the driver's ``Connection.send_data`` use of a connection."""

    send_data = Connection.send_data

    def __init__(self, revision: int) -> None:
        client = Client("localhost")  # never connects
        client.make_query_settings(None)
        self.context = client.connection.context
        self.server_info = ServerInfo(revision)
        self.context.server_info = self.server_info
        self.socket = Socket()
        self.fout = BufferedSocketWriter(self.socket, 4096)
        self.block_out = BlockOutputStream(self.fout, self.context)


def sent_by_driver(revision: int, rows: Batch) -> bytes:
    connection = FakeConnection(revision)
    data = [list(column) for column in rows.events.data]
    connection.send_data(ColumnOrientedBlock(list(EVENT_COLUMNS), data))
    return bytes(connection.socket.sent)


def sent_by_us(revision: int, block: NativeBlock) -> bytes:
    connection = FakeConnection(revision)
    write_block(connection, block)
    return bytes(connection.socket.sent)


TEXT = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.text(min_size=60, max_size=200),
    st.just("Zoë ✓ " * 40),
)


@st.composite
def events(draw: Any, decision: Decision) -> dict[str, Any]:
    fields = {
        name: draw(TEXT)
        for name in ("user_id", "email", "display_name", "url", "user_agent", "country")
    }
    raw = new_raw_event(
        project=draw(st.sampled_from(["demo", "shop"])),
        name=draw(st.text(min_size=1, max_size=20)),
        event_id=draw(st.text(min_size=1, max_size=40)),
        timestamp=T0 + draw(st.integers(0, 10**9)),
        received_at=T0,
        kind=draw(st.sampled_from(["track", "identify", "update_user", "delete_user"])),
        properties=draw(st.dictionaries(st.text(max_size=5), st.text(max_size=9), max_size=3)),
        user_properties=draw(
            st.dictionaries(st.sampled_from(["plan", "avatar"]), TEXT.filter(bool))
        ),
        interactive=draw(st.one_of(st.none(), st.booleans())),
        scroll_depth=draw(st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1))),
        engagement_time_ms=draw(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))),
        revenue_amount=draw(
            st.one_of(st.none(), st.decimals(-(10**12), 10**12, places=4).map(str))
        ),
        credential=draw(st.sampled_from(["server", "public"])),
        **{k: v for k, v in fields.items() if v is not None},
    )
    decided_at = T0 + draw(st.integers(0, 10**6))
    if decision is Decision.ACCEPTED:
        return dict(clean_event(raw, normalised_name="x", user_key="u", decided_at=decided_at))
    reason = draw(st.sampled_from([DropReason.BOT, DropReason.DUPLICATE_IDEMPOTENCY_KEY]))
    return dict(
        dropped_event(
            raw, reason=reason, stage=Stage.DEDUP, decided_at=decided_at, detail=draw(st.text())
        )
    )


CODECS = {
    Decision.ACCEPTED: (registry.CLEAN_EVENT, encode_clean, decode_clean),
    Decision.DROPPED: (registry.DROPPED_EVENT, encode_dropped, decode_dropped),
}


@pytest.mark.parametrize("decision", list(Decision))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_an_events_block_is_the_rows_the_driver_would_send(decision: Decision, data: Any) -> None:
    name, encode, decode = CODECS[decision]
    values = [encode(e) for e in data.draw(st.lists(events(decision), min_size=1, max_size=8))]
    batch = decoder(name).decode(values)
    revenue = Revenue(batch)
    odd = suspects(batch, decision, revenue)
    rows = Batch()
    for value, suspect in zip(values, odd.tolist(), strict=True):
        if not suspect:
            rows.add(decode(value), decision)
    keep = ~odd
    batch, revenue = batch.select(keep), revenue.select(keep)
    block = events_block(batch, decision, revenue)
    for revision in REVISIONS:
        assert sent_by_us(revision, block) == sent_by_driver(revision, rows)
    if decision is Decision.ACCEPTED:
        profiles = Batch()
        add_profiles(batch, profiles)
        for table in ("user_updates", "user_properties", "user_deletions"):
            assert getattr(profiles, table)._rows == getattr(rows, table)._rows


def test_records_the_rows_refuse_are_suspects() -> None:
    def value(**change: Any) -> bytes:
        raw = new_raw_event(project="demo", name="x", timestamp=T0, received_at=T0)
        event = dict(clean_event(raw, normalised_name="x", user_key="u", decided_at=T0))
        return encode_clean({**event, **change})

    values = [
        value(),
        value(event_id=""),
        value(event_id="é" * 200),  # 400 bytes, 200 characters: judged one by one
        value(project=""),
        value(timestamp=-1),
        value(decided_at=2**32 * 1000),
        value(revenue_amount="12.5"),
        value(revenue_amount="lots"),
        value(revenue_amount="1e20"),
    ]
    batch = decoder(registry.CLEAN_EVENT).decode(values)
    revenue = Revenue(batch)
    odd = suspects(batch, Decision.ACCEPTED, revenue).tolist()
    assert odd == [False, True, True, True, True, True, False, True, True]
    assert revenue.values[6] == 12_500


@pytest.mark.parametrize("compiled", [True, False])
def test_a_revenue_that_is_not_utf8_makes_a_suspect_not_an_error(compiled: bool) -> None:
    raw = new_raw_event(project="demo", name="x", timestamp=T0, received_at=T0)
    event = dict(clean_event(raw, normalised_name="x", user_key="u", decided_at=T0))
    good = encode_clean({**event, "revenue_amount": "12.5"})
    current = registry.current(registry.CLEAN_EVENT)
    columns = ColumnDecoder(current.schema, b"\xc3\x01" + current.fingerprint, compiled)
    batch = columns.decode([good, good.replace(b"12.5", b"1\xff.5")])
    revenue = Revenue(batch)
    assert suspects(batch, Decision.ACCEPTED, revenue).tolist() == [False, True]


def test_a_dropped_event_without_a_reason_is_a_suspect() -> None:
    raw = new_raw_event(project="demo", name="x", timestamp=T0, received_at=T0)
    event = dict(dropped_event(raw, reason=DropReason.BOT, stage=Stage.BOT, decided_at=T0))
    values = [encode_dropped(event), encode_dropped({**event, "reason": ""})]
    batch = decoder(registry.DROPPED_EVENT).decode(values)
    assert suspects(batch, Decision.DROPPED, Revenue(batch)).tolist() == [False, True]


def test_large_column_bytes_go_to_the_socket_directly_in_order() -> None:
    big = np.frombuffer(b"\x03abc" * 50_000, dtype=np.uint8)
    block = NativeBlock(50_000, (NativeColumn("s", "String", (big,)),))
    connection = FakeConnection(REVISIONS[0])
    python = [["abc"] * 50_000]
    connection.send_data(ColumnOrientedBlock([("s", "String")], python))
    assert sent_by_us(REVISIONS[0], block) == bytes(connection.socket.sent)
