"""The broker-free middle of the pipeline: a planned batch → scores → alerts.

The live worker (`streams/worker/agent.py`) and replay/backtests call these same functions; only
where state is kept and where records go differs (Faust tables and topics, or memory).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import structlog

from inference.client import ScoringError, TritonScorer
from inference.heads import Prediction
from streams.core.alerts import Alert, AlertPolicy, AlertState, alerts_for
from streams.core.batching import BatchPlan
from streams.core.records import IntentScore, intent_score
from streams.core.sessions import render
from streams.runtime import metrics

log = structlog.get_logger("intentstream.scoring")


async def score_until_done(
    scorer: TritonScorer, texts: list[str], retry_max_s: float
) -> tuple[list[Prediction], float]:
    """Score, retrying with capped exponential backoff; never drops the batch."""
    delay = 0.5
    attempt = 0
    while True:
        attempt += 1
        started = time.perf_counter()
        try:
            predictions = await scorer.score(texts)
        except ScoringError as exc:
            metrics.TRITON_RETRIES.inc()
            log.warning("triton.retry", attempt=attempt, delay_s=delay, texts=len(texts),
                        error=str(exc)[:300])
            await asyncio.sleep(delay)
            delay = min(delay * 2, retry_max_s)
            continue
        elapsed = time.perf_counter() - started
        metrics.TRITON_SECONDS.observe(elapsed)
        return predictions, elapsed * 1000


async def score_plan(
    scorer: TritonScorer,
    plan: BatchPlan,
    max_chars: int,
    retry_max_s: float,
    clock: Callable[[], float] = time.time,
) -> list[IntentScore]:
    """One score record per session the plan marked, in plan order (one Triton call)."""
    if not plan.to_score:
        return []
    texts = [render(item.session, max_chars) for item in plan.to_score]
    metrics.BATCH_TEXTS.observe(len(texts))
    predictions, latency_ms = await score_until_done(scorer, texts, retry_max_s)
    now_ms = int(clock() * 1000)
    return [
        intent_score(item.session, item.closed, text, pred, latency_ms, now_ms)
        for item, text, pred in zip(plan.to_score, texts, predictions, strict=True)
    ]


def decide_alerts(
    plan: BatchPlan,
    records: Sequence[IntentScore],
    load_state: Callable[[str], AlertState | None],
    policy: AlertPolicy,
) -> tuple[list[Alert], dict[str, AlertState]]:
    """Alerts for a batch's scores in score order, and the alert states that changed."""
    states: dict[str, AlertState] = {}
    changed: dict[str, AlertState] = {}
    alerts: list[Alert] = []
    for item, record in zip(plan.to_score, records, strict=True):
        user = record.user_id
        state = states[user] if user in states else (load_state(user) or {})
        raised, states[user] = alerts_for(
            record.model_dump(mode="json"), item.session, state, policy
        )
        if raised:
            alerts.extend(raised)
            changed[user] = states[user]
    return alerts, changed
