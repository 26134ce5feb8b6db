"""Labels come from after the window: strength and churn read only events with ts > window end.

Leakage checks: rewriting, adding or deleting events inside the window never changes strength
or churn; the same edits after the window do.
"""

from __future__ import annotations

import random

import pytest

from inference.heads import INTENT_TYPE_LABELS
from streams.core.labelling import (
    NEED_PRIORITY,
    PURCHASE,
    LabelPolicy,
    churned,
    intent_strength,
    intent_type,
    label_window,
    message_need,
)
from streams.core.timeunits import DAY_MS, HOUR_MS
from tests.training.conftest import WORKER_POLICY
from training.data.simulator import UserHistory
from training.data.windows import sessions_of

T0 = 1_709_251_200_000
POLICY = LabelPolicy(horizon_ms=24 * HOUR_MS, churn_after_ms=7 * DAY_MS)
END = T0 + HOUR_MS  # window end
FAR = END + 30 * DAY_MS  # everything is resolved by then


def ev(kind: str, ts: int, **extra) -> dict:
    return {"event_id": f"e{ts}-{kind}", "ts": ts, "type": kind, **extra}


WINDOW = [ev("view", T0, page="home"), ev("add_to_cart", T0 + 60_000, item={"id": "a"}),
          ev("view", END, page="cart")]


@pytest.mark.parametrize(
    ("later", "strength", "churn"),
    [
        ([], "weak", True),
        ([ev("view", END + HOUR_MS, page="home")], "weak", False),
        ([ev("add_to_cart", END + 2 * HOUR_MS, item={"id": "a"})], "medium", False),
        ([ev("remove_from_cart", END + 23 * HOUR_MS, item={"id": "a"})], "medium", False),
        ([ev("add_to_cart", END + HOUR_MS, item={"id": "a"}),
          ev("purchase", END + 20 * HOUR_MS, item={"id": "a"})], "strong", False),
        ([ev("purchase", END + 25 * HOUR_MS, item={"id": "a"})], "weak", False),  # too late
        ([ev("view", END + 8 * DAY_MS, page="home")], "weak", True),  # back after D days
    ],
)
def test_labels_from_later_events(later: list[dict], strength: str, churn: bool) -> None:
    labels = label_window(WINDOW, END, later, FAR, POLICY)
    assert (labels.strength, labels.churn) == (strength, churn)


def test_unresolved_until_the_future_is_known_far_enough() -> None:
    assert intent_strength(END, [], END + 23 * HOUR_MS, POLICY.horizon_ms) is None
    assert intent_strength(END, [], END + 24 * HOUR_MS, POLICY.horizon_ms) == "weak"
    # A purchase settles strength at once; any activity settles churn at once.
    buy = [ev("purchase", END + HOUR_MS, item={"id": "a"})]
    assert intent_strength(END, buy, END + 2 * HOUR_MS, POLICY.horizon_ms) == "strong"
    assert churned(END, buy, END + 2 * HOUR_MS, POLICY.churn_after_ms) is False
    assert churned(END, [], END + 6 * DAY_MS, POLICY.churn_after_ms) is None
    assert not label_window(WINDOW, END, [], END + 6 * DAY_MS, POLICY).resolved


def _mutations(window: list[dict], rng: random.Random) -> list[list[dict]]:
    """Edits that stay inside the window: delete, retype, add a purchase, drop everything."""
    lo, hi = window[0]["ts"], window[-1]["ts"]
    return [
        window[1:],
        [{**e, "type": "purchase", "item": {"id": "x"}} for e in window],
        [*window, ev("purchase", rng.randint(lo, hi), item={"id": "x"})],
        [*window, ev("add_to_cart", rng.randint(lo, hi), item={"id": "x"})],
        [],
    ]


def test_in_window_edits_never_change_strength_or_churn(histories: list[UserHistory]) -> None:
    rng = random.Random(0)
    checked = 0
    for h in histories:
        for session in sessions_of(h.events, WORKER_POLICY):
            end = session["end"]
            inside = [e for e in h.events if e["ts"] <= end]
            after = [e for e in h.events if e["ts"] > end]
            want = label_window(session["events"], end, h.events, h.observed_until, POLICY)
            for edited in _mutations(inside, rng):
                # The labeller gets the user's whole (edited) history, window included.
                got = label_window(session["events"], end, edited + after, h.observed_until,
                                   POLICY)
                assert (got.strength, got.churn) == (want.strength, want.churn)
            checked += 1
    assert checked > 200


def test_after_window_edits_do_change_them() -> None:
    base = label_window(WINDOW, END, [], FAR, POLICY)
    bought = label_window(WINDOW, END, [ev("purchase", END + 1, item={"id": "a"})], FAR, POLICY)
    assert (base.strength, base.churn) == ("weak", True)
    assert (bought.strength, bought.churn) == ("strong", False)
    # The same purchase one millisecond inside the window is not a label.
    inside = label_window(WINDOW, END, [ev("purchase", END, item={"id": "a"})], FAR, POLICY)
    assert (inside.strength, inside.churn) == ("weak", True)


@pytest.mark.parametrize(
    ("text", "need"),
    [
        ("My headphones arrived broken. Order 123456.", "complaint"),
        ("Order 1 still hasn't arrived and it's been 9 days.", "complaint"),
        ("Please cancel order 123456.", "request"),
        ("Can you send me an invoice for order 5?", "request"),
        ("Which laptop would you recommend for university?", "advice"),
        ("Should I get the A or the B?", "advice"),
        ("Do you ship to Norway?", "query"),
        ("When will order 5 arrive?", "query"),
        ("Just letting you know I moved, my new address is in my account.", "notice"),
        ("Thanks, the blender arrived today and works great.", "notice"),
    ],
)
def test_message_needs(text: str, need: str) -> None:
    assert message_need(text) == need


@pytest.mark.parametrize(
    ("window", "need"),
    [
        ([ev("view", T0, page="home")], "query"),
        ([ev("search", T0, query="headphones")], "query"),
        ([ev("search", T0, query="best headphones for running")], "advice"),
        ([ev("search", T0, query="best earbuds"), ev("add_to_cart", T0 + 1, item={"id": "a"})],
         "purchase"),
        ([ev("add_to_cart", T0, item={"id": "a"}),
          ev("support_message", T0 + 1, text="Do you ship to Iceland?")], "query"),
        ([ev("review", T0, rating=1, text="Fell apart."),
          ev("support_message", T0 + 1, text="Please cancel order 5.")], "complaint"),
        ([ev("review", T0, rating=5, text="Love it.")], "notice"),
    ],
)
def test_intent_type_is_the_most_explicit_need(window: list[dict], need: str) -> None:
    assert intent_type(window) == need


def test_intent_types_are_the_models_vocabulary() -> None:
    # inference/heads.py is the one source: the labeller may order it, never extend or drop it.
    assert sorted((PURCHASE, *NEED_PRIORITY)) == sorted(INTENT_TYPE_LABELS)
    assert len(NEED_PRIORITY) == len(set(NEED_PRIORITY))


def test_every_simulated_window_gets_a_model_label(histories: list[UserHistory]) -> None:
    seen = {intent_type(session["events"]) for h in histories
            for session in sessions_of(h.events, WORKER_POLICY)}
    assert seen <= set(INTENT_TYPE_LABELS)
    assert len(seen) >= 3  # the simulator exercises more than the fallback
