"""The SQLite feedback store: idempotent writes, survives a reopen, responses joined on read."""

from __future__ import annotations

from pathlib import Path

from streams.core.feedback import (
    AlertResponse,
    FeedbackExample,
    empty_state,
    on_event,
    on_score,
    resolve,
)
from streams.sidecar.store import FeedbackStore
from tests.streams.test_feedback import ALERTS, END, LABELS, SETTLES, T0, WINDOW, score


def examples(user: str = "u1", p_strong: float = 0.95) -> list[FeedbackExample]:
    state = empty_state(user, 0)
    for e in WINDOW:
        on_event(state, e)
    on_score(state, score(T0, END, user=user, p_strong=p_strong), ALERTS)
    return resolve(state, END + SETTLES, LABELS).examples


def response(rid: str, alert: str, status: str) -> AlertResponse:
    return AlertResponse(response_id=rid, alert_id=alert, user_id="u1", status=status, ts=END)


def test_examples_are_stored_once_and_survive_a_reopen(tmp_path: Path):
    path = tmp_path / "fb" / "feedback.sqlite"
    [example] = examples()
    with FeedbackStore(path) as store:
        assert store.add([example]) == 1
        assert store.add([example]) == 0  # redelivered: ignored
        assert store.stored([example.example_id, "nope"]) == {example.example_id}
    with FeedbackStore(path) as store:
        assert store.count() == 1
        assert store.examples() == [example]


def test_responses_are_joined_whenever_they_arrive(tmp_path: Path):
    [example] = examples()
    alert = example.heads["intent"].alert_id
    assert alert is not None
    with FeedbackStore(tmp_path / "f.sqlite") as store:
        store.add([], [response("r1", alert, "delivered")])
        store.add([example])
        store.add([], [response("r3", alert, "converted"), response("r2", alert, "clicked"),
                       response("r2", alert, "clicked"), response("rx", "other", "clicked")])
        [stored] = store.examples()
    assert stored.heads["intent"].responses == ["delivered", "clicked", "converted"]
    assert stored.heads["churn"].responses == []


def test_read_filters_for_retraining(tmp_path: Path):
    [a] = examples("u1")
    [b] = examples("u2")
    b = b.model_copy(update={"model_version": 4, "resolved_at": b.resolved_at + 1})
    with FeedbackStore(tmp_path / "f.sqlite") as store:
        store.add([a, b])
        assert [e.user_id for e in store.examples()] == ["u1", "u2"]
        assert [e.user_id for e in store.examples(since=b.resolved_at)] == ["u2"]
        assert [e.user_id for e in store.examples(model_version=3)] == ["u1"]
