"""The cascade's policy, fitted on validation and measured on test: how often the served
ensemble needs its text network, and what answering without it costs. Pure: arrays in, a
policy and a card section out.

The worker routes each scoring by `streams.core.cascade.route` and, for a cheap answer (`stale`:
kept outputs of an earlier text of the session with the same reading signature; `typical`: no
free text and nothing kept), asks the version's `CascadePolicy` whether the network must run
after all (`wants_network`). The reading signature (`reading_digest`, carried by each window as
`Example.reads`) is a digest of the session's free text and of the sorted set of the kinds of
event it holds: a window whose events since the kept run are more of the kinds already seen,
with no new free text, is stale; a new kind (the first add_to_cart, a purchase) or new free text
runs the network. Here the same happens to a split's windows in order (`simulate`), one session
at a time, keeping per (user, session) the outputs of the last window the network ran on, so
each window's answer is what the served ensemble would have given it:

- where the network ran (route `network`, or a cheap answer the policy sent back): the served
  all-network answer (the stacked heads over its own network outputs, the network's intent type);
- `exact`: the same (the kept outputs were computed from this very text);
- `stale`: the stacked heads over [FEATURES now, the kept outputs] (intent type the kept one);
- `typical`: the stacked heads over [FEATURES now, the version's prototype for the session's
  kinds of event] (intent type the prototype's), where the policy lets them stand
  (`CascadePolicy.typical`; off, or no prototype for these kinds: the network runs). A
  prototype (`prototypes_of`) is the mean of the network's outputs over the validation
  windows without free text holding the same kinds of event (`kinds_mask`). Features-only
  heads (gradient boosting on FEATURES) stood here first: on the simulator they cost strength
  0.045-0.07 ROC-AUC, which no band brought back; the prototypes, ~0.01 before any band.

`fit_cascade` tries a small grid of policies (each with typical answers off, and on where there
are prototypes) on validation and keeps the one with the lowest network share whose per-head
macro-F1 and ROC-AUC stay within `BAR` of the all-network answer; then measures it on test. No
candidate within the bar: no policy (every cheap answer runs the network). The prototypes are
exported only with a policy that lets typical answers stand.

The windows are the split's labelled windows, which training samples per user (at most
`--heldout-windows-per-user`): where a user's windows are thinned out, a network run the worker
would have made between two kept windows is missing, so kept outputs look older and more
readings look changed (new free text, a new kind of event) than live. Both push the network
share up and the cheap answers' quality down: the measured share is an upper estimate where
windows are sampled. On validation the
stacked heads are the exported ones, refitted on that very split: the all-network reference and
the stale answers both come from heads that saw those rows (like for like; test is unseen).
The bar is two-sided, as asked of it: a cascade better than the all-network answer by more than
`BAR` is refused too (it would not be the served model the card measures).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from inference.heads import MODEL_HEADS, STRENGTH_LABELS
from streams.core.alerts import AlertPolicy
from streams.core.cascade import (
    MODE_STALE,
    MODE_TYPICAL,
    WANTED_NO,
    WANTED_NO_POLICY,
    WANTED_REASONS,
    WANTED_TYPICAL_OFF,
    WANTED_UNSEEN,
    CascadePolicy,
    wants_network,
)
from training.evaluate.metrics import (
    best_threshold,
    head_metrics,
    macro_f1_from_predictions,
    predicted_labels,
    ranked_roc_auc,
)
from training.fit.baseline import full_columns
from training.fit.stacking import stack_inputs

Probs = dict[str, np.ndarray]  # head -> [n, classes] (churn [n, 2])
HEADS = tuple(MODEL_HEADS)
STRONG = STRENGTH_LABELS.index("strong")
BAR = 0.005  # |Δ macro-F1| and |Δ ROC-AUC| per head, cascade vs all-network, on validation
# The grid: half-widths of the band around the intent alert threshold on p(strong); of the
# band around the churn threshold(s); the intent-type margin; the refresh bound (0: never).
STRENGTH_HALF_WIDTHS: tuple[float | None, ...] = (None, 0.1, 0.2)
CHURN_HALF_WIDTHS: tuple[float, ...] = (0.05,)
INTENT_MARGINS = (0.0, 0.1)
STRENGTH_MARGINS = (0.0, 0.1, 0.2, 0.3)  # medium vs weak near a tie asks for the network too
REFRESH_EVENTS = (0, 1, 2, 4)  # 1: no stale answer stands (every kept run is older)


@dataclass(frozen=True)
class CascadeRows:
    """One split's windows as the cascade sees them, in the order the worker scores them:
    `sessions[i]` is the session key (None: unknown, so the network runs), `free_texts` the
    free text digests ("" where none), `reads` the reading signatures (`reading_digest`),
    `network` the network's outputs for the window's own text, `served` the all-network served
    answer."""

    sessions: list[tuple[str, str] | None]
    texts: list[str]
    free_texts: list[str]
    reads: list[str]
    kinds: np.ndarray  # `kinds_mask` per window
    n_events: np.ndarray
    triggers: list[str]
    features: np.ndarray
    network: Probs
    served: Probs
    value: np.ndarray | None  # the customer value columns, where the churn head reads them

    def __len__(self) -> int:
        return len(self.texts)

    def steps(self) -> list[list[int]]:
        """Window indices by their position within their session: every session's first
        window, then every second one, ... (a session's windows stay in order), so each step's
        cheap answers can be computed in one batch."""
        position: dict[Any, int] = {}
        out: list[list[int]] = []
        for i, key in enumerate(self.sessions):
            k = position.get(key, 0) if key is not None else 0
            if key is not None:
                position[key] = k + 1
            if k == len(out):
                out.append([])
            out[k].append(i)
        return out


@dataclass(frozen=True)
class Heads:
    """What answers a scoring: the stacked heads as exported (`stack.heads`) and the
    prototypes (str(kinds_mask) -> the network's typical outputs, `prototypes_of`)."""

    stacked: dict[str, Any]
    prototypes: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class RouteOf:
    name: str  # exact, network, stale, typical
    kept: int | None = None  # the window whose network outputs are read (exact, stale)
    events_since: int = 0


@dataclass
class CascadeRun:
    """Per window: the final probabilities, whether the network ran, the route, the events
    since the kept run (stale), and the WANTED_* code of a cheap answer (WANTED_NO elsewhere)."""

    probs: Probs
    ran: np.ndarray
    routes: list[str]
    since: np.ndarray
    wanted: np.ndarray

    @property
    def network_share(self) -> float:
        return float(self.ran.mean()) if len(self.ran) else 0.0


@dataclass
class CascadeFit:
    policy: CascadePolicy | None
    card: dict[str, Any] = field(default_factory=dict)


# --- answers --------------------------------------------------------------------------------


def served_answer(stacked: dict[str, Any], features: np.ndarray, network: Probs,
                  value: np.ndarray | None) -> Probs:
    """The stacker step's answer for rows whose TEXT_* inputs are `network`: its stacked heads
    where exported (churn reading the value columns where it was fitted on them), the
    network's own elsewhere (intent type always), as triton_models/stacker/model.py does."""
    x = stack_inputs(features, network)
    out = {h: np.asarray(network[h], dtype=np.float64) for h in HEADS}
    if "strength" in stacked:
        out["strength"] = full_columns(stacked["strength"], x, len(MODEL_HEADS["strength"]))
    if "churn" in stacked:
        if stacked.get("churn_reads_customer_value"):
            if value is None:
                raise ValueError("the churn head reads customer value columns: none given")
            x = np.hstack([x, np.asarray(value, dtype=np.float64)])
        out["churn"] = full_columns(stacked["churn"], x, 2)
    return out


def prototypes_of(rows: CascadeRows) -> dict[str, dict[str, Any]]:
    """str(kinds_mask) -> the mean of the network's outputs over the windows without free text
    holding those kinds of event, in the stacker's JSON form (heads["prototypes"])."""
    groups: dict[int, list[int]] = {}
    for i, (key, free) in enumerate(zip(rows.sessions, rows.free_texts, strict=True)):
        if key is not None and not free:
            groups.setdefault(int(rows.kinds[i]), []).append(i)
    return {str(mask): {"strength": rows.network["strength"][idx].mean(axis=0).tolist(),
                        "intent_type": rows.network["intent_type"][idx].mean(axis=0).tolist(),
                        "churn": float(rows.network["churn"][idx, 1].mean())}
            for mask, idx in sorted(groups.items())}


def prototype_rows(rows: CascadeRows) -> dict[str, dict[str, int]]:
    """str(kinds_mask) -> {"rows": the windows its prototype is the mean of} (for the card)."""
    counts: dict[str, int] = {}
    for i, (key, free) in enumerate(zip(rows.sessions, rows.free_texts, strict=True)):
        if key is not None and not free:
            counts[str(int(rows.kinds[i]))] = counts.get(str(int(rows.kinds[i])), 0) + 1
    return {mask: {"rows": n} for mask, n in sorted(counts.items())}


def typical_answer(heads: Heads, rows: CascadeRows) -> tuple[Probs, np.ndarray]:
    """The stacker's answer with each window's prototype in place of the network's outputs,
    and which windows have a prototype (the others' answers are meaningless)."""
    known = np.asarray([str(int(k)) in heads.prototypes for k in rows.kinds], dtype=bool)
    network = {h: np.zeros_like(rows.network[h]) for h in HEADS}
    for i in np.flatnonzero(known):
        found = heads.prototypes[str(int(rows.kinds[i]))]
        network["strength"][i] = found["strength"]
        network["intent_type"][i] = found["intent_type"]
        network["churn"][i] = (1 - found["churn"], found["churn"])
    return served_answer(heads.stacked, rows.features, network, rows.value), known


class CheapAnswers:
    """Cheap answers of one split, computed in batches and remembered: a stale answer depends
    only on (the window, the window whose outputs are kept), so the policies tried share them."""

    def __init__(self, rows: CascadeRows, heads: Heads) -> None:
        self.rows, self.heads = rows, heads
        self.typical, self.has_typical = typical_answer(heads, rows)
        self._stale: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def prepare(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Compute the stale answers of (window, kept window) pairs not yet known, in one batch."""
        missing = sorted({p for p in pairs if p not in self._stale})
        if not missing:
            return
        now, kept = (np.asarray(a, dtype=np.int64) for a in zip(*missing, strict=True))
        rows = self.rows
        probs = served_answer(self.heads.stacked, rows.features[now],
                              {h: rows.network[h][kept] for h in HEADS},
                              None if rows.value is None else rows.value[now])
        for n, pair in enumerate(missing):
            self._stale[pair] = {h: probs[h][n] for h in HEADS}

    def stale(self, i: int, kept: int) -> dict[str, np.ndarray]:
        return self._stale[(i, kept)]


# --- the simulation -------------------------------------------------------------------------


def route_of(rows: CascadeRows, i: int, kept: int | None) -> RouteOf:
    """`streams.core.cascade.route` for window i, given the window whose outputs the session
    keeps (None: nothing kept) and one served version throughout: exact where the text is the
    kept run's, stale where the reading signature is, typical where nothing is kept and the
    session holds no free text, else the network."""
    if rows.sessions[i] is None:
        return RouteOf("network")
    if kept is not None and rows.texts[kept] == rows.texts[i]:
        return RouteOf("exact", kept)
    if kept is not None and rows.reads[kept] == rows.reads[i]:
        return RouteOf("stale", kept, max(0, int(rows.n_events[i] - rows.n_events[kept])))
    if kept is None and not rows.free_texts[i]:
        return RouteOf("typical")
    return RouteOf("network")


def simulate(rows: CascadeRows, policy: CascadePolicy | None,
             answers: CheapAnswers) -> CascadeRun:
    """Every window's served answer under the cascade with `policy` (see the module's
    docstring); sessions advance together, one window each per step."""
    n = len(rows)
    final = {h: np.array(rows.served[h], dtype=np.float64, copy=True) for h in HEADS}
    ran = np.zeros(n, dtype=bool)
    wanted = np.full(n, WANTED_NO, dtype=np.int64)
    names = [""] * n
    since = np.zeros(n, dtype=np.int64)
    kept: dict[tuple[str, str], int] = {}
    for step in rows.steps():
        routed = [(i, route_of(rows, i, kept.get(rows.sessions[i])))  # type: ignore[arg-type]
                  for i in step]
        answers.prepare([(i, r.kept) for i, r in routed
                         if r.name == "stale" and r.kept is not None])
        for i, r in routed:
            names[i], since[i] = r.name, r.events_since
            if r.name == "exact":
                continue  # the stacker over outputs of this very text: the served answer
            code = WANTED_NO
            if r.name != "network":
                cheap = _cheap(answers, i, r)
                code = _unseen(policy) if cheap is None else _wanted(policy, r, cheap)
                wanted[i] = code
            if r.name == "network" or code != WANTED_NO:
                ran[i] = True
                if rows.sessions[i] is not None:
                    kept[rows.sessions[i]] = i  # type: ignore[index]
            else:
                for h in HEADS:
                    final[h][i] = cheap[h]  # type: ignore[index]
    return CascadeRun(final, ran, names, since, wanted)


def _cheap(answers: CheapAnswers, i: int, r: RouteOf) -> dict[str, np.ndarray] | None:
    """The cheap answer of a stale or typical route; None for a typical route without a
    prototype for its kinds of event."""
    if r.name == "stale" and r.kept is not None:
        return answers.stale(i, r.kept)
    if r.name == "typical" and answers.has_typical[i]:
        return {h: answers.typical[h][i] for h in HEADS}
    return None


def _unseen(policy: CascadePolicy | None) -> int:
    """A typical route without a prototype, as the stacker answers it."""
    if policy is None:
        return WANTED_NO_POLICY
    return WANTED_UNSEEN if policy.typical else WANTED_TYPICAL_OFF


def _wanted(policy: CascadePolicy | None, r: RouteOf, cheap: dict[str, np.ndarray]) -> int:
    mode = MODE_STALE if r.name == "stale" else MODE_TYPICAL
    return wants_network(policy, mode, r.events_since, [float(p) for p in cheap["strength"]],
                         float(cheap["churn"][1]), [float(p) for p in cheap["intent_type"]])


# --- quality and the choice -----------------------------------------------------------------


def quality(y: dict[str, np.ndarray], probs: Probs,
            churn_threshold: float) -> dict[str, dict[str, float | None]]:
    """Per head, macro-F1 (churn at the served threshold, else argmax) and ROC-AUC, computed as
    training/evaluate/metrics.head_metrics does, fast enough for a grid."""
    out = {}
    for head in HEADS:
        threshold = churn_threshold if head == "churn" else None
        pred = predicted_labels(probs[head], threshold)
        out[head] = {"macro_f1": macro_f1_from_predictions(y[head], pred, len(MODEL_HEADS[head])),
                     "roc_auc": ranked_roc_auc(y[head], probs[head])}
    return out


def deltas(cascade: dict[str, dict[str, float | None]],
           network: dict[str, dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """Cascade minus all-network, per head and metric (None where a metric is undefined)."""
    def minus(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    return {h: {m: minus(cascade[h][m], network[h][m]) for m in ("macro_f1", "roc_auc")}
            for h in cascade}


def within_bar(delta: dict[str, dict[str, float | None]], bar: float = BAR) -> bool:
    return all(abs(d) <= bar for row in delta.values() for d in row.values() if d is not None)


def worst(delta: dict[str, dict[str, float | None]]) -> float:
    return max((abs(d) for row in delta.values() for d in row.values() if d is not None),
               default=0.0)


def candidates(churn_threshold: float, alerts: AlertPolicy | None = None,
               typical: bool = False) -> list[CascadePolicy]:
    """The policies tried: bands around the intent alert threshold on p(strong), around the
    served churn threshold (alone, or spanning it and the churn alert threshold), an intent
    margin, a strength margin, a refresh bound; typical answers off, and also on where
    `typical` (the version has prototypes)."""
    alerts = alerts or AlertPolicy()
    strength = [None] + [_band(alerts.intent_threshold, alerts.intent_threshold, w)
                         for w in STRENGTH_HALF_WIDTHS if w is not None]
    low, high = sorted((churn_threshold, alerts.churn_threshold))
    churn = [None, *(_band(churn_threshold, churn_threshold, w) for w in CHURN_HALF_WIDTHS),
             *(_band(low, high, w) for w in CHURN_HALF_WIDTHS)]
    unique_churn = list(dict.fromkeys(churn))  # the two kinds coincide where the thresholds do
    switch = (False, True) if typical else (False,)
    return [CascadePolicy(s, c, m, r, t, sm) for t, s, c, m, r, sm in
            itertools.product(switch, strength, unique_churn, INTENT_MARGINS, REFRESH_EVENTS,
                              STRENGTH_MARGINS)]


def _band(low: float, high: float, half_width: float) -> tuple[float, float]:
    return (round(max(0.0, low - half_width), 6), round(min(1.0, high + half_width), 6))


def in_worker_order(users: Sequence[str], window_end: Sequence[int]) -> bool:
    """Whether each user's windows come in event-time order (the order the worker scores)."""
    last: dict[str, int] = {}
    for user, end in zip(users, window_end, strict=True):
        if end < last.get(user, end):
            return False
        last[user] = end
    return True


def worker_order(users: Sequence[str], window_end: Sequence[int]) -> np.ndarray:
    """Row indices in worker order: as given where it holds, else stably by (user, end)."""
    if in_worker_order(users, window_end):
        return np.arange(len(users))
    return np.asarray(sorted(range(len(users)), key=lambda i: (users[i], window_end[i])))


def rows_of(examples: Sequence[Any], features: np.ndarray, network: Probs, heads: Heads,
            value: np.ndarray | None) -> CascadeRows:
    """A split's windows (`training.data.windows.Example`s, in worker order) with the
    network's outputs for their texts; a window without a session id or reading signature
    (built elsewhere than from the worker's sessions) is routed to the network."""
    network = {h: np.asarray(p, dtype=np.float64) for h, p in network.items()}
    return CascadeRows(
        sessions=[(x.user_id, x.session_id) if x.session_id and x.reads else None
                  for x in examples],
        texts=[x.text for x in examples],
        free_texts=[x.free_text for x in examples],
        reads=[x.reads for x in examples],
        kinds=np.asarray([x.kinds for x in examples], dtype=np.int64),
        n_events=np.asarray([x.n_events for x in examples], dtype=np.int64),
        triggers=[x.trigger for x in examples],
        features=np.asarray(features, dtype=np.float64),
        network=network,
        served=served_answer(heads.stacked, features, network, value),
        value=value,
    )


def choose(answers: CheapAnswers, y: dict[str, np.ndarray],
           churn_threshold: float) -> tuple[CascadePolicy | None, dict[str, Any]]:
    """The candidate with the lowest network share within the bar on these rows (ties: the
    smaller worst |Δ|, then the grid's order), and what the search saw."""
    rows = answers.rows
    reference = quality(y, rows.served, churn_threshold)
    best: tuple[float, float, int] | None = None
    chosen = None
    tried = within = 0
    closest: tuple[float, float, int] | None = None
    closest_doc: dict[str, Any] = {}
    for n, policy in enumerate(candidates(churn_threshold,
                                          typical=bool(answers.heads.prototypes))):
        run = simulate(rows, policy, answers)
        tried += 1
        delta = deltas(quality(y, run.probs, churn_threshold), reference)
        if closest is None or (worst(delta), run.network_share, n) < closest:
            closest = (worst(delta), run.network_share, n)
            closest_doc = {"policy": policy.to_json(), "network_share": run.network_share,
                           "deltas": delta}
        if not within_bar(delta):
            continue
        within += 1
        key = (run.network_share, worst(delta), n)
        if best is None or key < best:
            best, chosen = key, policy
    # The candidate nearest the all-network answer: what the bar refused, where it refused all.
    return chosen, {"candidates": tried, "within_bar": within, "closest": closest_doc}


def measure(answers: CheapAnswers, y: dict[str, np.ndarray], policy: CascadePolicy | None,
            churn_threshold: float, alerts: AlertPolicy | None = None) -> dict[str, Any]:
    """The cascade with `policy` on a split: network share (overall, by route, by trigger,
    and without a policy: only exact re-scores skip the network), per head metrics of the
    cascade and of the all-network answer with their differences, and how many alerts flip."""
    alerts = alerts or AlertPolicy()
    rows = answers.rows
    run = simulate(rows, policy, answers)
    floor = simulate(rows, None, answers)
    per_head = {}
    for head in HEADS:
        threshold = churn_threshold if head == "churn" else None
        cascade = head_metrics(y[head], run.probs[head], MODEL_HEADS[head], threshold=threshold)
        network = head_metrics(y[head], rows.served[head], MODEL_HEADS[head],
                               threshold=threshold)
        per_head[head] = {"cascade": _headline(cascade), "all_network": _headline(network),
                          **{f"delta_{m}": _minus(cascade[m], network[m])
                             for m in ("macro_f1", "roc_auc")}}
    return {
        "windows": len(rows),
        "network_share": run.network_share,
        "network_share_without_policy": floor.network_share,
        "by_route": _shares(run.routes, run.ran),
        "by_trigger": _shares(rows.triggers, run.ran),
        "why_network": _reasons(run),
        "heads": per_head,
        "alert_flips": {
            "intent": _flips(run.probs["strength"][:, STRONG],
                             rows.served["strength"][:, STRONG], alerts.intent_threshold),
            "churn": _flips(run.probs["churn"][:, 1], rows.served["churn"][:, 1],
                            alerts.churn_threshold)},
    }


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {m: metrics[m] for m in ("macro_f1", "roc_auc")}


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _shares(groups: Sequence[str], ran: np.ndarray) -> dict[str, dict[str, float]]:
    """Per group: its windows, and the share of them on which the network ran."""
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(groups)):
        rows = np.asarray([g == name for g in groups])
        out[name] = {"windows": int(rows.sum()), "network_share": float(ran[rows].mean())}
    return out


def _reasons(run: CascadeRun) -> dict[str, int]:
    """Windows on which the network ran, by why: a changed reading (new free text or a new
    kind of event since the kept run, or an unknown session), or the WANTED_* reason of a
    cheap answer sent back (typical_off: a typical row under a policy with typical=False)."""
    out = {"new_reading": sum(1 for r in run.routes if r == "network")}
    for code, reason in WANTED_REASONS.items():
        count = int(((run.wanted == code) & run.ran).sum())
        if reason and count:
            out[reason] = count
    return out


def _flips(cascade: np.ndarray, network: np.ndarray, threshold: float) -> dict[str, Any]:
    """Windows whose alert decision (p >= threshold) differs between cascade and all-network."""
    differ = (cascade >= threshold) != (network >= threshold)
    return {"threshold": threshold, "windows": int(differ.sum()),
            "share": float(differ.mean()) if len(differ) else 0.0}


def fit_cascade(rows: dict[str, CascadeRows], y: dict[str, dict[str, np.ndarray]],
                heads: Heads, churn_threshold: float | None = None,
                sorted_splits: Sequence[str] = ()) -> CascadeFit:
    """The policy chosen on rows["validation"], measured on rows["test"] (`y` the label
    indices per split and head). `churn_threshold`: the served one (None: chosen on the
    validation split's all-network answer, as the stacking module does). On one OpenMP
    thread, as the stacking module's fits: its many small predictions mostly wait on threads."""
    with threadpool_limits(limits=1, user_api="openmp"):
        return _fit_cascade(rows, y, heads, churn_threshold, sorted_splits)


def _fit_cascade(rows: dict[str, CascadeRows], y: dict[str, dict[str, np.ndarray]],
                 heads: Heads, churn_threshold: float | None,
                 sorted_splits: Sequence[str]) -> CascadeFit:
    val = CheapAnswers(rows["validation"], heads)
    test = CheapAnswers(rows["test"], heads)
    if churn_threshold is None:
        churn_threshold = best_threshold(y["validation"]["churn"],
                                         val.rows.served["churn"][:, 1])
    policy, search = choose(val, y["validation"], churn_threshold)
    card: dict[str, Any] = {
        "policy": None if policy is None else policy.to_json(),
        "chosen_on": "validation",
        "bar": {"per_head": list(HEADS), "max_abs_delta_macro_f1": BAR,
                "max_abs_delta_roc_auc": BAR, "versus": "the all-network served answer"},
        "churn_threshold": churn_threshold,
        "search": search,
        "prototypes": {mask: found["rows"] for mask, found in
                       prototype_rows(rows["validation"]).items()},
        "windows_sorted": list(sorted_splits),
        "note": "windows sampled per user: the share is an upper estimate (module docstring)",
        "validation": measure(val, y["validation"], policy, churn_threshold),
        "test": measure(test, y["test"], policy, churn_threshold),
    }
    if policy is None:
        card["why"] = (f"no candidate kept every head within {BAR} of the all-network answer "
                       "on validation: no policy, every cheap answer runs the network")
    return CascadeFit(policy, card)
