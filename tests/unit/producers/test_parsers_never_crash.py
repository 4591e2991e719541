"""Whatever the body, a parser answers with a Parsed or a Rejection: never a crash (5xx).

And whatever a parser accepts encodes as a valid RawEvent record.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.apis import ALL_ROUTES
from producers.edge import EdgeContext
from producers.errors import Rejection
from producers.model import Parsed
from producers.records import RecordBuilder
from producers.salts import FixedSalts
from schemas.codecs import decode_raw

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "name",
        "n",
        "u",
        "url",
        "d",
        "p",
        "props",
        "customData",
        "userData",
        "identity",
        "data",
        "event_name",
        "user",
        "event",
        "events",
        "external_user_id",
        "properties",
        "sd",
        "e",
        "extras",
        "kind",
        "timestamp",
        "identifier",
        "userIdentifier",
        "Token",
        "auth_token",
    ]
)
_bodies = st.one_of(
    st.binary(max_size=64),
    st.dictionaries(_keys, _json, max_size=6).map(orjson.dumps),
)
_HEADERS = {
    "token": "alpha-token",
    "authorization": "Bearer alpha-secret",
    "idempotency-key": "k",
}


@pytest.mark.parametrize("route", ALL_ROUTES, ids=lambda r: f"{r.method} {r.path}")
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_bodies)
def test_parser_total(route, make_request, ctx, body):
    request = make_request(
        body,
        headers=_HEADERS,
        query={"auth_token": "alpha-vero"},
        method=route.method,
        path=route.path,
    )
    outcome: Parsed | Rejection
    try:
        outcome = route.parse(request, ctx)
    except Rejection as rejection:
        outcome = rejection
    if isinstance(outcome, Rejection):
        assert 400 <= outcome.status < 500
    else:
        assert isinstance(outcome, Parsed)
        edge = EdgeContext(request.received_at, ip="198.51.100.1", user_agent="UA")
        records = RecordBuilder(FixedSalts()).build(outcome.project_ids, outcome.submissions, edge)
        assert len(records) == len(outcome.project_ids) * len(outcome.submissions)
        for rec in records:
            assert decode_raw(rec.value) == rec.event
