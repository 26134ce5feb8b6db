"""Training's windows are what the live worker scores: driven through the worker's own batch
planning and timers, one event per micro-batch and every timer fired before the next event,
the worker scores exactly the windows `worker_windows` gives (every session prefix, each
close, each silence milestone), with the same FEATURES rows; silence windows carry FEATURES
as of their milestone and are labelled from after it."""

from __future__ import annotations

import random

import orjson
import pytest

from streams.core.batching import delivered, plan_batch
from streams.core.clock import SilenceSchedule
from streams.core.features import FEATURE_NAMES
from streams.core.raw_message import RawMessage
from streams.core.silence import TimerPolicy, due_at, plan_timers
from streams.core.timeunits import DAY_MS
from tests.training.conftest import WORKER_POLICY
from training.data.simulator import UserHistory
from training.data.windows import examples_of, worker_windows

TIMERS = TimerPolicy.of(WORKER_POLICY, SilenceSchedule((1, 3, 7, 14)))
SILENCE = FEATURE_NAMES.index("silence_days")
SINCE_SEEN = FEATURE_NAMES.index("profile_days_since_first_seen")


def worker_scores(history: UserHistory) -> list[tuple[str, int | None, list[float], int]]:
    """(trigger, as of, FEATURES, events in the session) of every score the worker's code
    produces for this history."""
    table: dict = {}
    user = history.user_id
    out = []

    def record(items) -> None:
        out.extend((i.trigger, i.as_of, list(i.features), i.session["n_events"]) for i in items)

    def run_timers(until: int) -> None:
        for _ in range(1000):
            state = table.get(user)
            due = None if state is None else due_at(state, TIMERS)
            if due is None or due >= until:
                return
            plan = plan_timers([user], table.get, due, TIMERS)
            record(plan.to_score)
            table.update({u: delivered(s) for u, s in plan.states.items()})
        raise AssertionError("timers did not settle")

    for i, doc in enumerate(history.events):
        run_timers(doc["ts"])
        message = RawMessage(user.encode(), orjson.dumps(doc), "ev", 0, i, None)
        plan = plan_batch([message], table.get, WORKER_POLICY, 16_384)
        assert not plan.dead_letters
        record(plan.to_score)
        table.update({u: delivered(s) for u, s in plan.states.items()})
    run_timers(history.observed_until + 1)
    return out


@pytest.fixture
def silent_users(histories: list[UserHistory]) -> list[UserHistory]:
    return [h for h in histories if len(h.sessions) >= 2][:6]


def test_training_windows_are_the_scores_the_worker_produces(silent_users) -> None:
    for history in silent_users:
        windows = worker_windows(history.events, WORKER_POLICY, TIMERS, history.observed_until)
        ours = [(w.trigger, w.as_of, list(w.features), w.session["n_events"]) for w in windows]
        assert ours == worker_scores(history)
        triggers = [w.trigger for w in windows]
        # every prefix: one score per event as it arrives
        assert triggers.count("event") == len(history.events)
        assert triggers.count("session_close") == len(
            {w.session["session_id"] for w in windows})
        assert "silence" in triggers


def test_silence_windows_carry_features_as_of_their_milestone(silent_users) -> None:
    checked = 0
    for history in silent_users:
        windows = worker_windows(history.events, WORKER_POLICY, TIMERS, history.observed_until)
        close = {w.session["session_id"]: w for w in windows if w.trigger == "session_close"}
        for w in (w for w in windows if w.trigger == "silence"):
            days = (w.as_of - w.session["end"]) / DAY_MS
            assert days in TIMERS.schedule.days
            assert w.features[SILENCE] == pytest.approx(days)
            closed = close[w.session["session_id"]].features
            assert w.features[SINCE_SEEN] == pytest.approx(closed[SINCE_SEEN] + days)
            # the session's own columns are the closed session's: only time moved on
            assert w.features[:SINCE_SEEN - 6] == closed[:SINCE_SEEN - 6]
            checked += 1
    assert checked >= 3


def test_silence_examples_are_labelled_from_after_the_milestone(silent_users) -> None:
    for history in silent_users:
        examples = examples_of(history, WORKER_POLICY, prefix_share=0.0,
                               rng=random.Random(0), timers=TIMERS)
        for x in (x for x in examples if x.trigger == "silence"):
            later = [e["ts"] for e in history.events if e["ts"] > x.window_end]
            churn_ms = 7 * DAY_MS  # the default label policy's churn horizon
            assert x.churn == (not later or later[0] > x.window_end + churn_ms)
