"""Replay fires the worker's timers: a silent user's session closes on time and gets its silence
milestones, deterministically (real tritonserver, tiny model; issue #24)."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from backtest.cli import replay_main
from backtest.engine import OrderedScorer, Run, replay
from backtest.jobs import engine_config
from backtest.sources import read_file
from streams.core.timeunits import DAY_MS, MINUTE_MS
from streams.settings import Settings
from tests.backtest.fixtures import write_jsonl

pytestmark = pytest.mark.e2e

T0 = 1_767_225_600_000  # 2026-01-01


def event(user: str, n: int, ts: int, kind: str = "view") -> dict:
    return {"event_id": f"{user}-{n}", "user_id": user, "ts": ts, "type": kind,
            "item": {"id": f"sku-{n}", "title": "Talon 22", "category": "outdoor",
                     "price": 120.0}}


def silent_user_and_a_pacer() -> list[dict]:
    """`quiet` browses for two minutes and goes silent; `pacer`'s events move the clock past
    the quiet session's close, then past its 1-, 3- and 7-day milestones."""
    quiet = [event("quiet", 0, T0), event("quiet", 1, T0 + 2 * MINUTE_MS, "add_to_cart")]
    pacer = [event("pacer", n, T0 + round(days * DAY_MS))
             for n, days in enumerate((0.5, 1.1, 3.2, 8.0))]
    return quiet + pacer


def replay_events(tmp_path, events: list[dict], url: str, *, end: int | None = None,
                  timers: bool = True) -> Run:
    path = write_jsonl(tmp_path / "events.jsonl", events)
    config = engine_config(Settings(), 60, start=None, end=end, label_until=None, label=False,
                           timers=timers)

    async def go() -> Run:
        scorer = OrderedScorer(url, model_name="intent", max_batch=64, timeout_s=30)
        try:
            return await replay(read_file(path).messages, scorer, config)
        finally:
            await scorer.close()

    return asyncio.run(go())


def triggers_of(run: Run, user: str) -> list[tuple[str | None, int | None, float | None]]:
    return [(r.trigger, r.as_of, r.silence_days) for r in run.records if r.user_id == user]


def test_a_silent_users_session_closes_on_time_and_gets_each_milestone(tmp_path, triton):
    run = replay_events(tmp_path, silent_user_and_a_pacer(), triton.grpc_url)
    end = T0 + 2 * MINUTE_MS  # the quiet session's last event
    got = triggers_of(run, "quiet")
    # Open scores at its events (one tick each), closed by the clock while silent, then the
    # milestones the pacer's events carried the clock past, each FEATURES as of it.
    assert got == [("event", T0, None), ("event", end, None), ("session_close", end, None),
                   ("silence", end + DAY_MS, 1.0), ("silence", end + 3 * DAY_MS, 3.0),
                   ("silence", end + 7 * DAY_MS, 7.0)]
    silence = [r for r in run.records if r.user_id == "quiet" and r.trigger == "silence"]
    assert len({r.prediction_id for r in silence}) == 3
    assert run.counts["timer_closes"] >= 1 and run.counts["silence_milestones"] >= 3


def test_the_clock_reaches_the_ranges_end(tmp_path, triton):
    events = silent_user_and_a_pacer()[:3]  # the pacer's first event only (half a day in)
    assert [t for t, _, _ in triggers_of(replay_events(tmp_path, events, triton.grpc_url),
                                         "quiet")] == ["event", "event", "session_close"]
    end = T0 + 4 * DAY_MS  # nothing after half a day but the range runs four days
    got = triggers_of(replay_events(tmp_path, events, triton.grpc_url, end=end), "quiet")
    # Only the latest milestone reached at once is scored (a stale "1 day" is no use at 3).
    assert got[-2:] == [("session_close", T0 + 2 * MINUTE_MS, None),
                        ("silence", T0 + 2 * MINUTE_MS + 3 * DAY_MS, 3.0)]


def test_without_timers_sessions_close_only_on_the_users_next_event(tmp_path, triton):
    run = replay_events(tmp_path, silent_user_and_a_pacer(), triton.grpc_url, timers=False)
    assert {t for t, _, _ in triggers_of(run, "quiet")} == {"event"}


def test_replay_with_timers_is_byte_identical_whatever_the_input_order(tmp_path, triton):
    events = silent_user_and_a_pacer()
    rng = random.Random(3)
    for u in range(20):  # more users, closes and milestones to order
        start = T0 + rng.randrange(0, DAY_MS)
        events += [event(f"u{u}", n, start + n * rng.randrange(1, 40) * MINUTE_MS)
                   for n in range(rng.randint(2, 6))]
    shuffled = list(events)
    rng.shuffle(shuffled)
    outputs = []
    for name, source in (("ordered", events), ("shuffled", shuffled)):
        path = write_jsonl(tmp_path / f"{name}.jsonl", source)
        assert replay_main([str(path), "--triton-url", triton.grpc_url, "--out",
                            str(tmp_path / name), "--tick-s", "60", "--no-progress"]) == 0
        outputs.append((tmp_path / name / "predictions.jsonl").read_bytes())
    assert outputs[0] == outputs[1]
    rows = [orjson.loads(line) for line in outputs[0].splitlines()]
    assert {r["trigger"] for r in rows} == {"event", "session_close", "silence"}
    assert all(r["as_of"] is not None for r in rows)
