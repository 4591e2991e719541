"""Soak: mixed valid and hostile traffic through the whole local pipeline while it is hurt.

Run by hand (not part of ``make test``), with the local stack's Kafka up::

    .venv/bin/python bench/soak.py                 # 10 minutes
    .venv/bin/python bench/soak.py --duration 120  # a quick look

The endpoint, a stream worker and the sink run as the processes ``eventsieve
run`` starts (``ops.pipeline.programs``), on topics, consumer groups
and a database of this run alone, writing to a private ClickHouse server
(the local stack's ``ClickHouseServer`` on ports of its own), so the shared
stack is never touched. During the run each process is killed once with
SIGKILL at a random time and restarted, and ClickHouse is restarted once.

Clients retry on 503, 429 and connection errors with the same request: native
events carry their own ``event_id`` (and time), VibeFollow requests an
``Idempotency-Key``, so a retry never counts twice. Hostile traffic is mixed
in: bots (dropped ``bot``), exact duplicates (dropped ``duplicate``), garbage
bodies, wrong credentials and oversized events (refused, nothing lands).

At the end the accepted events per name and the dropped events per reason in
ClickHouse (``sinks.queries``) must equal what the clients were told was
accepted (2xx), exactly. A retried VibeFollow request whose first attempt was
published before the endpoint died lands as a copy dropped as
``duplicate_idempotency_key``, ranked below the original: those copies are
printed apart and may not exceed the requests retried. Exits 1 on any
difference, on a request given up, or on a process that exited on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from clickhouse_driver import Client
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from eventsieve.config import (
    ClickHouseSettings,
    KafkaSettings,
    PrivacySettings,
    Settings,
    StackSettings,
    load_settings,
    settings_environment,
)
from eventsieve.kafka import ensure_eventsieve_topics, topic_names
from eventsieve.logging import quiet_noisy_loggers
from eventsieve.services import kafka_bootstrap
from ops.pipeline import endpoint_url, programs, wait_for_endpoint
from ops.stack.clickhouse import ClickHouseServer
from ops.supervisor import Program, Supervisor
from schemas.topology import salts_topic
from sinks import queries
from sinks.errors import ClickHouseUnavailableError
from sinks.service import connect

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = {"Authorization": "Bearer demo-public-token"}
SERVER = {"Authorization": "Bearer demo-secret-key"}
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
VALID_NAMES = ("soak view", "soak signup", "soak purchase")
GIVE_UP_S = 180.0  # a request still failing after this long is a failure of the run
COPY_REASON = "duplicate_idempotency_key"


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range."""
    while True:
        port = random.randrange(20_000, 32_000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


# ---------------------------------------------------------------------------
# What the clients were told, and what they expect to land


@dataclass
class Tally:
    """Shared by the client threads: requests, answers and the events they expect."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0  # HTTP attempts, retries included
    by_status: Counter[str] = field(default_factory=Counter)  # final answer of each request
    attempts_by_status: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)  # event name -> count
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> count
    retried: int = 0  # requests that needed more than one attempt
    retried_keyed: int = 0  # ... of them with an Idempotency-Key (copies possible)
    gave_up: int = 0
    unexpected: list[str] = field(default_factory=list)

    def note(self, **changes: Any) -> None:
        with self.lock:
            for name, value in changes.items():
                setattr(self, name, getattr(self, name) + value)


@dataclass(frozen=True)
class Call:
    """One logical request: sent again, identically, until it gets a final answer."""

    label: str
    path: str
    headers: dict[str, str]
    json: Any = None
    content: bytes | None = None
    ok: int = 202  # the status it must end with
    accepted: tuple[str, ...] = ()  # event names it adds when it gets ``ok``
    dropped: tuple[str, ...] = ()  # drop reasons it adds when it gets ``ok``
    keyed: bool = False


def send(http: httpx.Client, call: Call, tally: Tally, stop: threading.Event) -> None:
    """Send ``call`` until a final answer; retry 503/429/connection errors after a pause."""
    started = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        status = "error"
        wait = 0.5
        try:
            response = http.post(
                call.path, json=call.json, content=call.content, headers=call.headers
            )
            status = str(response.status_code)
            if response.status_code in (429, 503):
                wait = float(response.headers.get("retry-after", "1"))
        except httpx.HTTPError:
            response = None
        tally.note(requests=1)
        with tally.lock:
            tally.attempts_by_status[status] += 1
        if response is not None and response.status_code not in (429, 503):
            break
        if time.monotonic() - started > GIVE_UP_S:
            tally.note(gave_up=1)
            with tally.lock:
                tally.by_status["gave up"] += 1
            return
        time.sleep(min(wait, 2.0))
    with tally.lock:
        tally.by_status[status] += 1
        if attempts > 1:
            tally.retried += 1
            tally.retried_keyed += call.keyed
        if response.status_code != call.ok:
            tally.unexpected.append(f"{call.label}: {status} {response.text[:200]}")
            return
        tally.accepted.update(call.accepted)
        tally.dropped.update(call.dropped)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def native_event(name: str, user: str, seq: str) -> dict[str, Any]:
    """A native event with its own id and time: a retry is the same event."""
    return {
        "event_id": str(uuid.uuid4()),
        "name": name,
        "user_id": user,
        "timestamp": now_iso(),
        "properties": {"seq": seq},
    }


def next_calls(rng: random.Random, client: int, n: int) -> list[Call]:
    """The next request(s) of a client: a weighted mix of valid and hostile traffic."""
    user = f"c{client}-u{rng.randrange(50)}"
    seq = f"{client}-{n}"
    name = rng.choice(VALID_NAMES)
    kind = rng.choices(
        ["native", "batch", "vibe", "bot", "duplicate", "garbage", "too-large"],
        weights=[40, 15, 10, 8, 7, 8, 2],
    )[0]
    # Wrong credentials from one client only, ~18 a minute: every client shares
    # 127.0.0.1, and past 60 failures a minute the endpoint answers that address 429.
    if client == 0 and n % 40 == 39:
        kind = "bad-auth"
    headers = {**SERVER, "User-Agent": FIREFOX}
    if kind == "native":
        return [Call(kind, "/v1/events", headers, native_event(name, user, seq), accepted=(name,))]
    if kind == "batch":
        events = [native_event(name, user, f"{seq}-{i}") for i in range(rng.randint(2, 5))]
        body = {"events": events}
        return [Call(kind, "/v1/events", headers, body, accepted=(name,) * len(events))]
    if kind == "vibe":
        body = {"external_user_id": user, "name": "soak vibe", "properties": {"seq": seq}}
        keyed = {**headers, "Idempotency-Key": f"soak-{uuid.uuid4().hex}"}
        return [Call(kind, "/api/v1/events", keyed, body, accepted=("soak vibe",), keyed=True)]
    if kind == "bot":  # a browser token with a crawler's user agent
        bot = {**PUBLIC, "User-Agent": GOOGLEBOT}
        return [Call(kind, "/v1/events", bot, native_event(name, user, seq), dropped=("bot",))]
    if kind == "duplicate":  # the same event twice with other ids: the second is a duplicate
        first = native_event("soak dup", user, seq)
        second = {**first, "event_id": str(uuid.uuid4())}
        return [
            Call(kind, "/v1/events", headers, first, accepted=("soak dup",)),
            Call(kind, "/v1/events", headers, second, dropped=("duplicate",)),
        ]
    if kind == "garbage":
        body = rng.choice([b"{not json", b"\x00\xff" * 50, b'{"name": 5}', b"[]", b""])
        return [Call(kind, "/v1/events", headers, content=body, ok=400)]
    if kind == "bad-auth":
        wrong = {"Authorization": f"Bearer guess-{rng.randrange(10**6)}"}
        return [Call(kind, "/v1/events", wrong, {"name": name}, ok=401)]
    big = native_event(name, user, seq) | {"properties": {"blob": "x" * 600_000}}
    return [Call(kind, "/v1/events", headers, big, ok=413)]


def client_loop(
    client: int, base_url: str, tally: Tally, stop: threading.Event, pause_s: float, seed: int
) -> None:
    rng = random.Random(seed)
    n = 0
    with httpx.Client(base_url=base_url, timeout=15) as http:
        while not stop.is_set():
            for call in next_calls(rng, client, n):
                send(http, call, tally, stop)
            n += 1
            time.sleep(rng.uniform(0, 2 * pause_s))


# ---------------------------------------------------------------------------
# The pipeline under test, its processes and its ClickHouse


class Stage:
    """One pipeline process under its own supervisor, so it can be killed and restarted alone."""

    def __init__(self, program: Program, env: dict[str, str], out: Any) -> None:
        self.program = program
        self.env = env
        self.out = out
        self.supervisor = self._start()
        self.killed_at: float | None = None
        self.unexpected_exits: list[int] = []

    def _start(self) -> Supervisor:
        supervisor = Supervisor([self.program], out=self.out, env=self.env, grace_s=20)
        supervisor.start()
        return supervisor

    @property
    def pid(self) -> int:
        return self.supervisor.children[self.program.name].pid

    def kill9(self) -> None:
        """SIGKILL the process (its whole group) and start it again."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.supervisor.children[self.program.name].wait(30)
        self.killed_at = time.monotonic()
        self.supervisor = self._start()

    def check(self) -> None:
        """Restart the process if it exited on its own, and remember that it did."""
        exited = self.supervisor.exited()
        if exited is not None:
            self.unexpected_exits.append(exited[1])
            self.out.write(f"soak | {self.program.name} exited with {exited[1]}; restarted\n")
            self.supervisor = self._start()

    def stop(self) -> None:
        self.supervisor.stop_all()


def soak_settings(tag: str, workdir: Path, clickhouse_port: int, engine: str) -> Settings:
    base = load_settings(ROOT / "eventsieve.toml")
    prefix = f"soak.{tag}."
    topics = base.topics.model_copy(
        update={n: prefix + f"events.{n}" for n in ("raw", "orders", "clean", "dropped", "dlq")}
    )
    database = f"soak_{tag}"
    return base.model_copy(
        update={
            "kafka": KafkaSettings(bootstrap_servers=kafka_bootstrap(base)),
            "clickhouse": ClickHouseSettings(
                url=f"clickhouse://default:@127.0.0.1:{clickhouse_port}/{database}",
                database=database,
            ),
            "topics": topics,
            "privacy": PrivacySettings(salt_secret=SecretStr(uuid.uuid4().hex * 2)),
            "server": base.server.model_copy(update={"port": free_port(), "access_log": False}),
            "streams": base.streams.model_copy(
                update={"app_id": f"soak-{tag}", "data_dir": workdir / "streams", "engine": engine}
            ),
            "sink": base.sink.model_copy(
                update={"group_id": f"soak-sink-{tag}", "batch_max_interval_s": 0.5}
            ),
        }
    )


def found_counts(settings: Settings, span: queries.TimeRange) -> tuple[Counter[str], Counter[str]]:
    ch = connect(settings)
    try:
        accepted, dropped = queries.decision_counts(ch, "demo", span)
        return Counter(dict(accepted)), Counter(dict(dropped))
    finally:
        ch.close()


def differences(expected: Counter[str], found: Counter[str]) -> dict[str, tuple[int, int]]:
    keys = sorted(set(expected) | set(found))
    return {k: (expected[k], found[k]) for k in keys if expected[k] != found[k]}


def wait_for_counts(
    settings: Settings, span: queries.TimeRange, tally: Tally, timeout: float, check: Callable
) -> tuple[Counter[str], Counter[str]]:
    """Poll ClickHouse until the counts match, or until they stopped changing at the deadline."""
    deadline = time.monotonic() + timeout
    accepted: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    while time.monotonic() < deadline:
        check()
        try:
            accepted, dropped = found_counts(settings, span)
        except ClickHouseUnavailableError:
            time.sleep(1)
            continue
        rest = Counter({k: v for k, v in dropped.items() if k != COPY_REASON})
        if not differences(tally.accepted, accepted) and not differences(tally.dropped, rest):
            time.sleep(5)  # anything counted twice would show up now
            return found_counts(settings, span)
        time.sleep(1)
    return accepted, dropped


def cleanup(settings: Settings) -> None:
    names = topic_names(settings.topics)
    names += [salts_topic(settings.topics.raw)]
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap(settings)})
    app = settings.streams.app_id
    names += [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{app}-")]
    for future in admin.delete_topics(names, operation_timeout=10).values():
        with contextlib.suppress(Exception):
            future.result(timeout=20)


# ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a run measured, for the report."""

    traffic_s: float = 0.0
    settle_s: float = 0.0
    accepted: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    done: list[str] = field(default_factory=list)
    not_done: list[str] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    exits: dict[str, list[int]] = field(default_factory=dict)


def harm_schedule(rng: random.Random, duration: float) -> list[tuple[float, str]]:
    """Each process killed once and ClickHouse restarted once, at random times.

    In the middle 80 % of the run, kept apart (20 s, less for short runs) so
    each recovery is seen on its own.
    """
    actions = ["producer", "worker", "sink", "clickhouse"]
    gap = min(20.0, duration * 0.1)
    times: list[float] = []
    while len(times) < len(actions):
        at = rng.uniform(0.1, 0.9) * duration
        if all(abs(at - t) > gap for t in times):
            times.append(at)
    return sorted(zip(times, rng.sample(actions, len(actions)), strict=True))


def drive(
    args: argparse.Namespace,
    rng: random.Random,
    url: str,
    stages: dict[str, Stage],
    clickhouse: ClickHouseServer,
    tally: Tally,
    outcome: Outcome,
) -> None:
    """Run the clients for the duration, doing the scheduled harm on the way."""
    schedule = harm_schedule(rng, args.duration)
    stop = threading.Event()
    clients = [
        threading.Thread(
            target=client_loop,
            args=(i, url, tally, stop, args.pause, rng.randrange(2**32)),
            daemon=True,
        )
        for i in range(args.clients)
    ]
    started = time.monotonic()
    for thread in clients:
        thread.start()
    last_load = -10.0
    try:
        while (elapsed := time.monotonic() - started) < args.duration:
            for stage in stages.values():
                stage.check()
            if schedule and elapsed >= schedule[0][0]:
                _, what = schedule.pop(0)
                if what == "clickhouse":
                    clickhouse.stop()
                    time.sleep(rng.uniform(5, 15))  # an outage, not a blip
                    clickhouse.start()
                    clickhouse.wait_ready(90)
                    outcome.done.append(f"clickhouse restarted at {elapsed:.0f} s")
                else:
                    stages[what].kill9()
                    outcome.done.append(f"{what} killed -9 at {elapsed:.0f} s and restarted")
                print(f"  {outcome.done[-1]}", flush=True)
            if elapsed - last_load >= 10:
                outcome.loads.append(os.getloadavg()[0])
                last_load = elapsed
                print(
                    f"  {elapsed:4.0f} s: {tally.requests} requests,"
                    f" {sum(tally.accepted.values())} events accepted,"
                    f" load {outcome.loads[-1]:.2f}",
                    flush=True,
                )
            time.sleep(0.5)
    finally:
        stop.set()
        for thread in clients:
            thread.join(GIVE_UP_S + 30)
        outcome.traffic_s = time.monotonic() - started
        outcome.not_done = [what for _, what in schedule]


def report(tag: str, seed: int, tally: Tally, outcome: Outcome) -> bool:
    """Print the figures; True when the run failed."""
    accepted, dropped = outcome.accepted, Counter(outcome.dropped)
    copies = dropped.pop(COPY_REASON, 0)
    print()
    print(f"soak {tag} (seed {seed})")
    print(
        f"duration: {outcome.traffic_s:.0f} s of traffic,"
        f" then {outcome.settle_s:.0f} s until ClickHouse agreed"
    )
    print(f"requests sent (attempts, retries included): {tally.requests}")
    print(f"  attempts by answer: {dict(sorted(tally.attempts_by_status.items()))}")
    print(f"  requests by final answer: {dict(sorted(tally.by_status.items()))}")
    print(f"  accepted (2xx): {sum(n for s, n in tally.by_status.items() if s[0] == '2')}")
    print(f"  rejected: {sum(n for s, n in tally.by_status.items() if s[0] == '4')}")
    print(f"  retried: {tally.retried} ({tally.retried_keyed} with an Idempotency-Key)")
    print(f"  given up: {tally.gave_up}; unexpected answers: {len(tally.unexpected)}")
    for line in tally.unexpected[:10]:
        print(f"    {line}")
    print("events accepted, by name (expected vs found in ClickHouse):")
    for name in sorted(set(tally.accepted) | set(accepted)):
        mark = "" if tally.accepted[name] == accepted[name] else "   <-- differs"
        print(f"  {name:<16} {tally.accepted[name]:>7} {accepted[name]:>7}{mark}")
    print("events dropped, by reason (expected vs found):")
    for reason in sorted(set(tally.dropped) | set(dropped)):
        mark = "" if tally.dropped[reason] == dropped[reason] else "   <-- differs"
        print(f"  {reason:<16} {tally.dropped[reason]:>7} {dropped[reason]:>7}{mark}")
    print(
        f"  copies of retried keyed requests ({COPY_REASON}): {copies}"
        f" (at most {tally.retried_keyed})"
    )
    print(f"kills and restarts: {'; '.join(outcome.done) or 'none'}")
    if outcome.not_done:
        print(f"  not done (run too short): {outcome.not_done}")
    print(f"processes that exited on their own: {outcome.exits or 'none'}")
    if outcome.loads:
        ones = outcome.loads
        print(
            f"load average (1 min): min {min(ones):.2f}, mean {sum(ones) / len(ones):.2f},"
            f" max {max(ones):.2f} on {os.cpu_count()} CPUs"
        )
    failed = bool(
        differences(tally.accepted, accepted)
        or differences(tally.dropped, dropped)
        or copies > tally.retried_keyed
        or tally.gave_up
        or tally.unexpected
        or outcome.exits
        or outcome.not_done
    )
    print("RESULT:", "FAIL" if failed else "OK: every accepted event counted exactly once")
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic")
    parser.add_argument("--clients", type=int, default=4, help="client threads")
    parser.add_argument("--pause", type=float, default=0.1, help="mean pause between requests")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--engine", choices=("kafka", "faust"), default="kafka")
    parser.add_argument(
        "--keep", action="store_true", help="keep the topics, ClickHouse's data and the state"
    )
    args = parser.parse_args()
    quiet_noisy_loggers()  # a refused connection while ClickHouse restarts is expected
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"eventsieve-soak-{tag}-"))
    log = (workdir / "pipeline.log").open("w")
    print(
        f"soak {tag}: seed {seed}, {args.duration:.0f} s, {args.clients} clients, "
        f"{args.engine} engine"
    )
    print(f"  process logs: {log.name}")

    tcp, http_port = free_port(), free_port()
    stack = StackSettings(
        dir=workdir / "clickhouse", clickhouse_port=tcp, clickhouse_http_port=http_port
    )
    clickhouse = ClickHouseServer(stack)
    clickhouse.start()
    clickhouse.wait_ready(90)
    settings = soak_settings(tag, workdir, tcp, args.engine)
    Client(host="127.0.0.1", port=tcp).execute(f"CREATE DATABASE {settings.clickhouse.database}")
    ensure_eventsieve_topics(settings)
    env = {**settings_environment(settings), "EVENTSIEVE_LOG_LEVEL": "WARNING"}
    stages = {p.name: Stage(p, env, log) for p in programs(None)}
    tally, outcome = Tally(), Outcome()
    try:
        wait_for_endpoint(settings, timeout=90)
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
        drive(args, rng, endpoint_url(settings), stages, clickhouse, tally, outcome)
        span = queries.TimeRange(since, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10))

        def check() -> None:
            for stage in stages.values():
                stage.check()

        settling = time.monotonic()
        outcome.accepted, outcome.dropped = wait_for_counts(settings, span, tally, 300, check)
        outcome.settle_s = time.monotonic() - settling
        check()
        outcome.exits = {n: s.unexpected_exits for n, s in stages.items() if s.unexpected_exits}
    finally:
        for stage in stages.values():
            stage.stop()
        log.close()
        clickhouse.stop()
        if not args.keep:  # the process log stays, for a look after the run
            cleanup(settings)
            shutil.rmtree(workdir / "clickhouse", ignore_errors=True)
            shutil.rmtree(workdir / "streams", ignore_errors=True)
    return 1 if report(tag, seed, tally, outcome) else 0


if __name__ == "__main__":
    sys.exit(main())
