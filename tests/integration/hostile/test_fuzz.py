"""Generated hostile input against the real endpoint and the real stream: nothing stops them.

HTTP: every ingest route (``producers.apis.ALL_ROUTES``) gets generated
bodies (random bytes, truncated or garbled JSON, wrong types in every field,
huge strings and numbers, deep nesting, control characters, NUL bytes),
random headers and query strings, with valid credentials most of the time so
the parsers behind authentication are reached. No answer is a 5xx or carries
Python exception text, every refusal is in the route's documented error
shape, and afterwards the endpoint answers ``/healthz`` and publishes one
valid marker event per route.

Kafka: generated records (random bytes, Avro or JSON RawEvents with hostile
field values) published straight to ``events.raw`` of a private pipeline
(stream worker and sink processes, real Kafka and ClickHouse). Neither
process exits or stalls, every record is decided (clean, dropped or DLQ) and
every decided event is in ClickHouse or parked in the DLQ, and marker events
published after the garbage land in ClickHouse.

Examples are bounded so the module stays within a few minutes on the 2-core
box; Hypothesis prints the failing input (and ``@reproduce_failure``) when a
check breaks.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st

from eventsieve.config import Settings
from eventsieve.services import kafka_bootstrap
from producers.apis import ALL_ROUTES, Route
from producers.apis.base import ParseContext
from producers.model import HttpRequest
from producers.projects import ProjectDirectory
from schemas.canonical import topic_key
from schemas.codecs import decode_clean, decode_dlq, decode_dropped, decode_raw, encode_raw
from schemas.events import derived_event_id, new_raw_event
from schemas.reasons import Source
from sinks.errors import ClickHouseUnavailableError
from sinks.service import connect
from streams.partitioning import partition_for

pytestmark = [
    pytest.mark.timeout(300),
    # Hypothesis warns when it prints a generated megabyte; that is the point here.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning"),
]

FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the work tree
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

HTTP_FUZZ = settings(FUZZ, max_examples=120)  # about 2 s a route
RAW_FUZZ = settings(FUZZ, max_examples=60)  # about 150 records, 20 s an engine

# ---------------------------------------------------------------------------
# Routes: credentials and a valid marker body for each


@dataclass(frozen=True)
class Shape:
    """How a route is called validly: credential headers/query and a body."""

    headers: dict[str, str]
    params: dict[str, str]
    body: Any  # a JSON value, or None for no body


NATIVE = {"Authorization": "Bearer demo-public-token"}
SERVER = {"Authorization": "Bearer demo-secret-key"}
VEMETRIC = {"Token": "demo-public-token", "Origin": "https://example.com"}
VERO = {"auth_token": "demo-vero-token"}
VTCDN = {"Authorization": "demo-vtcdn-key"}


def valid_call(route: Route, mark: str) -> Shape:
    """A valid request of ``route`` whose event (if any) carries ``mark``."""
    path, source = route.path, route.source
    if source is Source.NATIVE:
        return Shape(NATIVE, {}, {"name": mark, "properties": {"m": mark}})
    if source is Source.VEMETRIC:
        bodies = {
            "/e": {"name": mark, "url": f"https://example.com/{mark}"},
            "/i": {"identifier": mark, "displayName": mark},
            "/u": {"userIdentifier": mark, "data": {"set": {"m": mark}}},
            "/l": {"url": f"https://example.com/{mark}"},
            "/r": {},
            "/up": None,
        }
        return Shape(VEMETRIC, {}, bodies[path])
    if source is Source.VERO:
        tail = path.removeprefix("/api/v2")
        bodies = {
            "/events/track": {"identity": {"id": mark}, "event_name": mark, "data": {"m": mark}},
            "/users/track": {"id": mark, "email": f"{mark}@example.com", "data": {"m": mark}},
            "/users/edit": {"id": mark, "changes": {"m": mark}},
            "/users/tags/edit": {"id": mark, "add": [mark], "remove": ["old"]},
            "/users/reidentify": {"id": f"old-{mark}", "new_id": mark},
            "/users/unsubscribe": {"id": mark},
            "/users/resubscribe": {"id": mark},
            "/users/delete": {"id": mark},
            "/heartbeat": None,
        }
        return Shape({}, VERO, bodies[tail])
    if source is Source.VTCDN:
        body = {"user": {"_id": mark}, "event": {"confirmation": {"orderId": mark, "total": "1"}}}
        return Shape(VTCDN, {}, body)
    if source is Source.PLAUSIBLE:
        body = {"n": mark, "u": f"https://example.com/{mark}", "d": "example.com", "p": {"m": 1}}
        return Shape({"Content-Type": "text/plain", "User-Agent": f"Mozilla/5.0 {mark}"}, {}, body)
    if source is Source.VIBEFOLLOW:
        event = {"external_user_id": mark, "name": mark, "properties": {"m": mark}}
        bodies = {
            "/api/v1/events": event,
            "/api/v1/events/batch": {"events": [event]},
            "/api/v1/users": {"external_user_id": mark, "email": f"{mark}@example.com"},
        }
        return Shape(SERVER, {}, bodies[path])
    raise AssertionError(f"no valid call known for {route.label}")


def route_id(route: Route) -> str:
    return f"{route.method} {route.path}"


# ---------------------------------------------------------------------------
# What an answer may be


# Python exception text: a traceback, a frame line, or a builtin exception's name.
EXCEPTION_TEXT = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|"
    r"\b(Key|Type|Value|Attribute|Index|Name|Lookup|UnicodeDecode|UnicodeEncode|Recursion|"
    r"Overflow|Assertion|ZeroDivision|Runtime|NotImplemented|JSONDecode|JSONEncode)Error\b|"
    r"Internal Server Error"
)
VEMETRIC_BODIES = {b"Invalid!", b"Unauthorized", b"Too many requests", b"Service unavailable"}


def _json(response: httpx.Response) -> Any:
    assert response.headers.get("content-type", "").startswith("application/json"), response
    return orjson.loads(response.content)


def _is_str_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def check_error_shape(source: Source, response: httpx.Response) -> None:
    """A refusal in the shape the imitated API documents (docs/apis/)."""
    if source is Source.VEMETRIC:
        assert response.content in VEMETRIC_BODIES, response.content[:200]
        return
    body = _json(response)
    if source is Source.NATIVE:
        error = body["error"]
        assert set(error) == {"code", "message", "field"}, body
        assert isinstance(error["code"], str), body
        assert isinstance(error["message"], str), body
        assert _is_str_or_none(error["field"]), body
    elif source is Source.VIBEFOLLOW:
        (error,) = body["errors"]
        assert set(error) == {"code", "message", "field"}, body
        assert isinstance(error["code"], str), body
        assert isinstance(error["message"], str), body
        assert _is_str_or_none(error["field"]), body
    elif source is Source.VERO:
        assert set(body) == {"status", "message"}, body
        assert isinstance(body["status"], int), body
        assert isinstance(body["message"], str), body
    elif source is Source.VTCDN:
        (error,) = body["errors"]
        assert set(error) == {"message", "description"}, body
        assert all(isinstance(v, str) for v in error.values()), body
    elif source is Source.PLAUSIBLE:
        ((field, messages),) = body["errors"].items()
        assert isinstance(field, str), body
        assert messages, body
        assert all(isinstance(m, str) for m in messages), body
    else:
        raise AssertionError(f"no documented error shape for {source}")


def check_answer(route: Route, response: httpx.Response) -> None:
    status, text = response.status_code, response.content.decode("utf-8", "replace")
    assert status < 500, f"{status} from {route_id(route)}: {text[:500]}"
    assert not EXCEPTION_TEXT.search(text), f"exception text in the answer: {text[:500]}"
    # The dispatcher's catch-all for a parser that raised: a bug behind a 400.
    assert "could not be processed" not in text, f"the parser raised: {text[:500]}"
    if status >= 400:
        assert status in {400, 401, 403, 408, 413, 422, 429, 431}, (status, text[:500])
        check_error_shape(route.source, response)


# ---------------------------------------------------------------------------
# Generated requests


class Fragment(str):
    """Raw JSON text spliced into a generated document as is (deep nesting, huge numbers)."""


def to_json(value: Any) -> str:
    """JSON text of ``value``, with ``Fragment`` spliced in raw and lone surrogates kept."""
    if isinstance(value, Fragment):
        return str(value)
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k))}:{to_json(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=True)


def encode_text(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8


# Any code point, surrogates included: NUL, controls, bidi overrides, private use.
ANY_CHAR = st.characters(codec=None, exclude_categories=())
HOSTILE_TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.sampled_from(
        ["", " ", "\x00", "\x1b[31m[/]\x1b[0m", "\u202e", "\ud800", "💥" * 10, "[/]", "null"]
    ),
    st.integers(100, 1_100_000).map(lambda n: "x" * n),  # up to past the 1 MB body cap
)
HUGE_NUMBERS = st.sampled_from(
    [
        Fragment("1" * 400),
        Fragment("-" + "9" * 30),
        Fragment("1e400"),
        Fragment("-1e-400"),
        Fragment("NaN"),
        Fragment("Infinity"),
        Fragment("18446744073709551616"),
        Fragment("-9223372036854775809"),
    ]
)
# Up to orjson's depth limits (254 to encode, 1024 to decode) and past the decoder's;
DEEP = st.integers(2, 5_000).flatmap(
    lambda depth: st.sampled_from(
        [Fragment("[" * depth + "1" + "]" * depth), Fragment('{"a":' * depth + "1" + "}" * depth)]
    )
)
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    HOSTILE_TEXT,
    HUGE_NUMBERS,
    DEEP,
)
JSON_VALUE = st.recursive(
    LEAF,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(ANY_CHAR, max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """``value`` with some fields given wrong types or hostile values, dropped or added."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            how = draw(st.sampled_from(["keep", "keep", "mutate", "replace", "drop"]))
            if how == "keep":
                out[key] = item
            elif how == "mutate" and depth < 4:
                out[key] = draw(mutated(item, depth + 1))
            elif how in ("replace", "mutate"):
                out[key] = draw(JSON_VALUE)
        out.update(draw(st.dictionaries(st.text(ANY_CHAR, max_size=12), JSON_VALUE, max_size=2)))
        return out
    if isinstance(value, list):
        items = [draw(mutated(v, depth + 1)) for v in value]
        return items + draw(st.lists(JSON_VALUE, max_size=2))
    return draw(st.one_of(st.just(value), JSON_VALUE))


@st.composite
def bodies(draw: st.DrawFn, template: Any) -> bytes:
    """A generated request body for a route whose valid body is ``template``."""
    base = template if template is not None else {}
    kind = draw(
        st.sampled_from(
            ["bytes", "mutated", "mutated", "mutated", "truncated", "garbled", "other", "empty"]
        )
    )
    if kind == "bytes":
        return draw(st.binary(max_size=2_000))
    if kind == "empty":
        return b""
    if kind == "other":  # valid JSON, but not the object the route wants
        return encode_text(to_json(draw(JSON_VALUE)))
    text = encode_text(to_json(draw(mutated(base))))
    if kind == "truncated":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if kind == "garbled":
        data = bytearray(text)
        for _ in range(draw(st.integers(1, 5))):
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        return bytes(data)
    return text


# Header names the endpoint reads, and any token; never those that frame the request.
FRAMING = {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade", "te"}
KNOWN_HEADERS = [
    "Authorization",
    "Token",
    "User-Agent",
    "Content-Type",
    "Origin",
    "Referer",
    "X-Forwarded-For",
    "X-Real-IP",
    "CF-IPCountry",
    "X-Plausible-IP-Type",
    "X-IP-Type",
    "V-SDK",
    "V-SDK-Version",
    "V-Host",
    "v-referrer",
    "X-SDK-Name",
    "X-SDK-Version",
    "Idempotency-Key",
    "Allow-Cookies",
    "Content-Encoding",
]
HEADER_NAME = st.one_of(
    st.sampled_from(KNOWN_HEADERS),
    st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,30}", fullmatch=True),
).filter(lambda name: name.lower() not in FRAMING)
# What h11 lets a client send as a header value: visible bytes, inner spaces and tabs.
HEADER_VALUE = st.one_of(
    st.binary(max_size=300).map(
        lambda b: bytes(c for c in b if c == 9 or 0x20 <= c <= 0x7E or c >= 0x80).strip(b" \t")
    ),
    st.sampled_from(
        [b"", b"Bearer", b"Bearer  x", b"Bearer \xff\xfe", b"1.2.3.4, ::1, x", b"k" * 255]
    ),
)


@st.composite
def requests(draw: st.DrawFn, route: Route) -> tuple[list[tuple[bytes, bytes]], str, bytes]:
    """(headers, percent-encoded query, body) of one generated request to ``route``.

    The query is encoded here, not by the HTTP client: a lone surrogate goes on
    the wire as invalid UTF-8 (%ED%A0%80), which a client library refuses to send.
    """
    valid = valid_call(route, "fuzz")
    headers: dict[str, bytes] = {}
    params: dict[str, str] = {}
    credentials = draw(st.sampled_from(["valid", "valid", "valid", "wrong", "none"]))
    if credentials == "valid":
        headers.update({k: v.encode() for k, v in valid.headers.items()})
        params.update(valid.params)
    elif credentials == "wrong":
        headers.update({k: draw(HEADER_VALUE) for k in valid.headers})
        params.update({k: draw(st.text(ANY_CHAR, max_size=30)) for k in valid.params})
    for name, value in draw(st.dictionaries(HEADER_NAME, HEADER_VALUE, max_size=6)).items():
        headers[name] = value
    text = st.text(ANY_CHAR, max_size=30)
    params.update(draw(st.dictionaries(text, text, max_size=4)))
    query = urlencode([(encode_text(k), encode_text(v)) for k, v in params.items()])
    body = draw(bodies(valid.body))
    return [(k.encode(), v) for k, v in headers.items()], query, body


# ---------------------------------------------------------------------------
# HTTP: every route


@pytest.mark.parametrize("route", ALL_ROUTES, ids=route_id)
def test_generated_requests_get_documented_answers_and_never_a_5xx(fuzz_endpoint, route: Route):
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=fuzz_endpoint.url, timeout=30) as http:

        @HTTP_FUZZ
        @given(request=requests(route))
        def send(request: tuple[list[tuple[bytes, bytes]], str, bytes]) -> None:
            headers, query, body = request
            url = f"{route.path}?{query}" if query else route.path
            response = http.request(route.method, url, headers=headers, content=body)
            statuses[response.status_code] += 1
            tally(f"HTTP {response.status_code}")  # --hypothesis-show-statistics
            check_answer(route, response)

        send()
        # The generated requests got past authentication, not only 401s.
        assert set(statuses) - {401}, statuses
        health = http.get("/healthz", timeout=2)
        assert (health.status_code, health.text) == (200, "ok")


def test_deeply_nested_vero_tags_get_a_validation_answer(fuzz_endpoint):
    route = next(r for r in ALL_ROUTES if r.path.endswith("/users/tags/edit"))
    nested = "[" * 300 + '"t"' + "]" * 300
    body = f'{{"id": "deep", "add": {nested}}}'.encode()
    with httpx.Client(base_url=fuzz_endpoint.url, timeout=30) as http:
        response = http.put(route.path, params=VERO, content=body)
        assert http.get("/healthz", timeout=2).status_code == 200
    assert response.status_code in (200, 400), response.text
    assert "could not be processed" not in response.text  # the parser raised


def _raw_values(bootstrap: str, topic: str, timeout: float = 20.0) -> list[bytes]:
    """Every record value of a one-partition topic, up to its end now."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"fuzz-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            # The end, not the high watermark: the endpoint writes in transactions,
            # whose commit markers take offsets without being records.
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"no end of {topic} after {len(values)} records"
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is None:
                values.append(message.value() or b"")
            elif message.error().code() == KafkaError._PARTITION_EOF:
                return values
    finally:
        consumer.close()


def test_after_the_garbage_every_route_still_publishes_a_valid_event(
    fuzz_endpoint, kafka_bootstrap
):
    """Runs after the fuzz tests of this module, on the same endpoint."""
    ctx = ParseContext(ProjectDirectory.from_projects(fuzz_endpoint.settings.projects))
    tag = uuid.uuid4().hex[:8]
    wanted: dict[str, str] = {}
    with httpx.Client(base_url=fuzz_endpoint.url, timeout=30) as http:
        assert http.get("/healthz", timeout=2).status_code == 200
        for i, route in enumerate(ALL_ROUTES):
            mark = f"marker-{tag}-{i}"
            call = valid_call(route, mark)
            body = b"" if call.body is None else orjson.dumps(call.body)
            response = http.request(
                route.method, route.path, headers=call.headers, params=call.params, content=body
            )
            assert 200 <= response.status_code < 300, (route_id(route), response.text)
            request = HttpRequest(
                method=route.method,
                path=route.path,
                headers={k.lower(): v for k, v in call.headers.items()},
                query=call.params,
                body=body,
                received_at=datetime.now(UTC),
            )
            if route.parse(request, ctx).submissions:  # e.g. /up and heartbeats record nothing
                wanted[mark] = route_id(route)
    assert len(wanted) >= 19
    values = _raw_values(kafka_bootstrap, fuzz_endpoint.topic)
    missing = {m: r for m, r in wanted.items() if not any(m.encode() in v for v in values)}
    assert missing == {}
    for value in values:
        decode_raw(value)  # everything the endpoint published is a valid RawEvent


# ---------------------------------------------------------------------------
# Kafka: generated records straight to events.raw of a private pipeline

NOW_MS = int(time.time() * 1000)
# Times a publisher may write: the epoch, before it, the ends of a long, 9999-12-31,
# 2100, 1971, and sane ones.
TIMES = st.sampled_from(
    [0, -1, -(2**63), 2**63 - 1, 253_402_214_400_000, 4_102_444_800_000, 31_536_000_000,
     NOW_MS, NOW_MS - 86_400_000, NOW_MS + 3_600_000]
)  # fmt: skip
# Avro strings are UTF-8: any code point but a surrogate.
SCALAR_CHAR = st.characters(codec="utf-8")
TEXT = st.one_of(
    st.text(SCALAR_CHAR, max_size=30),
    st.sampled_from(["", "\x00", "\x1b]0;pwned\x07", "[/]", "\u202e", " ", "x" * 70_000]),
)
OPTIONAL_TEXT = st.none() | TEXT
TEXT_MAP = st.dictionaries(TEXT, TEXT, max_size=4)
HUGE_MAP = st.integers(100_000, 999_500).map(lambda n: {"blob": "x" * n})  # up to the broker's 1 MB
RAW_FIELDS = st.fixed_dictionaries(
    {
        "project": st.sampled_from(["demo", "demo", "other", "nope", "", "DEMO", "demo\x00"]),
        "name": TEXT,
        "timestamp": TIMES,
        "received_at": TIMES,
    },
    optional={
        "source": st.sampled_from([s.value for s in Source]) | TEXT,
        "kind": st.sampled_from(["track", "identify", "update_user", "delete_user"]) | TEXT,
        "user_id": OPTIONAL_TEXT,
        "email": OPTIONAL_TEXT,
        "anonymous_id": OPTIONAL_TEXT,
        "visitor_id": OPTIONAL_TEXT,
        "url": OPTIONAL_TEXT,
        "referrer": OPTIONAL_TEXT,
        "domain": OPTIONAL_TEXT,
        "properties": TEXT_MAP | HUGE_MAP,
        "user_properties": TEXT_MAP,
        "user_properties_unset": st.lists(TEXT, max_size=3),
        "ip": OPTIONAL_TEXT | st.sampled_from(["1.2.3.4", "::1", "999.1.1.1", "10.0.0.0/8"]),
        # Long ones too: bot detection once took seconds per kilobyte of letters.
        "user_agent": OPTIONAL_TEXT
        | st.sampled_from([256, 511, 512, 513, 16_000]).map(lambda n: "Mozilla/5.0 " + "x" * n),
        "ip_classification": st.none() | st.sampled_from(["dc_ip", "threat_ip", "x"]),
        "country": OPTIONAL_TEXT,
        "scroll_depth": st.none() | st.integers(-(2**31), 2**31 - 1),
        "engagement_time_ms": st.none() | st.integers(-(2**63), 2**63 - 1),
        "hash_mode": st.none() | st.booleans(),
        "idempotency_key": OPTIONAL_TEXT,
        "order_id": OPTIONAL_TEXT,
        "revenue_amount": st.none() | st.sampled_from(["-1", "1e400", "NaN", "abc", "1" * 60]),
        "revenue_currency": OPTIONAL_TEXT,
        "credential": st.sampled_from(["server", "public", "", "admin"]),
    },
)


@dataclass
class Published:
    """One record sent to events.raw: where it landed and how its decision is recognised."""

    label: str
    event_id: str | None  # None: not decodable as a RawEvent with an id of ours
    partition: int = -1
    offset: int = -1


@st.composite
def raw_records(draw: st.DrawFn) -> tuple[str, dict[str, Any] | None, bytes | None, Any]:
    """(label, RawEvent fields or None, literal value or None, key choice)."""
    kind = draw(st.sampled_from(["bytes", "avro-prefix", "avro", "avro", "json", "json-broken"]))
    key = draw(st.sampled_from(["routed", "routed", "random", "none"]))
    if kind == "bytes":
        return kind, None, draw(st.binary(max_size=3_000)), key
    if kind == "avro-prefix":  # the single-object marker, then garbage: deeper in the decoder
        tail = draw(st.binary(max_size=500))
        return kind, None, b"\xc3\x01" + draw(st.binary(min_size=8, max_size=8)) + tail, key
    fields = draw(RAW_FIELDS)
    if kind == "json-broken":  # JSON with wrong types in some fields
        for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=3)):
            fields[name] = draw(JSON_VALUE)
    return kind, fields, None, key


class Pipeline:
    """Publishes to a private pipeline's events.raw and reads back what it decided."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tag = uuid.uuid4().hex[:8]
        self.sent: list[Published] = []
        self.producer = Producer(
            {
                "bootstrap.servers": kafka_bootstrap(settings),
                "enable.idempotence": True,
                "message.max.bytes": 1_048_576,
            }
        )
        self._serial = 0

    def next_id(self, hostile: bool) -> str:
        self._serial += 1
        ident = f"fz-{self.tag}-{self._serial}"
        return f"\x00\n{ident}\u202e" if hostile else ident

    def publish(self, label: str, key: bytes | None, value: bytes, partition: int, ident: Any):
        record = Published(label, ident)

        def delivered(err: Any, msg: Any) -> None:
            assert err is None, err
            record.partition, record.offset = msg.partition(), msg.offset()

        self.producer.produce(
            self.settings.topics.raw,
            key=key,
            value=value,
            partition=partition,
            on_delivery=delivered,
        )
        self.sent.append(record)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


# The broker's limit (1,048,588 bytes with the batch overhead), with room to spare.
MAX_PUBLISHED = 1_040_000


def _routed(project: str, who: str) -> tuple[bytes, int]:
    key = topic_key(project, who).encode()
    return key, partition_for(key, 3)


def send_generated(pipeline: Pipeline, draw_record: tuple, salt: bytes) -> None:
    kind, fields, literal, key_choice = draw_record
    if fields is None:
        value, ident = literal, None
        key, partition = (salt or None), (salt[0] if salt else 0) % 3
    else:
        fields = dict(fields)
        empty_id = salt[:1] == b"\x00"
        if empty_id:
            # An empty id is recognised by its position: keep it on its own partition
            # (no re-key hop) and out of events.orders.
            fields.update(user_id=f"u-{pipeline.next_id(False)}", email=None, order_id=None)
        ident = "" if empty_id else pipeline.next_id(hostile=salt[:1] == b"\x01")
        if kind == "json-broken" and salt[:1] == b"\x02":
            ident = None  # no id at all: the stream derives one from the position
        else:
            fields["event_id"] = ident
        project = fields["project"] if isinstance(fields["project"], str) else "demo"
        user = fields.get("user_id") if isinstance(fields.get("user_id"), str) else None
        key, partition = _routed(project, user or "anon")
        if key_choice == "random" and not empty_id:
            key, partition = salt, salt[-1] % 3 if salt else 1
        elif key_choice == "none":
            key = None
        if kind == "avro":
            event = new_raw_event(**fields)  # type: ignore[arg-type]
            value = encode_raw(event)
        else:
            value = encode_text(to_json(fields))
        if len(value) > MAX_PUBLISHED:
            return  # more than Kafka takes: refused at produce, never on the topic
    pipeline.publish(kind, key, value, partition, ident)


def _read_decisions(settings: Settings, want: Callable[[dict], bool], alive: Callable[[], None]):
    """Read events.clean/dropped/dlq from the start until ``want(found)`` or 120 s passed."""
    topics = settings.topics
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap(settings),
            "group.id": f"fuzz-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topics.clean, topics.dropped, topics.dlq])
    found: dict[str, list] = {"clean": [], "dropped": [], "dlq": []}
    deadline = time.monotonic() + 120
    try:
        while not want(found) and time.monotonic() < deadline:
            alive()
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None:
                    continue
                topic, value = message.topic(), message.value()
                if topic == topics.clean:
                    decided = dict(decode_clean(value))
                elif topic == topics.dropped:
                    decided = dict(decode_dropped(value))
                else:
                    found["dlq"].append(decode_dlq(value))
                    continue
                decided["at"] = (topic, message.partition(), message.offset())
                found["clean" if topic == topics.clean else "dropped"].append(decided)
    finally:
        consumer.close()
    return found


def _read_to_end(settings: Settings, topic: str, timeout: float = 30.0) -> list[bytes]:
    """Every committed value of ``topic`` up to its end now (all partitions)."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap(settings),
            "group.id": f"fuzz-end-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
            for p in meta.partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = consumer.position([TopicPartition(topic, p) for p in ends])
            if all(tp.offset >= ends[tp.partition] for tp in positions if tp.offset >= 0) and all(
                tp.offset >= 0 or ends[tp.partition] == 0 for tp in positions
            ):
                break
            for message in consumer.consume(1000, 0.3):
                if message.error() is None:
                    values.append(message.value() or b"")
        return values
    finally:
        consumer.close()


def _dlq_event_id(record: dict) -> str | None:
    """The event id inside a parked record, when its value is a decodable event."""
    for decode in (decode_raw, decode_clean, decode_dropped):
        try:
            return str(decode(record["value"])["event_id"])
        except Exception:
            continue
    return None


def unaccounted(settings: Settings, sent: list[Published], found: dict[str, list]) -> list:
    """The records sent that no output of the stream decided."""
    raw = settings.topics.raw
    positions = {(d["partition"], d["offset"]) for d in found["dlq"] if d["topic"] == raw}
    ids: Counter[str] = Counter()
    for decided in found["clean"] + found["dropped"]:
        if decided["source_topic"] == raw:
            positions.add((decided["source_partition"], decided["source_offset"]))
        ids[decided["event_id"]] += 1
    for record in found["dlq"]:
        if record["topic"] != raw and (ident := _dlq_event_id(record)) is not None:
            ids[ident] += 1
    missing = []
    for record in sent:
        if (record.partition, record.offset) in positions:
            continue
        if record.event_id and ids[record.event_id]:
            continue
        if record.event_id is None and ids[derived_event_id(raw, record.partition, record.offset)]:
            continue
        missing.append(record)
    return missing


def _short(record: dict) -> dict:
    """A decided event for a failure message: long values cut, defaults left out."""
    return {k: repr(v)[:80] for k, v in record.items() if v not in (None, "", {}, [])}


def stored_ids(settings: Settings) -> dict[str, str]:
    """event_id -> latest decision in ClickHouse (empty until the sink created the table)."""
    ch = connect(settings)
    try:
        db = settings.clickhouse.database
        if not ch.scalar(f"EXISTS TABLE {db}.events"):
            return {}
        latest = "toString(argMax(decision, version))"
        rows = ch.execute(f"SELECT event_id, {latest} FROM {db}.events GROUP BY event_id")
        return {str(a): str(b) for a, b in rows}
    except ClickHouseUnavailableError:
        return {}
    finally:
        ch.close()


@pytest.mark.parametrize("engine", ["kafka", "faust"])
def test_generated_raw_records_never_stop_the_stream_or_the_sink(
    pipeline_settings: Settings, worker_and_sink, engine: str
):
    streams = pipeline_settings.streams.model_copy(update={"engine": engine})
    settings = pipeline_settings.model_copy(update={"streams": streams})
    running = worker_and_sink(settings)
    pipeline = Pipeline(settings)

    @RAW_FUZZ
    @given(st.lists(st.tuples(raw_records(), st.binary(max_size=6)), min_size=1, max_size=4))
    def feed(records: list[tuple[tuple, bytes]]) -> None:
        for record, salt in records:
            send_generated(pipeline, record, salt)
        pipeline.flush()

    feed()
    running.assert_alive()
    markers = {}
    for i in range(6):
        user = f"marker-{pipeline.tag}-{i}"
        event = new_raw_event(project="demo", name=f"marker {i}", user_id=user, source="direct")
        key, partition = _routed("demo", user)
        pipeline.publish("marker", key, encode_raw(event), partition, event["event_id"])
        markers[event["event_id"]] = "accepted"
    pipeline.flush()
    sent = pipeline.sent

    # Every record decided: clean, dropped or parked in the DLQ with its error.
    found = _read_decisions(
        settings, lambda f: not unaccounted(settings, sent, f), running.assert_alive
    )
    running.assert_alive()
    missing = unaccounted(settings, sent, found)
    assert missing == [], f"{len(missing)} of {len(sent)} records never decided: {missing[:5]}"

    # Every decided event is in ClickHouse, or parked by the sink (a row ClickHouse
    # cannot take, such as a time past 2106); the markers are accepted.
    decided = {e["at"]: e["event_id"] for e in found["clean"] + found["dropped"]}
    deadline = time.monotonic() + 90
    while True:
        running.assert_alive()
        stored = stored_ids(settings)
        parked = {
            (d["topic"], d["partition"], d["offset"])
            for d in map(decode_dlq, _read_to_end(settings, settings.topics.dlq))
            if d["topic"] in (settings.topics.clean, settings.topics.dropped)
        }
        lost = {at: i for at, i in decided.items() if i not in stored and at not in parked}
        if not lost or time.monotonic() > deadline:
            break
        time.sleep(1)
    events = {e["at"]: e for e in found["clean"] + found["dropped"]}
    shown = [_short(events[at]) for at in lost]
    assert lost == {}, f"{len(lost)} decided events neither stored nor parked: {shown}\n" + (
        running.log()
    )
    assert {m: stored.get(m) for m in markers} == markers, running.log()
    running.assert_alive()


def test_a_long_user_agent_does_not_stall_the_stream(pipeline_settings: Settings, worker_and_sink):
    running = worker_and_sink(pipeline_settings)
    pipeline = Pipeline(pipeline_settings)
    key, partition = _routed("demo", "long-agent")
    hostile = new_raw_event(
        project="demo", name="long agent", user_id="long-agent", user_agent="x" * 16_000
    )
    pipeline.publish("avro", key, encode_raw(hostile), partition, hostile["event_id"])
    markers = set()
    for i in range(3):  # same user, same partition: decided after the hostile record
        event = new_raw_event(project="demo", name=f"after {i}", user_id="long-agent")
        pipeline.publish("marker", key, encode_raw(event), partition, event["event_id"])
        markers.add(event["event_id"])
    pipeline.flush()
    deadline = time.monotonic() + 20  # a worker decides thousands of records a second
    while time.monotonic() < deadline:
        running.assert_alive()
        if markers <= set(stored_ids(pipeline_settings)):
            break
        time.sleep(0.5)
    assert markers <= set(stored_ids(pipeline_settings)), "the stream stalled on one record"
