"""The broker-free middle of the pipeline: a planned batch → scores → alerts.

The live worker (`streams/worker/agent.py`) and replay/backtests call these same functions; only
where state is kept, where records go and where the numbers are counted differs (Faust tables,
topics and the worker's metrics; or memory and no metrics: `ScoringMetrics` is injected).

Scoring never drops a session and never stalls on one: an unreachable or timed-out Triton is
retried with capped backoff for as long as it takes; an answer about the texts themselves (the
model rejected a request, or returned a wrong shape or non-finite numbers) is narrowed down by
splitting the batch, and a text that still fails after `max_attempts` tries is reported as
failed (the worker dead-letters its session as `scoring_failed`) so its partition goes on.

A silence re-score of a text whose network outputs are kept with the session, by the served
intent_bert version, runs only the ensemble's last step (`TritonScorer.score_stacked`: the
kept TEXT_* outputs and the as-of FEATURES); every other scoring runs the whole ensemble, and
the network outputs it returns come back with its record (`ScoredPlan.network`) to be kept.
Both paths retry and narrow down the same way; the record says which ran (`network`).
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
from streams.core.records import IntentScore, intent_score
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
    # (trigger, rows): scorings that ran the stacker alone on kept network outputs
    stacker_only: Callable[[str, int], None] = _ignore


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
) -> tuple[list[Prediction | None], dict[int, str]]:
    """`score_isolating` for rows whose network outputs are kept: the stacker alone."""

    async def call(indices: list[int]) -> Sequence[Prediction]:
        return await scorer.score_stacked([network[i] for i in indices],
                                          [features[i] for i in indices])

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
) -> ScoredPlan:
    """One score record per session the plan marked that the model could score, in plan
    order: the whole ensemble for each, except silence re-scores that `can_reuse` kept
    network outputs (the stacker alone). Both kinds are sent at once: one Triton round."""
    if not plan.to_score:
        return ScoredPlan([], [], [])
    items = plan.to_score
    texts = [render(item.session, max_chars) for item in items]
    reuse = await _reusable(scorer, items, texts)
    reused = set(reuse)
    full = [i for i in range(len(items)) if i not in reused]
    if full:
        observe.texts(len(full))
    for trigger, n in Counter(items[i].trigger for i in full).items():
        observe.by_trigger(trigger, n)
    for trigger, n in Counter(items[i].trigger for i in reuse).items():
        observe.stacker_only(trigger, n)
    started = time.perf_counter()
    ensemble, stacked = await asyncio.gather(
        score_isolating(scorer, [texts[i] for i in full], retry_max_s, max_attempts, observe,
                        features=[items[i].features for i in full]),
        stack_isolating(scorer, [_network_of(items[i]) for i in reuse],
                        [items[i].features for i in reuse], retry_max_s, max_attempts,
                        observe))
    latency_ms = (time.perf_counter() - started) * 1000
    predictions: list[Prediction | None] = [None] * len(items)
    errors: dict[int, str] = {}
    for indices, (results, failed) in ((full, ensemble), (reuse, stacked)):
        for k, i in enumerate(indices):
            predictions[i] = results[k]
            if k in failed:
                errors[i] = failed[k]
    now_ms = int(clock() * 1000)
    out = ScoredPlan([], [], [])
    for i, (item, text, prediction) in enumerate(zip(items, texts, predictions, strict=True)):
        if prediction is None:
            continue
        ran = i not in reused
        out.records.append(intent_score(item.session, item.closed, text, prediction,
                                        latency_ms, now_ms, item.features, item.trigger,
                                        item.as_of, item.silence_days, network=ran))
        out.scored.append(item)
        out.network.append(_kept(prediction, text) if ran else None)
    out.failed.extend((items[i], error) for i, error in sorted(errors.items()))
    return out


async def _reusable(scorer: TritonScorer, items: Sequence[ToScore],
                    texts: Sequence[str]) -> list[int]:
    """Indices of the items whose kept network outputs may stand in for the network."""
    if not any(item.kept is not None for item in items):
        return []  # no Triton question asked: most batches
    try:
        served = await scorer.network_version()
    except ScoringError as exc:  # unknown now: run the network, as before kept outputs
        log.warning("triton.network_version_unknown", error=str(exc)[:300])
        return []
    return [i for i, (item, text) in enumerate(zip(items, texts, strict=True))
            if can_reuse(item, text, served)]


def _network_of(item: ToScore) -> NetworkOutputs:
    """The kept network outputs of an item `can_reuse` chose, as the stacker takes them."""
    kept = item.kept
    assert kept is not None  # can_reuse chose it
    return NetworkOutputs(tuple(kept["strength"]), tuple(kept["intent_type"]), kept["churn"],
                          kept["version"])


def _kept(prediction: Prediction, text: str) -> KeptNetwork | None:
    """What to keep of a network run: its outputs and the text's digest (None: not exposed)."""
    network: NetworkOutputs | None = getattr(prediction, "network", None)
    if network is None:
        return None
    return {"version": network.version, "digest": text_digest(text),
            "strength": list(network.strength), "intent_type": list(network.intent_type),
            "churn": network.churn}


def keep_outputs(scored: ScoredPlan, states: Mapping[str, UserState]) -> None:
    """Keep the network outputs of a closed session's scores (its final score, or a silence
    re-score that had to run the network: a new version since) with its user's last closed
    session, in the state about to be marked delivered (in place): what later silence
    re-scores reuse."""
    for item, kept in zip(scored.scored, scored.network, strict=True):
        state = states.get(item.session["user_id"])
        if kept is not None and state is not None and item.closed:
            keep_network(state, item.session, kept)


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
