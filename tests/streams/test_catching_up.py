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
        return [len(b) async for b in catching_up(ready(batches), max_events, catch_up)]
    return asyncio.run(collect())


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
