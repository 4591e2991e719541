"""Random daily salts for visitor ids, shared by every endpoint process, gone after 48 h.

A visitor id is ``HMAC(salt of the day, domain, IP, user agent)``
(``schemas.canonical.visitor_id_with``). If the salt could be derived from
something kept, a stored visitor id could be reversed to its IP by trying
every address (all of IPv4 takes hours). So, as Plausible does, each UTC day
gets a *random* nonce, and the salt is ``HMAC(secret, nonce)``:

- the nonces live only in a Kafka topic (``<raw topic>.salts``, one
  partition) whose records Kafka deletes 48 hours after they were written
  (``retention.ms``, hourly segments): once a day's nonce is gone, nothing
  can recompute that day's visitor ids, not even with the secret;
- the secret keeps a reader of that topic alone from computing salts.

Every process reads the topic from the start; for each day the *first*
record is the nonce (several processes racing at midnight all settle on the
one Kafka ordered first). A process proposes the nonces of today and, in the
last hours of a day, of tomorrow, and uses a day's salt only once it has read
that day's first record. Days are the request's receive day (UTC), so only
today's and yesterday's salts are ever needed.

``SaltSource`` is what ``producers.records`` needs; ``FixedSalts`` serves unit
tests and benchmarks. A request whose day has no salt (Kafka unreachable since
before midnight) is answered 503, like any other Kafka outage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from eventsieve.errors import ServiceUnavailableError
from eventsieve.kafka import durable_producer_config, ensure_topics, reader_config
from eventsieve.logging import get_logger

log = get_logger(__name__)

# Kafka deletes a nonce this long after it was written (segments roll hourly,
# so at most an hour later): a day's salt outlives the day, then vanishes.
RETENTION_MS = 48 * 3600 * 1000
SEGMENT_MS = 3600 * 1000
# Tomorrow's nonce is proposed in the last hours of today, so it exists before
# midnight and is still deleted about a day after its day ends.
PROPOSE_TOMORROW_AFTER = dt.time(21, 0)
NONCE_BYTES = 32


def salt_of(secret: str, nonce: bytes) -> bytes:
    """A day's salt: keyed by the secret, random through the nonce."""
    return hmac.new(secret.encode(), nonce, hashlib.sha256).digest()


class SaltSource(Protocol):
    """The salt of a UTC day, or None when the day has none (yet, or any more)."""

    def salt(self, day: dt.date) -> bytes | None: ...


class FixedSalts:
    """One salt per day derived from a fixed seed: for unit tests and benchmarks only."""

    def __init__(self, seed: str = "tests") -> None:
        self.seed = seed

    def salt(self, day: dt.date) -> bytes | None:
        return salt_of(self.seed, day.isoformat().encode())

    def start(self) -> None:
        """Nothing to start (the same lifecycle as ``KafkaDailySalts``)."""

    def wait_ready(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        """Nothing to close."""


class KafkaDailySalts:
    """Random daily nonces in a Kafka topic, read by a background thread.

    ``start()`` starts the thread (which creates the topic if needed and
    proposes the nonces); ``wait_ready`` waits for today's salt. ``salt(day)``
    only reads memory, so the request path never waits on Kafka.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        secret: str,
        *,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        refresh_s: float = 30.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.secret = secret
        self.now = now
        self.refresh_s = refresh_s
        self._salts: dict[dt.date, bytes] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None

    def salt(self, day: dt.date) -> bytes | None:
        return self._salts.get(day)

    def start(self) -> None:
        """Start the background reader; it creates the topic and proposes today's nonce."""
        self._thread = threading.Thread(target=self._run, name="salts", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until today's salt is known; False if it is not after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.salt(self.now().date()) is None:
            if time.monotonic() > deadline or self._stop.is_set():
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    # -- internals -------------------------------------------------------------

    def _run(self) -> None:
        """Connect (retrying while Kafka is away), then refresh every ``refresh_s``."""
        while not self._stop.is_set():
            try:
                self._connect()
                break
            except (KafkaException, ServiceUnavailableError) as exc:
                log.warning("salts unavailable, retrying", topic=self.topic, error=str(exc))
                self._stop.wait(2.0)
        wait = 0.0
        while not self._stop.wait(wait):
            try:
                self._propose_missing()
                self._read(1.0)
                self._forget_old()
                wait = self.refresh_s
            except (KafkaException, ServiceUnavailableError) as exc:
                log.warning("salts not refreshed", topic=self.topic, error=str(exc))
                wait = 2.0
        if self._consumer is not None:
            self._consumer.close()

    def _connect(self) -> None:
        ensure_topics(
            self.bootstrap,
            [self.topic],
            1,
            config={
                "cleanup.policy": "delete",
                "retention.ms": str(RETENTION_MS),
                "segment.ms": str(SEGMENT_MS),
            },
            timeout=5.0,  # a short answer, so close() never waits long for this thread
        )
        consumer = Consumer(reader_config(self.bootstrap, f"salts-{os.getpid()}-{id(self)}"))
        consumer.assign([TopicPartition(self.topic, 0, 0)])
        self._consumer = consumer

    def _wanted(self) -> list[dt.date]:
        now = self.now()
        days = [now.date()]
        if now.time() >= PROPOSE_TOMORROW_AFTER:
            days.append(now.date() + dt.timedelta(days=1))
        return days

    def _propose_missing(self) -> None:
        """Write a random nonce for each wanted day not known yet (the first one wins)."""
        self._read(0.5)
        missing = [day for day in self._wanted() if day not in self._salts]
        if not missing:
            return
        producer = Producer(durable_producer_config(self.bootstrap))
        for day in missing:
            producer.produce(
                self.topic, key=day.isoformat().encode(), value=os.urandom(NONCE_BYTES)
            )
        if producer.flush(10):
            raise ServiceUnavailableError(f"a nonce was not acknowledged by {self.topic}")
        deadline = time.monotonic() + 10
        while any(day not in self._salts for day in missing) and time.monotonic() < deadline:
            self._read(0.2)

    def _read(self, timeout_s: float) -> None:
        """Take every record available now; the first nonce of a day is the day's."""
        assert self._consumer is not None
        for message in self._consumer.consume(1_000, timeout_s):
            if message.error() is not None:
                continue
            try:
                day = dt.date.fromisoformat((message.key() or b"").decode())
            except ValueError:
                continue  # not a nonce of ours: ignored, never a salt
            value = message.value()
            if not value or len(value) != NONCE_BYTES:
                continue
            with self._lock:
                self._salts.setdefault(day, salt_of(self.secret, value))

    def _forget_old(self) -> None:
        """Salts of days before yesterday leave memory too (Kafka deletes the nonces)."""
        oldest = self.now().date() - dt.timedelta(days=1)
        with self._lock:
            for day in [d for d in self._salts if d < oldest]:
                del self._salts[day]
