"""Silence re-scores of an unchanged text skip the network (issue #24's cost goal, #27's first
step): the network's outputs are kept with the session's final score, and a silence milestone
of the same text, under the same served intent_bert version, calls the stacker alone with them
and the as-of FEATURES. Changed text, another version, or nothing kept: the whole ensemble.

The scorer is a stand-in whose ensemble is literally stacker(network(text), FEATURES), so "the
stacker alone gives what the ensemble gives" is checked on the records themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

import orjson
import pytest

from inference.client import NetworkOutputs, ScoredText
from inference.heads import INTENT_TYPE_LABELS, STRENGTH_LABELS, Prediction
from streams.core.batching import ToScore, can_reuse, delivered, keep_network, plan_batch
from streams.core.clock import SilenceSchedule
from streams.core.raw_message import RawMessage
from streams.core.records import IntentScore
from streams.core.sessions import SessionPolicy, UserState, render, text_digest
from streams.core.silence import TimerPolicy, plan_timers
from streams.core.timeunits import DAY_MS, HOUR_MS, MINUTE_MS
from streams.worker.scoring import ScoredPlan, ScoringMetrics, keep_outputs, score_plan

T0 = 1_767_225_600_000
SESSION = SessionPolicy(gap_ms=30 * MINUTE_MS, max_span_ms=4 * HOUR_MS, max_events=16,
                        max_chars=600)
TIMERS = TimerPolicy.of(SESSION, SilenceSchedule((1, 3, 7)))


def unit(*parts: object) -> float:
    digest = hashlib.blake2b(orjson.dumps(parts), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 2**32


def network(text: str, version: int) -> NetworkOutputs:
    h = unit(text, version)
    return NetworkOutputs((h, (1 - h) / 2, (1 - h) / 2), (1.0, 0, 0, 0, 0, 0), h / 2, version)


def stack(net: NetworkOutputs, features: Sequence[float]) -> Prediction:
    """The stacker: a function of the network's outputs and FEATURES."""
    shift = unit(list(features)) / 10
    strong = min(1.0, net.strength[0] + shift)
    return Prediction(
        strength=dict(zip(STRENGTH_LABELS, (strong, 1 - strong, 0.0), strict=True)),
        intent_type=dict(zip(INTENT_TYPE_LABELS, net.intent_type, strict=True)),
        churn=min(1.0, net.churn + shift), model_name="intent_bert", model_version=net.version)


class Scorer:
    """The ensemble and its last step alone, counting requests by model."""

    def __init__(self, version: int = 3, exposes: bool = True) -> None:
        self.version = version
        self.exposes = exposes  # whether the ensemble returns the network's outputs
        self.calls: list[tuple[str, int]] = []

    async def score(self, texts: list[str], features=None) -> list[Prediction]:
        self.calls.append(("intent", len(texts)))
        out = []
        for text, row in zip(texts, features, strict=True):
            net = network(text, self.version)
            p = stack(net, row)
            out.append(ScoredText(p.strength, p.intent_type, p.churn, p.model_name,
                                  p.model_version, None, net if self.exposes else None))
        return out

    async def score_stacked(self, nets: Sequence[NetworkOutputs],
                            features: Sequence[Sequence[float]]) -> list[Prediction]:
        self.calls.append(("stacker", len(nets)))
        return [stack(n, f) for n, f in zip(nets, features, strict=True)]

    async def network_version(self) -> int:
        return self.version

    async def cascades(self) -> bool:
        return False  # a stacker without the cascade's cheap stage (tests/.../test_cascade_*)


def message(n: int, minute: float, offset: int) -> RawMessage:
    doc = {"event_id": f"u1-e{n}", "user_id": "u1", "ts": int(T0 + minute * MINUTE_MS),
           "type": "view", "item": {"id": f"sku-{n}", "title": f"Trail shoe {n}",
                                    "price": 50.0 + n}}
    return RawMessage(b"u1", orjson.dumps(doc), "shop.events", 0, offset, None)


class World:
    """The worker's order of steps (streams/worker/agent.py) around `score_plan`."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.table: dict[str, UserState] = {}
        self.records: list[IntentScore] = []
        self.stacker_only: list[str] = []

    def run(self, plan) -> ScoredPlan:
        observe = ScoringMetrics(stacker_only=lambda trigger, n: self.stacker_only.append(
            trigger))
        self.table.update(plan.states)  # written before scoring
        scored = asyncio.run(score_plan(self.scorer, plan, SESSION.max_chars, 1.0,
                                        observe=observe))
        self.records.extend(scored.records)
        keep_outputs(scored, plan.states)
        self.table.update({u: delivered(s) for u, s in plan.states.items()})
        return scored

    def send(self, *messages: RawMessage) -> None:
        self.run(plan_batch(messages, self.table.get, SESSION, 16_384))

    def tick(self, watermark: int) -> ScoredPlan:
        return self.run(plan_timers(["u1"], self.table.get, watermark, TIMERS))


def silent_after_one_session(scorer: Scorer) -> World:
    """A user who browsed for ten minutes; the clock closes the session (final score)."""
    world = World(scorer)
    world.send(message(0, 0, 0), message(1, 10, 1))
    world.tick(int(T0 + 41 * MINUTE_MS))
    assert [r.trigger for r in world.records] == ["event", "session_close"]
    return world


def first_milestone(world: World) -> IntentScore:
    world.scorer.calls.clear()
    world.tick(int(T0 + 10 * MINUTE_MS + DAY_MS))
    (record,) = [r for r in world.records if r.trigger == "silence"]
    return record


def test_an_unchanged_text_at_the_served_version_runs_the_stacker_alone():
    world = silent_after_one_session(Scorer())
    kept = world.table["u1"]["last_closed"]["network"]
    text = world.records[-1].text
    assert kept["version"] == 3 and kept["digest"] == text_digest(text)
    record = first_milestone(world)
    assert world.scorer.calls == [("stacker", 1)] and world.stacker_only == ["silence"]
    assert record.network is False and record.text == text
    # what the whole ensemble gives for the same text and as-of FEATURES
    assert stack(network(text, 3), record.features.values).strength == record.strength.probs
    assert [r.network for r in world.records[:2]] == [True, True]


@pytest.mark.parametrize("change", ["other_version", "changed_text", "nothing_kept"])
def test_otherwise_the_whole_ensemble_runs_and_gives_the_same_answer(change):
    reference = first_milestone(silent_after_one_session(Scorer()))
    world = silent_after_one_session(Scorer(exposes=change != "nothing_kept"))
    last = world.table["u1"]["last_closed"]
    if change == "other_version":
        world.scorer.version = 4  # a new intent_bert rolled out meanwhile
    if change == "changed_text":  # kept for another text (say, another SESSION_MAX_CHARS)
        last["network"] = {**last["network"], "digest": text_digest("view: something else")}
    record = first_milestone(world)
    assert world.scorer.calls == [("intent", 1)] and world.stacker_only == []
    assert record.network is True
    if change == "other_version":
        assert record.model.version == 4 != reference.model.version
        assert world.table["u1"]["last_closed"]["network"]["version"] == 4  # kept anew
    else:  # same version: the same id and the same content as through the stacker alone
        assert record.prediction_id == reference.prediction_id
        assert record.strength == reference.strength and record.churn == reference.churn


def test_later_milestones_reuse_what_a_network_run_for_a_new_version_kept():
    world = silent_after_one_session(Scorer())
    world.scorer.version = 4
    first_milestone(world)
    world.scorer.calls.clear()
    world.tick(int(T0 + 10 * MINUTE_MS + 3 * DAY_MS))
    assert world.scorer.calls == [("stacker", 1)]
    assert world.records[-1].model.version == 4 and world.records[-1].network is False


def test_only_silence_rescores_reuse_and_only_the_scored_session_keeps():
    world = silent_after_one_session(Scorer())
    state = world.table["u1"]
    last = state["last_closed"]
    text = render(last, SESSION.max_chars)
    silence = ToScore(last, True, [0.0], "silence", 1, 1.0, last["network"])
    assert can_reuse(silence, text, 3)
    assert not can_reuse(silence, text, None)  # served version unknown
    for trigger in ("event", "session_close"):
        assert not can_reuse(ToScore(last, True, [0.0], trigger, 1, None, last["network"]),
                             text, 3)
    other = {**last, "n_events": last["n_events"] + 1, "network": None}
    before = dict(state)
    keep_network(state, other, {**last["network"], "churn": 0.99})  # not the last closed
    assert state == before
