from __future__ import annotations

import asyncio

from producers.idempotency import IdempotencyStore, fingerprint, scope_key
from producers.model import Reply

REPLY = Reply(202, b'{"data":{"accepted":true}}')


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(coro):
    return asyncio.run(coro)


def test_replay_conflict_and_expiry():
    clock = Clock()
    store = IdempotencyStore(ttl_s=86_400, clock=clock)
    body = fingerprint(b"{}")

    async def scenario():
        assert (await store.begin("k", body)).state == "new"
        store.complete("k", REPLY)
        replay = await store.begin("k", body)
        assert (replay.state, replay.reply) == ("replay", REPLY)
        assert (await store.begin("k", fingerprint(b"{ }"))).state == "conflict"
        clock.now += 86_399
        assert (await store.begin("k", body)).state == "replay"
        clock.now += 2
        assert (await store.begin("k", body)).state == "new"

    run(scenario())


def test_failure_forgets_the_key():
    store = IdempotencyStore(clock=Clock())

    async def scenario():
        assert (await store.begin("k", b"x")).state == "new"
        store.abandon("k")
        assert (await store.begin("k", b"x")).state == "new"

    run(scenario())


def test_concurrent_repeat_waits_for_the_first():
    store = IdempotencyStore(clock=Clock())

    async def scenario():
        assert (await store.begin("k", b"x")).state == "new"
        waiter = asyncio.create_task(store.begin("k", b"x"))
        await asyncio.sleep(0)
        assert not waiter.done()
        store.complete("k", REPLY)
        assert (await waiter).state == "replay"

    run(scenario())


def test_size_bound_evicts_oldest_completed():
    store = IdempotencyStore(max_keys=2, clock=Clock())

    async def scenario():
        for key in ("a", "b", "c"):
            await store.begin(key, b"x")
            store.complete(key, REPLY)
        await store.begin("d", b"x")
        assert len(store) <= 3
        assert (await store.begin("a", b"x")).state == "new"

    run(scenario())


def test_scope_separates_routes_and_credentials():
    keys = {scope_key("/a", "k1", "x"), scope_key("/b", "k1", "x"), scope_key("/a", "k2", "x")}
    assert len(keys) == 3
