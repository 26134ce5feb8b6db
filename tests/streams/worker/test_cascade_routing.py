"""The cascade in `score_plan`, with the worker's order of steps around it (issue #27).

The scorer stands in for Triton: its ensemble is literally stacker(network(text), FEATURES);
its stacker alone answers the cheap stage as the served one does (kept outputs, or
features-only heads for mode 2) and asks for the network by `wants_network` under a policy.
So every answer can be checked against what the whole ensemble gives, and the Triton calls
each scoring cost are counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
import pytest

from inference.client import NetworkOutputs, ScoredText
from streams.core.batching import delivered, plan_batch
from streams.core.cascade import (
    MODE_TYPICAL,
    CascadePolicy,
    kinds_mask,
    reading_digest,
    wants_network,
)
from streams.core.raw_message import RawMessage
from streams.core.records import IntentScore
from streams.core.sessions import UserState
from streams.core.silence import plan_timers
from streams.core.timeunits import DAY_MS, MINUTE_MS
from streams.worker.scoring import ScoredPlan, ScoringMetrics, keep_outputs, score_plan
from tests.streams.worker.test_network_reuse import (
    SESSION,
    T0,
    TIMERS,
    Scorer,
    network,
    stack,
    unit,
)

NO_BAND = CascadePolicy(refresh_events=0, typical=True)
EVERY_ANSWER = CascadePolicy(strength_band=(0.0, 1.0), typical=True)


def typical(kinds: int, version: int) -> NetworkOutputs:
    """The version's prototype: the network's typical outputs for these kinds of event."""
    h = unit("typical", kinds)
    return NetworkOutputs((h, 1 - h, 0.0), (0, 1.0, 0, 0, 0, 0), h / 3, version)


class CascadeScorer(Scorer):
    """test_network_reuse's stand-in, whose stacker answers the cheap stage too."""

    def __init__(self, policy: CascadePolicy | None = NO_BAND, version: int = 3) -> None:
        super().__init__(version)
        self.policy = policy

    async def score_stacked(self, nets: Sequence[NetworkOutputs],
                            features: Sequence[Sequence[float]],
                            cascade: Sequence[tuple[int, int]] | None = None,
                            ) -> list[ScoredText]:
        self.calls.append(("stacker", len(nets)))
        out = []
        for k, (net, row) in enumerate(zip(nets, features, strict=True)):
            mode, since, kinds = (0, 0, 0) if cascade is None else cascade[k]
            p = stack(typical(kinds, net.version) if mode == MODE_TYPICAL else net, row)
            wanted = wants_network(self.policy, mode, since, list(p.strength.values()),
                                   p.churn, list(p.intent_type.values()))
            out.append(ScoredText(p.strength, p.intent_type, p.churn, p.model_name,
                                  p.model_version, None, None, wanted))
        return out

    async def cascades(self) -> bool:
        return True


def event(n: int, minute: float, kind: str = "view", **extra: object) -> RawMessage:
    doc = {"event_id": f"u1-e{n}", "user_id": "u1", "ts": int(T0 + minute * MINUTE_MS),
           "type": kind, **extra}
    if kind == "view":
        doc["item"] = {"id": f"sku-{n}", "title": f"Trail shoe {n}", "price": 50.0 + n}
    return RawMessage(b"u1", orjson.dumps(doc), "shop.events", 0, n, None)


class World:
    """The worker's steps around `score_plan` (streams/worker/agent.py), in memory."""

    def __init__(self, scorer: CascadeScorer, cascade: bool = True) -> None:
        self.scorer = scorer
        self.cascade = cascade
        self.table: dict[str, UserState] = {}
        self.records: list[IntentScore] = []
        self.routes: list[tuple[str, int]] = []

    def run(self, plan) -> ScoredPlan:
        self.table.update(plan.states)
        observe = ScoringMetrics(route=lambda name, n: self.routes.append((name, n)))
        scored = asyncio.run(score_plan(self.scorer, plan, SESSION.max_chars, 1.0,
                                        clock=lambda: 0.0, observe=observe,
                                        cascade=self.cascade))
        self.records.extend(scored.records)
        keep_outputs(scored, plan.states)
        self.table.update({u: delivered(s) for u, s in plan.states.items()})
        return scored

    def send(self, *messages: RawMessage) -> IntentScore:
        self.scorer.calls.clear()
        self.routes.clear()
        self.run(plan_batch(messages, self.table.get, SESSION, 16_384))
        return self.records[-1]

    def tick(self, watermark: int) -> None:
        self.scorer.calls.clear()
        self.run(plan_timers(["u1"], self.table.get, watermark, TIMERS))


def whole_ensemble(record: IntentScore) -> tuple[dict, float]:
    p = stack(network(record.text, 3), record.features.values)
    return p.strength, p.churn


def test_a_session_without_free_text_is_answered_from_the_typical_outputs_of_its_kinds():
    world = World(CascadeScorer())
    record = world.send(event(0, 0), event(1, 1))
    assert world.scorer.calls == [("stacker", 1)] and world.routes == [("typical", 1)]
    assert record.network is False
    views = kinds_mask(world.table["u1"]["current"])
    assert record.strength.probs == stack(typical(views, 3), record.features.values).strength


def test_free_text_runs_the_network_once_and_later_events_reuse_its_outputs():
    world = World(CascadeScorer())
    searched = world.send(event(0, 0), event(1, 1, "search", query="waterproof trail shoes"))
    assert world.scorer.calls == [("intent", 1)] and searched.network is True
    assert (searched.strength.probs, searched.churn) == whole_ensemble(searched)
    kept = world.table["u1"]["current"]["network"]
    assert kept["reads"] == reading_digest(world.table["u1"]["current"])
    assert kept["n_events"] == 2
    later = world.send(event(2, 2), event(3, 3))
    assert world.scorer.calls == [("stacker", 1)] and world.routes == [("stale", 1)]
    assert later.network is False
    # the kept outputs of the text the network read, with the FEATURES of now
    net = network(searched.text, 3)
    assert later.strength.probs == stack(net, later.features.values).strength
    message = world.send(event(4, 4, "support_message", text="my order never came"))
    assert world.scorer.calls == [("intent", 1)] and message.network is True


def test_a_cheap_answer_in_the_band_gets_the_whole_ensemble_in_a_second_round():
    world = World(CascadeScorer(EVERY_ANSWER))
    record = world.send(event(0, 0), event(1, 1))
    assert world.scorer.calls == [("stacker", 1), ("intent", 1)]
    assert world.routes == [("band", 1)] and record.network is True
    assert (record.strength.probs, record.churn) == whole_ensemble(record)


def test_a_policy_without_typical_answers_sends_those_rows_on_in_the_one_round():
    world = World(CascadeScorer(CascadePolicy()))
    record = world.send(event(0, 0), event(1, 1))
    assert world.scorer.calls == [("stacker", 1), ("intent", 1)]
    assert world.routes == [("typical_off", 1)] and record.network is True


def test_a_version_without_a_policy_runs_the_network_for_every_cheap_answer():
    world = World(CascadeScorer(policy=None))
    world.send(event(0, 0), event(1, 1, "search", query="tent"))
    record = world.send(event(2, 2))
    assert world.routes == [("no_policy", 1)] and record.network is True
    assert (record.strength.probs, record.churn) == whole_ensemble(record)


def test_the_final_score_and_silence_rescores_of_the_read_text_run_the_stacker_alone():
    world = World(CascadeScorer(EVERY_ANSWER))  # exact answers are never sent back
    world.send(event(0, 0), event(1, 1, "search", query="tent"))
    world.tick(int(T0 + 40 * MINUTE_MS))  # the clock closes the session: its final score
    final = world.records[-1]
    assert final.trigger == "session_close" and final.network is False
    assert world.scorer.calls == [("stacker", 1)]
    assert (final.strength.probs, final.churn) == whole_ensemble(final)
    world.tick(int(T0 + DAY_MS + 2 * MINUTE_MS))
    silence = world.records[-1]
    assert silence.trigger == "silence" and silence.network is False
    assert world.scorer.calls == [("stacker", 1)]


def test_without_the_cascade_every_event_score_runs_the_network():
    world = World(CascadeScorer(), cascade=False)
    for n in range(3):
        world.send(event(n, n))
        assert world.scorer.calls == [("intent", 1)]
    assert all(r.network for r in world.records)


@pytest.mark.parametrize("batches", [[2, 2, 2], [1, 5], [6]])
def test_a_replay_repeats_every_record_and_route_exactly(batches):
    messages = [event(0, 0), event(1, 1, "search", query="tent"), event(2, 2), event(3, 3),
                event(4, 4, "review", text="great tent", rating=5), event(5, 5)]

    def replay() -> list[bytes]:
        world = World(CascadeScorer(CascadePolicy(strength_band=(0.4, 0.5), refresh_events=2)))
        start = 0
        for size in batches:
            world.send(*messages[start:start + size])
            start += size
        world.tick(int(T0 + DAY_MS + 10 * MINUTE_MS))
        return [orjson.dumps(r.model_dump(mode="json", exclude={"latency_ms"}))
                for r in world.records]

    first = replay()
    assert first == replay() and len(first) >= len(batches) + 2


def test_a_redelivered_batch_repeats_its_record_after_its_network_outputs_were_kept():
    world = World(CascadeScorer())
    batch = (event(0, 0), event(1, 1, "search", query="tent"))
    first = world.send(*batch)
    assert first.network is True and world.table["u1"]["current"]["network"]
    again = world.send(*batch)  # redelivered: the state already holds what it kept
    assert world.scorer.calls == [("stacker", 1)] and world.routes == [("exact", 1)]
    assert again.model_dump(exclude={"latency_ms"}) == first.model_dump(exclude={"latency_ms"})
