"""The broker-free middle of the pipeline: a planned batch → scores → alerts.

The live worker (`streams/worker/agent.py`) and replay/backtests call these same functions; only
where state is kept, where records go and where the numbers are counted differs (Faust tables,
topics and the worker's metrics; or memory and no metrics: `ScoringMetrics` is injected).

Scoring never drops a session and never stalls on one: an unreachable or timed-out Triton is
retried with capped backoff for as long as it takes; an answer about the texts themselves (the
model rejected a request, or returned a wrong shape or non-finite numbers) is narrowed down by
splitting the batch, and a text that still fails after `max_attempts` tries is reported as
failed (the worker dead-letters its session as `scoring_failed`) so its partition goes on.

The cascade (streams/core/cascade.py) decides per scoring whether the text network runs: the
whole ensemble where the session's reading (its free text, the kinds of event it holds) changed
since the network last read it; else the ensemble's last step alone
(`TritonScorer.score_stacked`, sent first), with the network outputs kept with the session or,
where there are none, the version's typical outputs; a cheap answer the version's policy sends
back (a band, a refresh bound) joins the one network round. The network outputs a run returns
come back with its record (`ScoredPlan.network`) to be kept with the session. Every path
retries and narrows down the same way; the record says whether the network ran (`network`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from inference.client import NetworkOutputs, ScoringError, TritonScorer
from inference.heads import Prediction
from streams.core.alerts import Alert, AlertPolicy, AlertState, alerts_for
from streams.core.batching import BatchPlan, ToScore, can_reuse, keep_network
from streams.core.cascade import WANTED_REASONS, Route, kept_of, route
from streams.core.records import IntentScore, intent_score, prediction_id
from streams.core.sessions import KeptNetwork, UserState, render, text_digest

log = structlog.get_logger("intentstream.scoring")


def _ignore(*_: object) -> None:
    return None


@dataclass(frozen=True)
class ScoringMetrics:
    """Where scoring reports its numbers: the worker's registry, or nowhere (replay)."""

    texts: Callable[[int], None] = _ignore  # texts in one scored plan
    triton_seconds: Callable[[float], None] = _ignore  # one successful scoring call
    retry: Callable[[], None] = _ignore  # one failed call that is tried again
    failed: Callable[[int], None] = _ignore  # texts given up on
    # (trigger, texts): texts sent to Triton's full ensemble per scoring trigger, so the
    # Triton calls a silence score costs can be read off (docs/silence.md)
    by_trigger: Callable[[str, int], None] = _ignore
    # (trigger, rows): scorings the stacker alone answered (kept network outputs, or the
    # version's typical ones)
    stacker_only: Callable[[str, int], None] = _ignore
    # (route, rows): the cascade's routes (streams/core/cascade.py): exact, stale, typical,
    # network; a cheap answer sent back to the network counts as its reason (band, refresh,
    # no_policy, typical_off, unseen_kinds)
    route: Callable[[str, int], None] = _ignore


NO_METRICS = ScoringMetrics()


@dataclass(frozen=True)
class ScoredPlan:
    """A plan's scores, in plan order, and the sessions the model could not score."""

    records: list[IntentScore]
    scored: list[ToScore]  # the plan items `records` are for, same order
    failed: list[tuple[ToScore, str]]  # (item, the last error) after max_attempts tries
    # per record: the network outputs its network run gave, to keep with the session (None:
    # the network did not run, or the ensemble does not expose them)
    network: list[KeptNetwork | None] = field(default_factory=list)


# Scores the rows at the given indices, in order (a Triton call), or raises ScoringError.
RowCall = Callable[[list[int]], Awaitable[Sequence[Prediction]]]


async def score_isolating(
    scorer: TritonScorer,
    texts: Sequence[str],
    retry_max_s: float,
    max_attempts: int = 3,
    observe: ScoringMetrics = NO_METRICS,
    first_delay_s: float = 0.5,
    features: Sequence[Sequence[float]] | None = None,
) -> tuple[list[Prediction | None], dict[int, str]]:
    """Predictions for `texts` (None where given up) and the errors of those given up on."""

    async def call(indices: list[int]) -> Sequence[Prediction]:
        return await scorer.score([texts[i] for i in indices],
                                  None if features is None else [features[i] for i in indices])

    return await isolate_rows(call, len(texts), retry_max_s, max_attempts, observe,
                              first_delay_s)


async def stack_isolating(
    scorer: TritonScorer,
    network: Sequence[NetworkOutputs],
    features: Sequence[Sequence[float]],
    retry_max_s: float,
    max_attempts: int = 3,
    observe: ScoringMetrics = NO_METRICS,
    first_delay_s: float = 0.5,
    cascade: Sequence[tuple[int, int, int]] | None = None,
) -> tuple[list[Prediction | None], dict[int, str]]:
    """`score_isolating` for rows whose network outputs are kept (or, with the cascade's
    modes, absent): the stacker alone."""

    async def call(indices: list[int]) -> Sequence[Prediction]:
        if cascade is None:
            return await scorer.score_stacked([network[i] for i in indices],
                                              [features[i] for i in indices])
        return await scorer.score_stacked([network[i] for i in indices],
                                          [features[i] for i in indices],
                                          [cascade[i] for i in indices])

    return await isolate_rows(call, len(network), retry_max_s, max_attempts, observe,
                              first_delay_s)


async def isolate_rows(
    call: RowCall, n: int, retry_max_s: float, max_attempts: int = 3,
    observe: ScoringMetrics = NO_METRICS, first_delay_s: float = 0.5,
) -> tuple[list[Prediction | None], dict[int, str]]:
    """Predictions for rows 0..n-1 (None where given up) and the errors of those given up on:
    an outage retried with capped backoff, a rejected row isolated and tried `max_attempts`."""
    results: list[Prediction | None] = [None] * n
    attempts = [0] * n
    given_up: dict[int, str] = {}
    todo = list(range(n))
    delay = first_delay_s
    outages = 0  # calls the server could not answer, in a row
    while todo:
        try:
            failed = await _score_narrowing(call, todo, results, observe)
        except ScoringError as exc:  # transient: the server, not the texts
            observe.retry()
            outages += 1
            log.warning("triton.retry", attempt=outages, delay_s=delay, texts=len(todo),
                        error=str(exc)[:300])
            todo = [i for i in todo if results[i] is None]
            await asyncio.sleep(delay)
            delay = min(delay * 2, retry_max_s)
            continue
        outages = 0
        todo = []
        for i, error in failed.items():
            attempts[i] += 1
            if attempts[i] >= max_attempts:
                given_up[i] = error
            else:
                todo.append(i)
        if todo:
            observe.retry()
            log.warning("triton.text_rejected", delay_s=delay, texts=len(todo),
                        error=failed[todo[0]][:300])
            await asyncio.sleep(delay)
            delay = min(delay * 2, retry_max_s)
    if given_up:
        observe.failed(len(given_up))
    return results, given_up


async def _score_narrowing(
    call: RowCall, indices: list[int], results: list[Prediction | None],
    observe: ScoringMetrics,
) -> dict[int, str]:
    """Score `indices` into `results`; halve a batch the model rejects, down to single rows.
    Returns the single rows that failed; a transient error propagates."""
    started = time.perf_counter()
    try:
        predictions = await call(indices)
    except ScoringError as exc:
        if exc.transient:
            raise
        if len(indices) == 1:
            return {indices[0]: str(exc)}
        middle = len(indices) // 2
        halves = (indices[:middle], indices[middle:])
        failed = await _score_narrowing(call, halves[0], results, observe)
        return failed | await _score_narrowing(call, halves[1], results, observe)
    observe.triton_seconds(time.perf_counter() - started)
    for i, prediction in zip(indices, predictions, strict=True):
        results[i] = prediction
    return {}


class HasToScore(Protocol):
    """A planned batch (`BatchPlan`) or a timer plan (`streams.core.silence.TimerPlan`)."""

    @property
    def to_score(self) -> list[ToScore]: ...


async def score_plan(
    scorer: TritonScorer,
    plan: BatchPlan | HasToScore,
    max_chars: int,
    retry_max_s: float,
    clock: Callable[[], float] = time.time,
    *,
    max_attempts: int = 3,
    observe: ScoringMetrics = NO_METRICS,
    cascade: bool = True,
) -> ScoredPlan:
    """One score record per session the plan marked that the model could score, in plan
    order. Each item takes its cascade route (streams/core/cascade.py): the stacker alone
    where the network need not read the text (the cheap stage, sent first), then the whole
    ensemble for the items that must run the network and the cheap answers the served
    version's policy sends back, in one round. `cascade=False`, or a served stacker without
    the cheap stage: only silence re-scores of an unchanged text skip the network."""
    if not plan.to_score:
        return ScoredPlan([], [], [])
    items = plan.to_score
    texts = [render(item.session, max_chars) for item in items]
    routes = await _routes(scorer, items, texts, cascade)
    cheap = [i for i, r in enumerate(routes) if r.name != "network"]
    full = [i for i, r in enumerate(routes) if r.name == "network"]
    started = time.perf_counter()
    # The cheap stage first (the stacker alone: milliseconds), so the answers it sends back
    # join the one network round instead of waiting for a second.
    answers = await _score_cheap(scorer, items, routes, cheap, retry_max_s, max_attempts,
                                 observe)
    _count_routes(observe, items, routes, cheap, answers)
    wanted = [i for i, p in answers.items() if getattr(p, "wanted", 0)]
    network_rows = set(full + wanted)
    ran = await _score_full(scorer, items, texts, sorted(network_rows), retry_max_s,
                            max_attempts, observe)
    predictions: dict[int, Prediction] = {**answers, **ran}
    errors = {**answers.errors, **ran.errors}
    latency_ms = (time.perf_counter() - started) * 1000
    now_ms = int(clock() * 1000)
    out = ScoredPlan([], [], [])
    for i, (item, text) in enumerate(zip(items, texts, strict=True)):
        prediction = predictions.get(i)
        if prediction is None or i in errors:
            continue
        network = i in network_rows or _reproduces(routes[i], item, prediction)
        out.records.append(intent_score(item.session, item.closed, text, prediction,
                                        latency_ms, now_ms, item.features, item.trigger,
                                        item.as_of, item.silence_days, network=network))
        out.scored.append(item)
        out.network.append(_kept(prediction, text, item) if i in network_rows else None)
    out.failed.extend((items[i], error) for i, error in sorted(errors.items()))
    return out


class _Part(dict[int, Prediction]):
    """Predictions of one scoring call by item index, and the errors of items given up on."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: dict[int, str] = {}

    @classmethod
    def of(cls, indices: Sequence[int], results: Sequence[Prediction | None],
           failed: Mapping[int, str]) -> _Part:
        """An `isolate_rows` answer (rows 0..n-1) keyed by the item indices it scored."""
        out = cls()
        for k, i in enumerate(indices):
            if k in failed:
                out.errors[i] = failed[k]
            elif results[k] is not None:
                out[i] = results[k]  # type: ignore[assignment]
        return out


async def _score_full(scorer: TritonScorer, items: Sequence[ToScore], texts: Sequence[str],
                      indices: list[int], retry_max_s: float, max_attempts: int,
                      observe: ScoringMetrics) -> _Part:
    """The whole ensemble for the items at `indices` (the network runs for each)."""
    if not indices:
        return _Part()
    observe.texts(len(indices))
    for trigger, n in Counter(items[i].trigger for i in indices).items():
        observe.by_trigger(trigger, n)
    results, failed = await score_isolating(
        scorer, [texts[i] for i in indices], retry_max_s, max_attempts, observe,
        features=[items[i].features for i in indices])
    return _Part.of(indices, results, failed)


async def _score_cheap(scorer: TritonScorer, items: Sequence[ToScore], routes: Sequence[Route],
                       indices: list[int], retry_max_s: float, max_attempts: int,
                       observe: ScoringMetrics) -> _Part:
    """The stacker alone for the items at `indices`: kept network outputs (exact, stale) or
    none (typical: the version's prototype stands in); with the cascade's modes where any
    route is not exact."""
    if not indices:
        return _Part()
    network = [_network_of(routes[i]) for i in indices]
    cascade = ([routes[i].cascade_row for i in indices]
               if any(routes[i].name != "exact" for i in indices) else None)
    results, failed = await stack_isolating(
        scorer, network, [items[i].features for i in indices], retry_max_s, max_attempts,
        observe, cascade=cascade)
    return _Part.of(indices, results, failed)


def _count_routes(observe: ScoringMetrics, items: Sequence[ToScore], routes: Sequence[Route],
                  cheap: list[int], answers: Mapping[int, Prediction]) -> None:
    """Metrics: cheap answers that stood per trigger, and every route taken (a cheap answer
    sent back to the network counts as its WANTED reason)."""
    stood = [i for i in cheap if i in answers and not getattr(answers[i], "wanted", 0)]
    for trigger, n in Counter(items[i].trigger for i in stood).items():
        observe.stacker_only(trigger, n)
    names = Counter(
        WANTED_REASONS.get(getattr(answers.get(i), "wanted", 0), "") or r.name
        for i, r in enumerate(routes))
    for name, n in names.items():
        observe.route(name, n)


async def _routes(scorer: TritonScorer, items: Sequence[ToScore], texts: Sequence[str],
                  cascade: bool) -> list[Route]:
    """Each item's cascade route; every item runs the network where the served version is
    unknown. Without the cascade: only `can_reuse` silence re-scores skip it."""
    if not cascade and not any(item.kept is not None for item in items):
        return [Route("network")] * len(items)  # no Triton question asked
    try:
        served = await scorer.network_version()
        cascade = cascade and await scorer.cascades()
    except ScoringError as exc:  # unknown now: run the network, as before kept outputs
        log.warning("triton.network_version_unknown", error=str(exc)[:300])
        return [Route("network")] * len(items)
    if not cascade:
        return [Route("exact", item.kept, served=served) if can_reuse(item, text, served)
                else Route("network") for item, text in zip(items, texts, strict=True)]
    return [route(item.session, item.kept, text, served)
            for item, text in zip(items, texts, strict=True)]


def _network_of(chosen: Route) -> NetworkOutputs:
    """The stacker's TEXT_* inputs for a cheap route: the kept outputs, or zeros (typical:
    the stacker puts the version's prototype in their place) under the served version."""
    kept = chosen.kept
    if kept is None:
        return NetworkOutputs((0.0,) * 3, (0.0,) * 6, 0.0, chosen.served or 0)
    return NetworkOutputs(tuple(kept["strength"]), tuple(kept["intent_type"]), kept["churn"],
                          kept["version"])


def _kept(prediction: Prediction, text: str, item: ToScore) -> KeptNetwork | None:
    """What to keep of a network run: its outputs, the text's digest, what it read and the
    prediction it made (None: the ensemble does not expose them)."""
    network: NetworkOutputs | None = getattr(prediction, "network", None)
    if network is None:
        return None
    kept = kept_of({"version": network.version, "digest": text_digest(text),
                    "strength": list(network.strength),
                    "intent_type": list(network.intent_type), "churn": network.churn},
                   item.session)
    kept["prediction_id"] = prediction_id(item.session, prediction.model_version, item.trigger,
                                          item.as_of)
    return kept


def _reproduces(chosen: Route, item: ToScore, prediction: Prediction) -> bool:
    """An exact route re-scoring the very prediction whose network run its kept outputs came
    from (a batch redelivered after those outputs were written): the first delivery said
    `network: true`, and the same id carries the same content."""
    return (chosen.name == "exact" and chosen.kept is not None
            and chosen.kept.get("prediction_id") == prediction_id(
                item.session, prediction.model_version, item.trigger, item.as_of))


def keep_outputs(scored: ScoredPlan, states: Mapping[str, UserState]) -> set[str]:
    """Keep the network outputs of a plan's network runs with the session scored, in the
    state about to be written (in place): what the session's later scores (the cascade) and
    silence re-scores reuse. The users whose state now keeps new outputs."""
    users = set()
    for item, kept in zip(scored.scored, scored.network, strict=True):
        user = item.session["user_id"]
        state = states.get(user)
        if kept is not None and state is not None:
            keep_network(state, item.session, kept)
            users.add(user)
    return users


NOT_READ_BY_ALERTS = {"text", "features"}  # the bulk of a record: not dumped per score


def decide_alerts(
    scored: Sequence[ToScore],
    records: Sequence[IntentScore],
    load_state: Callable[[str], AlertState | None],
    policy: AlertPolicy,
) -> tuple[list[Alert], dict[str, AlertState]]:
    """Alerts for a batch's scores in score order (`scored[i]` is what `records[i]` scored),
    and the alert states that changed."""
    states: dict[str, AlertState] = {}
    changed: dict[str, AlertState] = {}
    alerts: list[Alert] = []
    for item, record in zip(scored, records, strict=True):
        user = record.user_id
        state = states[user] if user in states else (load_state(user) or {})
        raised, states[user] = alerts_for(
            record.model_dump(mode="json", exclude=NOT_READ_BY_ALERTS), item.session, state,
            policy, item.features,
        )
        if raised:
            alerts.extend(raised)
            changed[user] = states[user]
    return alerts, changed
