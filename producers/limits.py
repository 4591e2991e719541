"""What one request or connection may cost the endpoint, beyond the body size.

A frozen value handed to ``build_endpoint`` and the server; the defaults
are the production values, tests pass small ones. Every bound has a reason:
a client must not be able to stall the endpoint, exhaust its memory, or
publish a record that a later stage cannot carry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """Bounds on headers, records, slow clients, concurrency and failed authentication."""

    # Real browsers and SDKs send under 30 headers and 4 KiB; nginx refuses a
    # header line over 8 KiB by default. Past these: 431.
    max_headers: int = 100
    max_header_bytes: int = 16_384
    # Stripe's bound on an idempotency key: a key is remembered for 24 hours.
    max_idempotency_key_chars: int = 255
    # One encoded RawEvent. The stream adds derived fields (about 1 KiB) and a
    # DLQ record adds its envelope (about 2.5 KiB); both must stay under
    # librdkafka's 1,000,000-byte message.max.bytes, so a record the endpoint
    # accepts can always be carried to events.clean, events.dropped or events.dlq.
    max_record_bytes: int = 512_000
    # All records of one request. Headers (user agent, idempotency key) are
    # copied into every event of a batch: this bounds what they can amplify.
    max_request_record_bytes: int = 4_000_000
    # A connection must finish its request headers, and a request its body,
    # within these, or it is closed (408 for the body): 60 slow or idle
    # connections must not hold the endpoint's sockets and memory.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 20.0
    # Ingest requests in progress at once per process; beyond it 503 +
    # Retry-After, so overload sheds load instead of queueing without bound.
    max_inflight_requests: int = 512
    # Failed authentications per client address and minute; beyond it 429.
    failed_auth_per_minute: int = 60
