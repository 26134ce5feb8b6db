"""The cascade's decision rule: which scorings run the text network. Pure.

Sessions are built by `absorb`, as the worker builds them, so the routes are checked on the
sessions the worker will hold: new free text or a new kind of event runs the network, a
session with neither free text nor kept outputs gets the typical outputs for its kinds of
event, and later events that add nothing new reuse the kept outputs (stale) or, for the very
text the network read, give exactly its answer (exact).
"""

from __future__ import annotations

import pytest

from streams.core.cascade import (
    MODE_EXACT,
    MODE_STALE,
    MODE_TYPICAL,
    WANTED_BAND,
    WANTED_NO,
    WANTED_NO_POLICY,
    WANTED_REFRESH,
    WANTED_TYPICAL_OFF,
    CascadePolicy,
    free_text_digest,
    kept_of,
    kinds_mask,
    route,
    wants_network,
)
from streams.core.events import EVENT_TYPES, ShopEvent
from streams.core.sessions import (
    KeptNetwork,
    SessionPolicy,
    UserState,
    absorb,
    empty_state,
    render,
    text_digest,
)
from streams.core.timeunits import HOUR_MS, MINUTE_MS

T0 = 1_767_225_600_000
SESSION = SessionPolicy(gap_ms=30 * MINUTE_MS, max_span_ms=4 * HOUR_MS, max_events=4,
                        max_chars=600)


def send(state: UserState, n: int, kind: str = "view", **extra: object) -> None:
    doc = {"event_id": f"u1-e{n}", "user_id": "u1", "ts": T0 + n * MINUTE_MS, "type": kind,
           **extra}
    if kind == "view":
        doc["item"] = {"id": f"sku-{n}", "title": f"Trail shoe {n}", "price": 50.0 + n}
    absorb(state, ShopEvent.model_validate(doc), SESSION)


def ran(state: UserState, version: int = 3) -> KeptNetwork:
    """What the network kept when it read the open session now."""
    session = state["current"]
    assert session is not None
    text = render(session, SESSION.max_chars)
    return kept_of({"version": version, "digest": text_digest(text), "strength": [0.5, 0.3, 0.2],
                    "intent_type": [1.0, 0, 0, 0, 0, 0], "churn": 0.1}, session)


def route_now(state: UserState, kept: KeptNetwork | None, served: int | None = 3):
    session = state["current"]
    assert session is not None
    return route(session, kept, render(session, SESSION.max_chars), served)


def test_a_session_without_free_text_gets_the_typical_outputs_for_its_kinds_of_event():
    state = empty_state()
    send(state, 0)
    send(state, 1)
    chosen = route_now(state, None)
    assert chosen.name == "typical" and chosen.served == 3
    assert chosen.cascade_row == (MODE_TYPICAL, 0, kinds_mask(state["current"]))
    assert kinds_mask(state["current"]) == 1 << EVENT_TYPES.index("view")
    assert free_text_digest(state["current"]) == ""


def test_new_free_text_runs_the_network_and_events_after_it_reuse_its_outputs():
    state = empty_state()
    send(state, 0)
    send(state, 1, "search", query="waterproof trail shoes")
    assert route_now(state, None).name == "network"
    kept = ran(state)
    assert route_now(state, kept).name == "exact"  # the very text read: its exact answer
    send(state, 2)
    send(state, 3)
    stale = route_now(state, kept)
    assert stale.name == "stale" and stale.kept == kept
    assert stale.cascade_row == (MODE_STALE, 2, 0)
    send(state, 4, "support_message", text="where is my order?")
    assert route_now(state, kept).name == "network"  # a new message: unread free text


def test_a_new_kind_of_event_changes_the_reading_and_runs_the_network():
    state = empty_state()
    send(state, 0, "search", query="tent")
    send(state, 1)
    kept = ran(state)
    send(state, 2)
    assert route_now(state, kept).name == "stale"
    send(state, 3, "add_to_cart", item={"id": "sku-3", "title": "Tent", "price": 99.0})
    assert route_now(state, kept).name == "network"  # a first add_to_cart: intent may turn


def test_free_text_dropped_from_a_bounded_session_changes_what_the_network_would_read():
    state = empty_state()
    send(state, 0, "search", query="tent")
    kept = ran(state)
    for n in range(1, 5):  # max_events=4: the search falls out of the kept events
        send(state, n)
    assert free_text_digest(state["current"]) == ""
    assert route_now(state, kept).name == "network"  # kept outputs of another reading
    assert route_now(state, None).name == "typical"


@pytest.mark.parametrize("change", ["other_version", "unknown_version", "old_kept_outputs"])
def test_outputs_of_another_version_or_without_what_they_read_are_not_reused(change):
    state = empty_state()
    send(state, 0, "search", query="tent")
    kept = ran(state)
    send(state, 1)
    served = {"other_version": 4, "unknown_version": None}.get(change, 3)
    if change == "old_kept_outputs":  # kept before the cascade: no reads, n_events
        kept = {k: v for k, v in kept.items() if k not in ("reads", "n_events")}
    assert route_now(state, kept, served).name == "network"


POLICY = CascadePolicy(strength_band=(0.5, 0.7), churn_band=(0.4, 0.6), intent_margin=0.2,
                       refresh_events=4, typical=True, strength_margin=0.3)


def strength(strong: float, medium: float | None = None) -> list[float]:
    medium = (1 - strong) / 2 if medium is None else medium
    return [strong, medium, 1 - strong - medium]


@pytest.mark.parametrize(("mode", "since", "strong", "churn", "intent", "wanted"), [
    (MODE_EXACT, 99, strength(0.6), 0.5, [0.5, 0.5], WANTED_NO),  # the network's own answer
    (MODE_STALE, 1, strength(0.9), 0.1, [0.9, 0.1], WANTED_NO),
    (MODE_STALE, 4, strength(0.9), 0.1, [0.9, 0.1], WANTED_REFRESH),
    (MODE_TYPICAL, 99, strength(0.9), 0.1, [0.9, 0.1], WANTED_NO),  # no kept outputs to age
    (MODE_TYPICAL, 0, strength(0.6), 0.1, [0.9, 0.1], WANTED_BAND),
    (MODE_STALE, 0, strength(0.9), 0.5, [0.9, 0.1], WANTED_BAND),
    (MODE_STALE, 0, strength(0.9), 0.1, [0.55, 0.45], WANTED_BAND),  # intent types near a tie
    (MODE_STALE, 0, strength(0.1, 0.5), 0.1, [0.9, 0.1], WANTED_BAND),  # medium ~ weak
    (MODE_STALE, 0, strength(0.1, 0.8), 0.1, [0.9, 0.1], WANTED_NO),
])
def test_a_cheap_answer_asks_for_the_network_by_the_policy(mode, since, strong, churn,
                                                          intent, wanted):
    assert wants_network(POLICY, mode, since, strong, churn, intent) == wanted


def test_typical_answers_stand_only_where_the_policy_lets_them():
    off = CascadePolicy(refresh_events=4)
    assert wants_network(off, MODE_TYPICAL, 0, strength(0.9), 0.1, [1.0]) == WANTED_TYPICAL_OFF
    assert wants_network(off, MODE_STALE, 0, strength(0.9), 0.1, [1.0]) == WANTED_NO


def test_a_version_without_a_policy_sends_every_cheap_answer_to_the_network():
    for mode, wanted in ((MODE_STALE, WANTED_NO_POLICY), (MODE_TYPICAL, WANTED_NO_POLICY),
                         (MODE_EXACT, WANTED_NO)):
        assert wants_network(None, mode, 0, strength(0.9), 0.1, [1.0]) == wanted


def test_the_policy_survives_its_json_form():
    assert CascadePolicy.from_json(POLICY.to_json()) == POLICY
    assert CascadePolicy.from_json({}) == CascadePolicy()


def test_the_stackers_copy_of_the_rule_agrees(stacker_code):
    cases = [(mode, since, strong, churn, intent)
             for mode in (MODE_EXACT, MODE_STALE, MODE_TYPICAL) for since in (0, 3, 4, 9)
             for strong in (strength(0.1), strength(0.5), strength(0.6), strength(0.7),
                            strength(0.71), strength(0.1, 0.45), strength(0.1, 0.7))
             for churn in (0.39, 0.4, 0.6, 0.8)
             for intent in ([0.9, 0.1], [0.55, 0.45], [1.0])]
    for policy in (POLICY, CascadePolicy(), CascadePolicy(refresh_events=4), None):
        doc = None if policy is None else policy.to_json()
        for case in cases:
            assert stacker_code.wants_network(doc, *case) == wants_network(policy, *case), case


@pytest.fixture
def stacker_code():
    from training.served import REPOSITORY_TEMPLATE, stacker_code
    return stacker_code(REPOSITORY_TEMPLATE / "missing")
