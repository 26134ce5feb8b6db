"""The cascade's simulation routes each window as the worker's `route` would, answers exactly
as the whole ensemble where every cheap answer is sent back, and its fit finds a cheaper policy
within the bar where the features already tell the labels and the typical outputs are right."""

from __future__ import annotations

import random
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from inference.heads import MODEL_HEADS
from streams.core.cascade import (
    MODE_TYPICAL,
    WANTED_NO,
    WANTED_TYPICAL_OFF,
    CascadePolicy,
    free_text_digest,
    kept_of,
    kinds_mask,
    reading_digest,
    route,
    wants_network,
)
from streams.core.clock import SilenceSchedule
from streams.core.features import N_FEATURES
from streams.core.sessions import render, text_digest
from streams.core.silence import TimerPolicy
from tests.training.conftest import WORKER_POLICY
from training.data.simulator import UserHistory
from training.data.windows import examples_of, worker_windows
from training.fit.cascade import (
    BAR,
    CascadeRows,
    CheapAnswers,
    Heads,
    candidates,
    deltas,
    fit_cascade,
    prototypes_of,
    quality,
    rows_of,
    simulate,
    within_bar,
    worker_order,
)
from training.fit.stacking import features_model, stack_inputs

TIMERS = TimerPolicy.of(WORKER_POLICY, SilenceSchedule((1, 3, 7)))
HEADS = tuple(MODEL_HEADS)
EVERYTHING = CascadePolicy(strength_band=(0.0, 1.0), churn_band=(0.0, 1.0))


def random_probs(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {h: rng.dirichlet(np.ones(len(labels)), n) for h, labels in MODEL_HEADS.items()}


def fitted_heads(features: np.ndarray, network: dict[str, np.ndarray],
                 y: dict[str, np.ndarray]) -> Heads:
    """Stacked strength and churn heads over the stacker's x (no prototypes yet)."""
    x = stack_inputs(features, network)
    return Heads({h: LogisticRegression(max_iter=500).fit(x, y[h])
                  for h in ("strength", "churn")})


@pytest.fixture(scope="module")
def worker_rows(histories: list[UserHistory]) -> tuple[CascadeRows, list[Any], Heads]:
    """Every window the worker scores for a few simulated users, with random network outputs
    and heads fitted to random labels (the routes do not depend on them)."""
    windows, users = [], []
    for history in histories[:12]:
        for window in worker_windows(history.events, WORKER_POLICY, TIMERS,
                                     history.observed_until):
            windows.append(window)
            users.append(history.user_id)
    examples = [SimpleNamespace(user_id=user, session_id=w.session["session_id"],
                                text=render(w.session, WORKER_POLICY.max_chars),
                                free_text=free_text_digest(w.session),
                                reads=reading_digest(w.session), kinds=kinds_mask(w.session),
                                n_events=w.session["n_events"], trigger=w.trigger)
                for user, w in zip(users, windows, strict=True)]
    rng = np.random.default_rng(0)
    features = rng.normal(size=(len(examples), N_FEATURES))
    network = random_probs(len(examples), rng)
    y = {h: rng.integers(0, len(labels), len(examples)) for h, labels in MODEL_HEADS.items()}
    heads = fitted_heads(features, network, y)
    assert np.array_equal(worker_order(users, [w.labelled_from for w in windows]),
                          np.arange(len(windows)))  # worker_windows' order is the worker's
    rows = rows_of(examples, features, network, heads, None)
    return rows, windows, Heads(heads.stacked, prototypes_of(rows))


def test_routes_match_the_workers_route(worker_rows: Any) -> None:
    rows, windows, heads = worker_rows
    policy = CascadePolicy(strength_band=(0.3, 0.5), intent_margin=0.05, refresh_events=4)
    run = simulate(rows, policy, CheapAnswers(rows, heads))
    kept: dict[tuple[str, str], Any] = {}  # the worker's kept outputs, per session
    for i, window in enumerate(windows):
        key = rows.sessions[i]
        expected = route(window.session, kept.get(key), rows.texts[i], served_version=1)
        assert run.routes[i] == expected.name, i
        assert run.since[i] == expected.events_since, i
        if run.ran[i]:
            outputs = {"version": 1, "digest": text_digest(rows.texts[i]), "strength": [],
                       "intent_type": [], "churn": 0.0}
            kept[key] = kept_of(outputs, window.session)  # type: ignore[arg-type]
    routes = set(run.routes)
    # Not vacuous: every route occurs, silence re-scores of an unchanged text are exact, an
    # unchanged reading (free text and kinds of event) after a network run is stale, while a
    # new kind of event with the free text unchanged runs the network (the old rule, free text
    # alone, would have called it stale), and nothing kept with no free text is typical.
    assert routes == {"exact", "network", "stale", "typical"}
    exact_silence = new_kind = 0
    for i in range(1, len(windows)):
        previous = i - 1
        if rows.sessions[i] != rows.sessions[previous] or not run.ran[previous]:
            continue
        if rows.texts[i] == rows.texts[previous]:
            assert run.routes[i] == "exact", i
            exact_silence += windows[i].trigger == "silence"
        else:
            same = rows.reads[i] == rows.reads[previous]
            assert run.routes[i] == ("stale" if same else "network"), i
            new_kind += not same and rows.free_texts[i] == rows.free_texts[previous]
    assert exact_silence and new_kind
    for i, name in enumerate(run.routes):
        if name == "typical":  # the session's first network run is yet to come
            assert not rows.free_texts[i]
            assert not any(run.ran[j] for j in range(i) if rows.sessions[j] == rows.sessions[i])


def test_a_policy_without_typical_answers_sends_those_rows_to_the_network(
        worker_rows: Any) -> None:
    rows, _, heads = worker_rows
    answers = CheapAnswers(rows, heads)
    off = simulate(rows, CascadePolicy(), answers)
    on = simulate(rows, CascadePolicy(typical=True), answers)
    typical_off = np.asarray([r == "typical" for r in off.routes])
    assert typical_off.any()
    assert off.ran[typical_off].all()
    assert (off.wanted[typical_off] == WANTED_TYPICAL_OFF).all()
    # With typical answers on (no band), every one stands: the stacker over the prototype.
    typical_on = np.asarray([r == "typical" for r in on.routes])
    assert typical_on.sum() > typical_off.sum()  # the session's later windows stay cheap
    assert not on.ran[typical_on].any() and (on.wanted[typical_on] == WANTED_NO).all()
    i = int(np.flatnonzero(typical_on)[0])
    for head in HEADS:
        assert np.array_equal(on.probs[head][i], answers.typical[head][i]), head
    prototype = heads.prototypes[str(int(rows.kinds[i]))]
    assert np.allclose(on.probs["intent_type"][i], prototype["intent_type"])  # the network's
    assert wants_network(CascadePolicy(), MODE_TYPICAL, 0, [0.5, 0.5, 0.0], 0.5, [1.0, 0.0]) \
        == WANTED_TYPICAL_OFF


def test_prototypes_are_the_networks_mean_outputs_per_kinds_of_event(worker_rows: Any) -> None:
    rows, _, heads = worker_rows
    for mask, prototype in heads.prototypes.items():
        picked = [i for i in range(len(rows)) if str(int(rows.kinds[i])) == mask
                  and not rows.free_texts[i] and rows.sessions[i] is not None]
        assert picked
        assert np.allclose(prototype["strength"], rows.network["strength"][picked].mean(0))
        assert prototype["churn"] == pytest.approx(rows.network["churn"][picked, 1].mean())


def test_candidates_switch_typical_answers_on_only_where_there_are_prototypes() -> None:
    without = candidates(0.5)
    both = candidates(0.5, typical=True)
    assert not any(p.typical for p in without)
    assert len(both) == 2 * len(without)
    assert {p for p in both if not p.typical} == set(without)
    assert {replace(p, typical=False) for p in both if p.typical} == set(without)


def test_bands_covering_everything_make_the_cascade_the_whole_ensemble(worker_rows: Any) -> None:
    rows, _, heads = worker_rows
    run = simulate(rows, EVERYTHING, CheapAnswers(rows, heads))
    assert np.array_equal(run.ran, np.asarray([r != "exact" for r in run.routes]))
    for head in HEADS:
        assert np.array_equal(run.probs[head], rows.served[head]), head
    assert 0 < run.network_share < 1  # exact re-scores never need the network


def test_examples_carry_what_the_cascade_routes_by(histories: list[UserHistory]) -> None:
    history = histories[0]
    windows = worker_windows(history.events, WORKER_POLICY, TIMERS, history.observed_until)
    seen = {(w.session["session_id"], w.session["n_events"], free_text_digest(w.session),
             reading_digest(w.session)) for w in windows}
    examples = examples_of(history, WORKER_POLICY, prefix_share=0.0, rng=random.Random(0),
                           timers=TIMERS)
    assert examples
    assert {(x.session_id, x.n_events, x.free_text, x.reads) for x in examples} <= seen
    assert any(x.free_text for x in examples) and all(x.session_id for x in examples)
    assert all(x.reads for x in examples)


def synthetic_split(n_users: int, seed: int) -> tuple[list[Any], np.ndarray,
                                                      dict[str, np.ndarray]]:
    """Users with sessions of several windows: the first reads a new free text, the rest add
    none (or a session without free text, whose intent type is always the first label: the
    network's typical one); every label is a function of the FEATURES row, intent type of a
    column constant over the session."""
    rng = np.random.default_rng(seed)
    examples, rows = [], []
    for u in range(n_users):
        for s in range(3):
            free = f"ft-{seed}-{u}-{s}" if rng.random() < 0.7 else ""
            intent = rng.normal() if free else -2.0
            for k in range(4):
                row = rng.normal(size=N_FEATURES)
                row[2] = intent
                rows.append(row)
                examples.append(SimpleNamespace(
                    user_id=f"u{seed}-{u}", session_id=f"s{s}", text=f"{free} {k}",
                    free_text=free, reads=f"{free}|view", kinds=1, n_events=k + 1,
                    trigger="event"))
    features = np.asarray(rows)
    y = {"strength": np.digitize(features[:, 0], [-0.6, 0.6]),
         "intent_type": np.digitize(features[:, 2], [-1.0, -0.4, 0.0, 0.4, 1.0]),
         "churn": (features[:, 1] > 0.8).astype(np.int64)}
    return examples, features, y


def features_heads(features: np.ndarray, y: dict[str, np.ndarray]) -> dict[str, Any]:
    return {h: features_model(features, y[h], 0) for h in HEADS}


def test_fit_cascade_finds_a_cheaper_policy_within_the_bar() -> None:
    # The text adds nothing: the network's strength and churn are noise, its intent type the
    # features' own answer; the stacked heads read the FEATURES columns of x alone.
    splits = {name: synthetic_split(30, seed) for name, seed in
              (("train", 1), ("validation", 2), ("test", 3))}
    y = {name: labels for name, (_, _, labels) in splits.items()}
    fitted_on_train = features_heads(splits["train"][1], y["train"])
    stacked = Heads({h: fitted_on_train[h] for h in ("strength", "churn")})
    rng = np.random.default_rng(4)

    def network(name: str) -> dict[str, np.ndarray]:
        probs = random_probs(len(y[name]["churn"]), rng)
        probs["intent_type"] = fitted_on_train["intent_type"].predict_proba(
            np.hstack([splits[name][1], np.zeros((len(y[name]["churn"]), 10))]))
        return probs

    rows = {name: rows_of(splits[name][0], splits[name][1], network(name), stacked, None)
            for name in ("validation", "test")}
    labels = {n: y[n] for n in rows}
    heads = Heads(stacked.stacked, prototypes_of(rows["validation"]))
    fitted = fit_cascade(rows, labels, heads)
    assert fitted.policy is not None
    validation = fitted.card["validation"]
    # Every cheap answer is right here: the cheapest candidate (no band, no refresh, typical
    # answers standing) wins, and only unread free text runs the network.
    unread = validation["by_route"]["network"]["windows"] / validation["windows"]
    assert validation["network_share"] == pytest.approx(unread)
    assert unread < validation["network_share_without_policy"] == 1  # no exact re-scores here
    assert fitted.policy == CascadePolicy(typical=True)
    assert CascadePolicy.from_json(fitted.card["policy"]) == fitted.policy
    assert validation["by_route"]["typical"]["network_share"] == 0
    assert fitted.card["test"]["heads"]["strength"]["delta_macro_f1"] == 0

    # A prototype whose intent type is another label: the typical route is wrong, so
    # whatever policy is chosen sends more to the network, and stays within the bar.
    wrong = {mask: {**found, "intent_type": [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]}
             for mask, found in heads.prototypes.items()}
    worse = Heads(heads.stacked, wrong)
    refitted = fit_cascade(rows, labels, worse)
    if refitted.policy is not None:
        assert not refitted.policy.typical  # wrong typical answers: they are switched off
        threshold = refitted.card["churn_threshold"]
        val = rows["validation"]
        run = simulate(val, refitted.policy, CheapAnswers(val, worse))
        assert run.network_share > validation["network_share"]
        assert within_bar(deltas(quality(labels["validation"], run.probs, threshold),
                                 quality(labels["validation"], val.served, threshold)))
        assert all(abs(row["delta_macro_f1"]) <= BAR
                   for row in refitted.card["validation"]["heads"].values())


def test_windows_out_of_order_are_sorted_per_user_stably() -> None:
    order = worker_order(["b", "a", "b", "a"], [5, 3, 4, 3])
    assert order.tolist() == [1, 3, 2, 0]
    assert worker_order(["b", "a", "b"], [1, 9, 2]).tolist() == [0, 1, 2]
