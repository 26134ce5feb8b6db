"""The broker-free middle of the pipeline: a planned batch → scores → alerts.

The live worker (`streams/worker/agent.py`) and replay/backtests call these same functions; only
where state is kept, where records go and where the numbers are counted differs (Faust tables,
topics and the worker's metrics; or memory and no metrics: `ScoringMetrics` is injected).

Scoring never drops a session and never stalls on one: an unreachable or timed-out Triton is
retried with capped backoff for as long as it takes; an answer about the texts themselves (the
model rejected a request, or returned a wrong shape or non-finite numbers) is narrowed down by
splitting the batch, and a text that still fails after `max_attempts` tries is reported as
failed (the worker dead-letters its session as `scoring_failed`) so its partition goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from inference.client import ScoringError, TritonScorer
from inference.heads import Prediction
from streams.core.alerts import Alert, AlertPolicy, AlertState, alerts_for
from streams.core.batching import BatchPlan, ToScore
from streams.core.records import IntentScore, intent_score
from streams.core.sessions import render

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


NO_METRICS = ScoringMetrics()


@dataclass(frozen=True)
class ScoredPlan:
    """A plan's scores, in plan order, and the sessions the model could not score."""

    records: list[IntentScore]
    scored: list[ToScore]  # the plan items `records` are for, same order
    failed: list[tuple[ToScore, str]]  # (item, the last error) after max_attempts tries


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
    results: list[Prediction | None] = [None] * len(texts)
    attempts = [0] * len(texts)
    given_up: dict[int, str] = {}
    todo = list(range(len(texts)))
    delay = first_delay_s
    outages = 0  # calls the server could not answer, in a row
    while todo:
        try:
            failed = await _score_narrowing(scorer, texts, features, todo, results, observe)
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
    scorer: TritonScorer, texts: Sequence[str], features: Sequence[Sequence[float]] | None,
    indices: list[int], results: list[Prediction | None], observe: ScoringMetrics,
) -> dict[int, str]:
    """Score `indices` into `results`; halve a batch the model rejects, down to single texts.
    Returns the single texts that failed; a transient error propagates."""
    started = time.perf_counter()
    try:
        predictions = await scorer.score(
            [texts[i] for i in indices],
            None if features is None else [features[i] for i in indices])
    except ScoringError as exc:
        if exc.transient:
            raise
        if len(indices) == 1:
            return {indices[0]: str(exc)}
        middle = len(indices) // 2
        halves = (indices[:middle], indices[middle:])
        failed = await _score_narrowing(scorer, texts, features, halves[0], results, observe)
        return failed | await _score_narrowing(scorer, texts, features, halves[1], results,
                                               observe)
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
    """One score record per session the plan marked that the model could score, in plan order."""
    if not plan.to_score:
        return ScoredPlan([], [], [])
    texts = [render(item.session, max_chars) for item in plan.to_score]
    observe.texts(len(texts))
    for trigger, n in Counter(item.trigger for item in plan.to_score).items():
        observe.by_trigger(trigger, n)
    started = time.perf_counter()
    predictions, errors = await score_isolating(
        scorer, texts, retry_max_s, max_attempts, observe,
        features=[item.features for item in plan.to_score])
    latency_ms = (time.perf_counter() - started) * 1000
    now_ms = int(clock() * 1000)
    records, scored = [], []
    for item, text, prediction in zip(plan.to_score, texts, predictions, strict=True):
        if prediction is not None:
            records.append(intent_score(item.session, item.closed, text, prediction,
                                        latency_ms, now_ms, item.features, item.trigger,
                                        item.as_of, item.silence_days))
            scored.append(item)
    failed = [(plan.to_score[i], error) for i, error in sorted(errors.items())]
    return ScoredPlan(records, scored, failed)


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
