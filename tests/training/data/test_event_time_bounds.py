"""Training builds sessions under the deployment's event-time bounds, as the worker does: a
history from before 2000 trains once MIN_EVENT_TIME allows it, and is refused otherwise."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from tests.training.conftest import WORKER_POLICY
from training.data.windows import sessions_of

JAN_1995_MS = 788_918_400_000


def events_of_1995() -> list[dict]:
    return [{"event_id": f"e{i}", "user_id": "u1", "type": "view", "ts": JAN_1995_MS + i * 1000,
             "item_id": "i1"} for i in range(3)]


def test_a_1995_history_builds_its_session_under_bounds_that_allow_it() -> None:
    policy = dataclasses.replace(WORKER_POLICY, ts_bounds=(JAN_1995_MS - 1, 4_102_444_800_000))
    (session,) = sessions_of(events_of_1995(), policy)
    assert session["n_events"] == 3


def test_the_default_bounds_still_refuse_it() -> None:
    with pytest.raises(ValidationError, match="ts"):
        sessions_of(events_of_1995(), WORKER_POLICY)
