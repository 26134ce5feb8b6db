"""Micro-batches grow under backlog (streams.runtime.agent_io.catching_up). Unit test: Faust's
take is stood in for by a list of ready batches."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from streams.runtime.agent_io import catching_up


def events(users: list[str]) -> list[SimpleNamespace]:
    return [SimpleNamespace(message=SimpleNamespace(key=u.encode())) for u in users]


async def ready(batches: list[list[SimpleNamespace]]):
    for batch in batches:
        yield batch


def sizes(batches, max_events: int, catch_up: int) -> list[int]:
    async def collect() -> list[int]:
        return [len(b) async for b in catching_up(ready(batches), max_events, catch_up,
                                                  wait_s=1.0)]
    return asyncio.run(collect())


async def then_stopped(batches: list[list[SimpleNamespace]], resume: asyncio.Event):
    """Faust's take during a rebalance: after these batches nothing comes until `resume`."""
    for batch in batches:
        yield batch
    await resume.wait()
    yield events(["late"])


def test_full_batches_of_few_users_merge_up_to_the_catch_up_bound():
    backlog = [events(["a", "b"] * 5) for _ in range(7)]  # 10 events, 2 users each
    assert sizes(backlog, max_events=10, catch_up=3) == [30, 30, 10]


def test_a_batch_that_was_not_full_ends_the_merge():
    batches = [events(["a"] * 10), events(["a"] * 4), events(["a"] * 10)]
    assert sizes(batches, max_events=10, catch_up=8) == [14, 10]


def test_batches_of_many_users_are_not_merged():
    distinct = [events([f"u{i}-{j}" for j in range(10)]) for i in range(3)]
    assert sizes(distinct, max_events=10, catch_up=8) == [10, 10, 10]
    # ...and a merge stops once half as many users as max_events are in the batch
    mixed = [events(["a"] * 10), events([f"v{j}" for j in range(10)]), events(["a"] * 10)]
    assert sizes(mixed, max_events=10, catch_up=8) == [20, 10]


def test_catch_up_one_leaves_the_batches_as_taken():
    backlog = [events(["a"] * 10) for _ in range(3)]
    assert sizes(backlog, max_events=10, catch_up=1) == [10, 10, 10]


def test_a_full_batch_is_not_held_while_the_input_has_stopped():
    """A rebalance stops the input, then waits for the events in hand to be acked: a merge
    that waited for more would hold them, and the rebalance, for ever."""
    async def run() -> list[int]:
        resume = asyncio.Event()
        merged = catching_up(then_stopped([events(["a"] * 10)], resume), 10, 8, wait_s=0.05)
        first = await asyncio.wait_for(anext(merged), timeout=5)
        resume.set()  # the rebalance is over: the take left waiting goes on
        second = await asyncio.wait_for(anext(merged), timeout=5)
        await merged.aclose()
        return [len(first), len(second)]
    assert asyncio.run(run()) == [10, 1]
