"""The SQLite feedback store: idempotent writes, survives a reopen, responses joined on read."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from streams.core.feedback import (
    AlertResponse,
    FeedbackExample,
    empty_state,
    on_event,
    on_score,
    resolve,
)
from streams.sidecar.store import FeedbackStore, StoreThread, read_stores, union
from tests.streams.core.test_feedback import ALERTS, END, LABELS, SETTLES, T0, WINDOW, score


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


def test_the_union_of_several_stores_has_each_example_once_with_every_response(tmp_path: Path):
    """Two sidecars' stores: u2 moved between them (in both); each saw some of its responses."""
    [a] = examples("u1")
    [b] = examples("u2")
    [c] = examples("u3")
    alert = b.heads["intent"].alert_id
    assert alert is not None
    first, second = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    with FeedbackStore(first) as store:
        store.add([a, b], [response("r1", alert, "delivered")])
    with FeedbackStore(second) as store:
        store.add([b, c], [response("r2", alert, "clicked")])
    merged = read_stores([second, first])
    assert sorted(e.example_id for e in merged) == sorted(
        [a.example_id, b.example_id, c.example_id])
    [both] = [e for e in merged if e.example_id == b.example_id]
    assert both.heads["intent"].responses == ["delivered", "clicked"]
    assert union([[a], [a], []]) == [a]


def test_a_store_that_does_not_exist_is_an_error_not_an_empty_union(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"missing\.sqlite does not exist"):
        read_stores([tmp_path / "missing.sqlite"])


def test_the_sidecars_store_thread_writes_off_the_event_loop(tmp_path: Path, monkeypatch):
    """Every call runs on the store's own thread (its connection's), never the loop's; the
    writes are the plain store's, visible to any reader."""
    [a] = examples("u1")
    alert = a.heads["intent"].alert_id
    threads: list[int] = []
    real_add = FeedbackStore.add

    def add(self, *args):
        threads.append(threading.get_ident())
        return real_add(self, *args)

    monkeypatch.setattr(FeedbackStore, "add", add)

    async def use(store: StoreThread) -> tuple[int, int, set[str], dict]:
        new = await store.add([a], [response("r1", alert, "clicked")])
        again = await store.add([a])
        return new, again, await store.stored([a.example_id, "x"]), await store.statuses([alert])

    store = StoreThread(tmp_path / "f.sqlite")
    try:
        new, again, stored, statuses = asyncio.run(use(store))
    finally:
        store.close()
    assert (new, again, stored, statuses) == (1, 0, {a.example_id}, {alert: ["clicked"]})
    assert threading.get_ident() not in threads and len(set(threads)) == 1
    with FeedbackStore(tmp_path / "f.sqlite") as reader:
        assert [e.example_id for e in reader.examples()] == [a.example_id]
