"""Validate and enrich a decoded RawEvent; compute the ``Facts`` the rules decide on.

Enrichment is deterministic: the user agent's parse is a pure function of the
string, event time comes from the event, and the user key is on the record.
A replay of the same record therefore yields the same enriched event and the
same key. Visitor ids are never derived here: they need the day's random salt,
which only the endpoint and ``eventsieve publish`` hold (``producers.salts``),
and which Kafka deletes after 48 hours, so a replay could not recompute them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from eventsieve.config import Settings
from schemas.canonical import event_fingerprint, normalise_event_name, topic_key, user_key
from schemas.events import RawEvent
from schemas.fastcodec import Marks
from streams.errors import InvalidEvent
from streams.eventtime import event_time_ms
from streams.facts import Facts, facts_of
from streams.rules.orders import OrderEvents
from streams.useragents import UserAgentInfo, UserAgents

# Event names repeat: normalise each distinct one once.
_normalised = lru_cache(maxsize=16_384)(normalise_event_name)


@dataclass(slots=True)  # read-only by convention (not frozen: see streams.facts.Facts)
class Enriched:
    """A validated raw event (``visitor_id`` filled), its facts, its key and UA details.

    ``marks``: where the raw record's fields lie in its bytes, when its outputs
    can be spliced from them (``schemas.codecs.decode_raw_marked``); ``raw``'s
    fields other than ``visitor_id`` are as decoded.
    """

    raw: RawEvent
    facts: Facts
    key: str
    agent: UserAgentInfo
    marks: Marks | None = None


class Enricher:
    """Turns a decoded RawEvent into an ``Enriched`` one, or raises ``InvalidEvent``."""

    def __init__(self, settings: Settings, user_agents: UserAgents) -> None:
        s = settings.streams
        self.projects = frozenset(p.id for p in settings.projects)
        self.tolerance_ms = int(s.timestamp_tolerance_s * 1000)
        self.user_agents = user_agents
        self.orders = OrderEvents(s.order_events, s.order_id_properties)
        self.message_properties = tuple(s.email_open_id_properties)
        # Page and hostname shields need the URL parsed; nothing else does.
        self.located_projects = frozenset(
            p.id
            for p in settings.projects
            if p.shields.page_blocklist or p.shields.hostname_allowlist
        )

    def enrich(
        self, raw: RawEvent, source: str = "", offset: int = -1, marks: Marks | None = None
    ) -> Enriched:
        """Validate and enrich ``raw``; ``source``/``offset`` say which record it came from,
        ``marks`` where its fields lie in that record (kept for the outputs)."""
        project = raw["project"]
        if project not in self.projects:
            raise InvalidEvent("project", f"unknown project {project!r}")
        if not raw["name"].strip():
            raise InvalidEvent("name", "empty event name")
        time = event_time_ms(raw["timestamp"], raw["received_at"], self.tolerance_ms)
        who = user_key(raw)
        if not who:
            raise InvalidEvent(
                "user_id",
                "no user id, email, anonymous id or visitor id (visitor ids are given by "
                "the endpoint and by `eventsieve publish`; other publishers send one of these)",
            )
        name = _normalised(raw["name"])
        props = raw["properties"]
        message_id = None
        for prop in self.message_properties:
            if props.get(prop):
                message_id = props[prop]
                break
        facts = facts_of(
            raw,
            time=time,
            user_key=who,
            name=name,
            fingerprint=event_fingerprint(raw, user=who, name=name),
            order_id=self.orders.order_id(name, raw["order_id"], props),
            message_id=message_id,
            source=source,
            offset=offset,
            locate=project in self.located_projects,
        )
        agent = self.user_agents.info(raw["user_agent"] or "")
        return Enriched(raw, facts, topic_key(project, who), agent, marks)
