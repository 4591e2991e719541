"""Submission + project + edge context -> the RawEvent record and its Kafka key.

The only place that knows both the endpoint's values and the event contract
(schemas/); pure, so the mapping is tested without a broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from producers.edge import EdgeContext
from producers.model import Submission
from schemas.canonical import topic_key, user_key, visitor_id
from schemas.codecs import encode_raw
from schemas.events import RawEvent, new_event_id, new_raw_event


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record for ``events.raw``."""

    key: bytes
    value: bytes
    event: RawEvent


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    return int(moment.timestamp() * 1000)


def _domain(submission: Submission, project_id: str) -> str:
    if submission.domain:
        return submission.domain
    if submission.url:
        host = urlsplit(submission.url).hostname
        if host:
            return host
    return project_id


def raw_event(
    submission: Submission, project_id: str, edge: EdgeContext, salt_secret: str
) -> RawEvent:
    """The RawEvent of one submission in one project.

    ``timestamp`` is the client's time when it sent one (the stream decides
    whether it is within tolerance), else the receive time. ``visitor_id`` is
    the daily keyed hash of IP, user agent and domain, set whenever the IP is
    known, so anonymous events have a user key before they are produced.
    """
    received = to_ms(edge.received_at)
    stamp = to_ms(submission.client_time) if submission.client_time else received
    visitor = None
    if edge.ip:
        day = datetime.fromtimestamp(stamp / 1000, UTC).date()
        visitor = visitor_id(
            salt_secret,
            day,
            edge.ip,
            edge.user_agent or "",
            _domain(submission, project_id),
        )
    return new_raw_event(
        project=project_id,
        name=submission.name,
        event_id=submission.event_id or new_event_id(),
        timestamp=stamp,
        received_at=received,
        source=submission.source.value,
        kind=submission.kind.value,
        user_id=submission.user_id,
        email=submission.email,
        anonymous_id=submission.anonymous_id,
        visitor_id=visitor,
        display_name=submission.display_name,
        url=submission.url,
        referrer=submission.referrer,
        domain=submission.domain,
        properties=dict(submission.properties),
        user_properties=dict(submission.user_properties),
        user_properties_once=dict(submission.user_properties_once),
        user_properties_unset=list(submission.user_properties_unset),
        ip=edge.ip,
        user_agent=edge.user_agent,
        ip_classification=edge.ip_classification,
        country=edge.country,
        context_id=submission.context_id,
        interactive=submission.interactive,
        scroll_depth=submission.scroll_depth,
        engagement_time_ms=submission.engagement_time_ms,
        hash_mode=submission.hash_mode,
        sdk_name=submission.sdk_name or edge.sdk_name,
        sdk_version=submission.sdk_version or edge.sdk_version,
        idempotency_key=submission.idempotency_key,
        order_id=submission.order_id,
    )


def record(submission: Submission, project_id: str, edge: EdgeContext, salt_secret: str) -> Record:
    """The RawEvent encoded (Avro single-object) and keyed ``project:user_key``."""
    event = raw_event(submission, project_id, edge, salt_secret)
    key = topic_key(project_id, user_key(event))
    return Record(key.encode(), encode_raw(event), event)
