"""Event-name normalisation, dedup fingerprints, keys and visitor ids."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import schemas
from schemas.canonical import canonical_value


@pytest.mark.parametrize(
    ("name", "normalised"),
    [
        ("Order Placed", "order_placed"),
        ("order_placed", "order_placed"),
        ("  ORDER placed\t", "order_placed"),
        ("order  __ placed", "order_placed"),
        ("_order_placed_", "order_placed"),
        ("$pageview", "$pageview"),
        ("Straße", "strasse"),
    ],
)
def test_normalise_event_name(name: str, normalised: str) -> None:
    assert schemas.normalise_event_name(name) == normalised


@given(st.text())
def test_normalisation_is_idempotent(name: str) -> None:
    once = schemas.normalise_event_name(name)
    assert schemas.normalise_event_name(once) == once


@given(st.text(alphabet="abcXYZ _", max_size=20))
def test_space_underscore_and_case_variants_normalise_alike(name: str) -> None:
    variant = name.upper().replace(" ", "_").replace("_", " ")
    assert schemas.normalise_event_name(variant) == schemas.normalise_event_name(name)


def event(properties: dict[str, str], **fields: Any) -> dict[str, Any]:
    base = {"project": "demo", "user_id": "u1", "name": "Order Placed"} | fields
    return schemas.new_raw_event(properties=properties, **base)


def test_fingerprint_ignores_property_order_name_spelling_and_request_context() -> None:
    a = event({"plan": "pro", "amount": "10"}, ip="1.1.1.1", event_id="a", timestamp=1)
    b = event({"amount": "10", "plan": "pro"}, name=" order_placed", event_id="b", timestamp=9)
    assert schemas.event_fingerprint(a) == schemas.event_fingerprint(b)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("10", "10.0"),
        ("10", "1e1"),
        ("10.5", "10.50"),
        ("0", "-0.0"),
        ("true", "True"),
        ("false", "FALSE"),
        ('{"a":1,"b":[2.0,"x"]}', '{ "b": [2, "x"], "a": 1.0 }'),
    ],
)
def test_fingerprint_ignores_how_numbers_and_booleans_were_written(one: str, other: str) -> None:
    assert schemas.event_fingerprint(event({"v": one})) == schemas.event_fingerprint(
        event({"v": other})
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [("10", "11"), ("1.5", "15"), ("abc", "ABC"), ("true", "1"), ("a b", "a  b"), ("", " ")],
)
def test_different_values_give_different_fingerprints(one: str, other: str) -> None:
    assert schemas.event_fingerprint(event({"v": one})) != schemas.event_fingerprint(
        event({"v": other})
    )


def test_json_numbers_serialised_by_different_clients_fingerprint_alike() -> None:
    """The same JSON event from two clients: ints vs floats, booleans vs strings, key order."""
    js = {"project": "p", "name": "buy", "event_id": "1", "timestamp": 1, "received_at": 1}
    one = schemas.decode_raw(json.dumps(js | {"properties": {"n": 2, "ok": True}}).encode())
    two = schemas.decode_raw(json.dumps(js | {"properties": {"ok": "true", "n": 2.0}}).encode())
    assert one["properties"] != two["properties"]
    assert schemas.event_fingerprint(one) == schemas.event_fingerprint(two)


props = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=6)


@given(props, st.randoms())
def test_fingerprint_independent_of_key_order(
    properties: dict[str, str], rnd: random.Random
) -> None:
    items = list(properties.items())
    rnd.shuffle(items)
    assert schemas.event_fingerprint(event(properties)) == schemas.event_fingerprint(
        event(dict(items))
    )


@given(props, st.text(max_size=8), st.text(max_size=8))
def test_any_property_change_changes_the_fingerprint(
    properties: dict[str, str], key: str, value: str
) -> None:
    changed = dict(properties)
    changed[key] = value
    assume(key not in properties or canonical_value(properties[key]) != canonical_value(value))
    assert schemas.event_fingerprint(event(properties)) != schemas.event_fingerprint(event(changed))


@given(props)
def test_removing_a_property_changes_the_fingerprint(properties: dict[str, str]) -> None:
    assume(properties)
    fewer = dict(list(properties.items())[1:])
    assert schemas.event_fingerprint(event(properties)) != schemas.event_fingerprint(event(fewer))


def test_fingerprint_separates_project_user_and_name() -> None:
    base = schemas.event_fingerprint(event({}))
    assert schemas.event_fingerprint(event({}, project="other")) != base
    assert schemas.event_fingerprint(event({}, user_id="u2")) != base
    assert schemas.event_fingerprint(event({}, name="Order Shipped")) != base


def test_fingerprint_is_stable_across_releases() -> None:
    """Dedup state outlives a deploy: changing the fingerprint function re-admits duplicates."""
    assert schemas.event_fingerprint(event({"plan": "pro"})) == "b5464a2bc4ea28f29f814c41e56e4063"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("10.0", "10"), ("1e3", "1000"), ("-0.50", "-0.5"), ("1e-400", "1E-400"), ("TRUE", "true")],
)
def test_canonical_value(text: str, canonical: str) -> None:
    assert canonical_value(text) == canonical


def test_user_key_precedence() -> None:
    full = {"user_id": "u", "email": " A@B.example ", "anonymous_id": "a", "visitor_id": "v"}
    assert schemas.user_key(full) == "u"
    assert schemas.user_key(full | {"user_id": None}) == "a@b.example"
    assert schemas.user_key(full | {"user_id": None, "email": None}) == "a"
    assert schemas.user_key({"visitor_id": "v"}) == "v"
    assert schemas.user_key({}) == ""


def test_topic_key() -> None:
    assert schemas.topic_key("demo", "u1") == "demo:u1"


def test_visitor_id_is_stable_under_one_salt_and_changes_with_it() -> None:
    args = (b"salt-of-the-day", "203.0.113.9", "Mozilla/5.0", "example.com")
    vid = schemas.visitor_id_with(*args)
    assert vid == schemas.visitor_id_with(*args)
    assert len(vid) == 32
    assert int(vid, 16) >= 0
    for i, other in enumerate([b"salt-of-the-next-day", "203.0.113.10", "Mozilla/5.1", "a.org"]):
        changed = list(args)
        changed[i] = other
        assert schemas.visitor_id_with(*changed) != vid  # type: ignore[arg-type]


def test_visitor_id_fields_cannot_run_into_each_other() -> None:
    a = schemas.visitor_id_with(b"s", "1.2.3.4", "ab", "c")
    b = schemas.visitor_id_with(b"s", "1.2.3.4", "a", "bc")
    assert a != b


def test_visitor_domain_is_the_domain_else_the_urls_host_else_the_project() -> None:
    assert schemas.visitor_domain("a.com", "https://b.com/x", "demo") == "a.com"
    assert schemas.visitor_domain(None, "https://b.com/x", "demo") == "b.com"
    assert schemas.visitor_domain("", "not a url", "demo") == "demo"
    assert schemas.visitor_domain(None, None, "demo") == "demo"


def test_drop_reasons_cover_the_design() -> None:
    design = [
        "bot",
        "spam_referrer",
        "dc_ip",
        "threat_ip",
        "duplicate",
        "duplicate_idempotency_key",
        "email_open_throttled",
        "duplicate_order",
        "site_ip_blocklist",
        "site_country_blocklist",
        "site_page_blocklist",
        "site_hostname_allowlist",
        "invalid",
    ]
    assert {r.value for r in schemas.DropReason} >= set(design)
    assert schemas.DropReason("bot") is schemas.DropReason.BOT
    assert schemas.DropReason.BOT == "bot"


_DECIMALS = st.from_regex(
    r"\A-?([0-9]{0,25}\.?[0-9]{0,25}|\.[0-9]{1,25})([eE][-+]?[0-9]{1,3})?\Z"
).filter(lambda t: any(c.isdigit() for c in t.split("e")[0].split("E")[0]))


@given(_DECIMALS)
def test_fast_number_spelling_agrees_with_the_exact_one(text: str) -> None:
    from schemas.canonical import _canonical_number, _canonical_number_exact

    assert _canonical_number(text) == _canonical_number_exact(text)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_equal_numbers_spelled_differently_are_one_value(number: Any) -> None:
    plain, scientific = format(number, "f"), f"{number:e}"
    if scientific.count("e") == 1 and number == type(number)(scientific):
        assert canonical_value(plain) == canonical_value(scientific)


# Each field that carries meaning, and a second value for it: an event that
# differs from another only there is another event (docs/publishing.md).
MEANINGFUL_CHANGES: list[tuple[str, Any, Any]] = [
    ("kind", "track", "update_user"),
    ("url", "https://shop.example/docs/intro", "https://shop.example/docs/install"),
    ("domain", "shop.example", "blog.example"),
    ("referrer", "https://a.example/", "https://b.example/"),
    ("display_name", "Ann", "Ann E."),
    ("email", "ann@example.com", "ann@example.org"),
    ("user_properties", {"plan": "pro"}, {"plan": "team"}),
    ("user_properties_once", {"signup": "2026-01-01"}, {"signup": "2026-01-02"}),
    ("user_properties_unset", ["trial"], ["vip"]),
    ("order_id", "A-1", "A-2"),
    ("revenue_amount", "9.99", "19.99"),
    ("revenue_currency", "USD", "EUR"),
    ("scroll_depth", 40, 80),
    ("engagement_time_ms", 1_000, 5_000),
    ("interactive", None, False),
]


@pytest.mark.parametrize(("field", "one", "other"), MEANINGFUL_CHANGES)
def test_every_meaningful_field_separates_events(field: str, one: Any, other: Any) -> None:
    revenue = {"revenue_amount": "9.99", "revenue_currency": "USD"}
    first = event({}, **(revenue | {field: one}))
    second = event({}, **(revenue | {field: other}))
    assert schemas.event_fingerprint(first) != schemas.event_fingerprint(second)


def test_the_url_fragment_counts_unless_the_client_is_not_in_hash_mode() -> None:
    def page(url: str, hash_mode: bool | None) -> str:
        return schemas.event_fingerprint(event({}, url=url, hash_mode=hash_mode))

    intro, install = "https://s.example/#/intro", "https://s.example/#/install"
    assert page(intro, True) != page(install, True)
    assert page(intro, None) != page(install, None)
    assert page(intro, False) == page(install, False)
    assert page(intro, False) == page("https://s.example/", False)


def test_ids_times_and_transport_details_do_not_separate_events() -> None:
    base = event({"plan": "pro"}, url="https://s.example/a", revenue_amount="9.99")
    for field, value in [
        ("event_id", "other-id"),
        ("timestamp", 123),
        ("received_at", 456),
        ("context_id", "ctx-2"),
        ("idempotency_key", "k-2"),
        ("ip", "198.51.100.7"),
        ("user_agent", "curl/8"),
        ("ip_classification", "dc_ip"),
        ("country", "DE"),
        ("sdk_name", "python"),
        ("sdk_version", "9.9"),
        ("hash_mode", True),
    ]:
        assert schemas.event_fingerprint(base) == schemas.event_fingerprint(
            base | {field: value}
        ), field


def test_equal_values_spelled_differently_in_profile_edits_and_revenue_are_equal() -> None:
    one = event({}, user_properties={"n": "10"}, revenue_amount="9.9", email="A@B.example")
    two = event({}, user_properties={"n": "10.0"}, revenue_amount="9.90", email="a@b.example ")
    assert schemas.event_fingerprint(one) == schemas.event_fingerprint(two)
    unset = event({}, user_properties_unset=["a", "b"])
    assert schemas.event_fingerprint(unset) == schemas.event_fingerprint(
        event({}, user_properties_unset=["b", "a"])
    )
