"""Timers in state: sessions closed on time, silence milestones, their ids and alerts. Pure.

`Pipeline` drives the core as the worker does (streams/worker/agent.py): a batch plans, writes
the states, scores, then writes them delivered and sets each touched user's timer; a timer
tick pops the due users of a partition, fires them, writes the fired states, scores, then
writes them delivered. Scores come from a stand-in model whose output is a function of the
text and FEATURES, so "same id, same content" is checked on the records themselves.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson
import pytest

from inference.heads import Prediction
from streams.core.alerts import AlertPolicy, AlertState, alerts_for
from streams.core.batching import delivered, plan_batch, scoring_items
from streams.core.clock import SilenceSchedule, TimerIndex
from streams.core.features import FEATURE_NAMES
from streams.core.raw_message import RawMessage
from streams.core.records import IntentScore, intent_score, prediction_id
from streams.core.sessions import SessionPolicy, UserState, render
from streams.core.silence import OVERDUE, TimerPolicy, due_at, fire, plan_timers
from streams.core.timeunits import DAY_MS, HOUR_MS, MINUTE_MS

T0 = 1_767_225_600_000
SESSION = SessionPolicy(gap_ms=30 * MINUTE_MS, max_span_ms=4 * HOUR_MS, max_events=16,
                        max_chars=600)
SCHEDULE = SilenceSchedule((1, 3, 7, 14, 30, 60, 90))
TIMERS = TimerPolicy.of(SESSION, SCHEDULE)
ALERTS = AlertPolicy(intent_threshold=0.6, churn_threshold=0.6, cooldown_ms=6 * HOUR_MS,
                     explore_rate=0.0, explore_band=0.0)
SILENCE_DAYS = FEATURE_NAMES.index("silence_days")


def event(user: str, n: int, minute: float, kind: str = "view", **extra: object) -> dict:
    doc = {"event_id": f"{user}-e{n}", "user_id": user, "ts": int(T0 + minute * MINUTE_MS),
           "type": kind, **extra}
    if kind in ("view", "add_to_cart", "purchase") and "item" not in doc:
        doc["item"] = {"id": f"sku-{n}", "title": f"Trail shoe {n}", "price": 50.0 + n}
    return doc


def stand_in(text: str, features: list[float], churn: float | None) -> Prediction:
    """A model: deterministic in its inputs, so a different input shows in the output."""
    h = int.from_bytes(hashlib.blake2b(orjson.dumps([text, features]), digest_size=4)
                       .digest(), "big") / 2**32
    strong = 0.7 + 0.2 * h
    return Prediction(strength={"strong": strong, "medium": 1 - strong, "weak": 0.0},
                      intent_type={"browse": 1.0}, churn=0.3 + 0.6 * h if churn is None
                      else churn, model_name="intent_bert", model_version=3)


@dataclass
class Pipeline:
    churn: float | None = None
    timers: TimerPolicy = TIMERS
    alert_policy: AlertPolicy = ALERTS

    def __post_init__(self) -> None:
        self.table: dict[str, UserState] = {}
        self.alert_state: dict[str, AlertState] = {}
        self.index = TimerIndex()
        self.offset = 0
        self.records: list[IntentScore] = []
        self.alerts: list = []

    def send(self, *docs: dict, partition: int = 0) -> None:
        messages = []
        for doc in docs:
            messages.append(RawMessage(doc["user_id"].encode(), orjson.dumps(doc),
                                       "shop.events", partition, self.offset, None))
            self.offset += 1
        plan = plan_batch(messages, self.table.get, SESSION, 16_384)
        self.table.update(plan.states)
        self.deliver(plan.to_score)
        for user, state in plan.states.items():
            self.table[user] = done = delivered(state)
            self.index.set(user, partition, due_at(done, self.timers))

    def tick(self, watermark: int, partition: int = 0, crash: str | None = None) -> None:
        """Fire the due timers; `crash`: stop "before_outputs" or "before_delivered"."""
        due = self.index.pop_due(partition, watermark)
        plan = plan_timers(due, self.table.get, watermark, self.timers)
        self.table.update(plan.states)
        if crash == "before_outputs":
            self.restart(partition)
            return
        self.deliver(plan.to_score)
        if crash == "before_delivered":
            self.restart(partition)
            return
        for user, state in plan.states.items():
            self.table[user] = delivered(state)
        for user in due:
            self.index.set(user, partition, due_at(self.table[user], self.timers))

    def restart(self, partition: int) -> None:
        """Timers are derived state: rebuilt from the table, as after a restart."""
        self.index = TimerIndex()
        self.index.rebuild((user, partition, due_at(state, self.timers))
                           for user, state in self.table.items())

    def deliver(self, items: list) -> None:
        for item in items:
            text = render(item.session, SESSION.max_chars)
            record = intent_score(item.session, item.closed, text,
                                  stand_in(text, item.features, self.churn), 1.0, 0,
                                  item.features, item.trigger, item.as_of, item.silence_days)
            self.records.append(record)
            user = record.user_id
            raised, self.alert_state[user] = alerts_for(
                record.model_dump(mode="json"), item.session, self.alert_state.get(user, {}),
                self.alert_policy, item.features)
            self.alerts.extend(raised)

    def of(self, user: str, trigger: str | None = None) -> list[IntentScore]:
        return [r for r in self.records
                if r.user_id == user and (trigger is None or r.trigger == trigger)]


def content(record: IntentScore) -> dict:
    return record.model_dump(mode="json", exclude={"scored_at", "latency_ms"})


def assert_one_content_per_id(records: list[IntentScore]) -> None:
    by_id: dict[str, dict] = {}
    for record in records:
        assert by_id.setdefault(record.prediction_id, content(record)) == content(record)


def at_minute(minute: float) -> int:
    return int(T0 + minute * MINUTE_MS)


# --- sessions close on time ---------------------------------------------------------------------


@pytest.mark.parametrize(("closing_minute", "closed"), [(5 + 30, False), (5 + 30 + 0.001, True)])
def test_a_session_closes_when_the_watermark_passes_its_end_plus_gap(closing_minute, closed):
    world = Pipeline()
    world.send(event("u1", 0, 0), event("u1", 1, 5))
    world.tick(at_minute(closing_minute))
    finals = world.of("u1", "session_close")
    assert len(finals) == int(closed)
    if closed:
        (final,) = finals
        assert final.closed and final.as_of == at_minute(5) and final.window.n_events == 2
        assert world.table["u1"]["current"] is None and world.table["u1"]["pending"] == []


def test_a_session_closes_at_its_max_span_while_its_user_keeps_browsing_elsewhere():
    world = Pipeline()
    world.send(*(event("u1", i, i * 20) for i in range(13)))  # 0..240 min, gaps of 20 min
    # The 13th event (minute 240) reached the max span and opened a new session already.
    assert len(world.of("u1", "session_close")) == 1
    world.tick(at_minute(240 + 31))
    assert [r.window.n_events for r in world.of("u1", "session_close")] == [12, 1]


def test_the_clock_closes_a_session_exactly_as_a_later_event_would():
    """Same final score (id and content) whichever closes it: the id is a function of the
    session state and the trigger, and the close is applied to the profile the same way."""
    by_clock, by_event = Pipeline(), Pipeline()
    for world in (by_clock, by_event):
        world.send(event("u1", 0, 0), event("u1", 1, 3, "add_to_cart"), event("u1", 2, 5))
    by_clock.tick(at_minute(60))
    by_event.send(event("u1", 3, 120))
    (a,), (b,) = by_clock.of("u1", "session_close"), by_event.of("u1", "session_close")
    assert content(a) == content(b)


def test_a_final_score_has_its_own_id_and_each_id_one_content():
    """Issue #24 item 8: the final score's FEATURES differ from the last open score's (the
    close counts the abandoned cart in the profile), so it may not repeat that id."""
    world = Pipeline()
    world.send(event("u1", 0, 0), event("u1", 1, 3, "add_to_cart"))
    world.tick(at_minute(60))
    (last_open,), (final,) = world.of("u1", "event"), world.of("u1", "session_close")
    assert final.window == last_open.window and final.text == last_open.text
    carts = FEATURE_NAMES.index("profile_abandoned_carts")
    assert (last_open.features.values[carts], final.features.values[carts]) == (0, 1)
    assert final.prediction_id != last_open.prediction_id
    world.send(event("u1", 0, 0))  # redelivered: re-scoring repeats nothing new
    assert_one_content_per_id(world.records)


def test_the_open_scores_keep_their_v1_ids():
    session = {"session_id": "s", "n_events": 3, "last_event_id": "e3"}
    digest = hashlib.blake2b(b"s\x003\x00e3\x007", digest_size=12).hexdigest()
    assert prediction_id(session, 7) == digest  # replay of the open scores is unchanged
    assert len({prediction_id(session, 7, t, 5) for t in ("event", "session_close",
                                                          "silence")}) == 3


# --- silence ------------------------------------------------------------------------------------


def test_a_silent_user_is_rescored_at_each_milestone_once_with_features_as_of_it():
    world = Pipeline()
    world.send(event("u1", 0, 0), event("u1", 1, 10, "purchase"))
    end = at_minute(10)
    for step in range(0, 100 * 24 * 2):  # 100 days, every 30 minutes
        world.tick(end + step * 30 * MINUTE_MS)
    silence = world.of("u1", "silence")
    assert [r.silence_days for r in silence] == [1, 3, 7, 14, 30, 60, 90]
    assert [r.as_of - end for r in silence] == [d * DAY_MS for d in SCHEDULE.days]
    assert [r.features.values[SILENCE_DAYS] for r in silence] == list(SCHEDULE.days)
    last_order = FEATURE_NAMES.index("profile_days_since_last_order")
    assert [r.features.values[last_order] for r in silence] == list(SCHEDULE.days)
    assert {r.session_id for r in silence} == {world.of("u1", "session_close")[0].session_id}
    assert len({r.prediction_id for r in silence}) == 7
    assert len(world.index) == 0  # nothing left after the last milestone
    assert_one_content_per_id(world.records)


def test_a_jump_past_several_milestones_scores_only_the_latest_reached():
    world = Pipeline()
    world.send(event("u1", 0, 0))
    world.tick(at_minute(0) + 20 * DAY_MS)  # closes, and 1, 3, 7 and 14 days have passed
    assert [r.trigger for r in world.of("u1")] == ["event", "session_close", "silence"]
    assert world.of("u1", "silence")[0].silence_days == 14
    world.tick(at_minute(0) + 31 * DAY_MS)
    assert [r.silence_days for r in world.of("u1", "silence")] == [14, 30]


def test_a_returning_user_stops_the_schedule_and_the_next_close_starts_it_again():
    world = Pipeline()
    world.send(event("u1", 0, 0))
    world.tick(at_minute(0) + 2 * DAY_MS)
    world.send(event("u1", 1, 2 * 24 * 60 + 5))  # back on day 2: a new session opens
    world.tick(at_minute(0) + 2 * DAY_MS + 20 * MINUTE_MS)
    assert [r.silence_days for r in world.of("u1", "silence")] == [1]
    world.tick(at_minute(2 * 24 * 60 + 5) + DAY_MS)  # a day after the second session
    assert [r.silence_days for r in world.of("u1", "silence")] == [1, 1]
    assert len({r.session_id for r in world.of("u1", "silence")}) == 2


def test_long_users_keep_every_event_counted_and_a_bounded_session_for_silence():
    world = Pipeline()
    world.send(*(event("u1", i, i * 0.5) for i in range(200)))  # 100 minutes, one session
    world.tick(at_minute(99.5) + 4 * DAY_MS)
    (final,) = world.of("u1", "session_close")
    (silent,) = world.of("u1", "silence")
    assert final.window.n_events == silent.window.n_events == 200
    assert len(world.table["u1"]["last_closed"]["events"]) == SESSION.max_events
    assert silent.text == final.text  # the same session, re-scored as of the milestone
    assert "features" not in world.table["u1"]["last_closed"]


@pytest.mark.parametrize("resend_at", ["open", "closed", "silent"])
def test_resent_events_change_no_timer_output(resend_at):
    plain, resent = Pipeline(), Pipeline()
    marks = {"open": at_minute(3), "closed": at_minute(60), "silent": at_minute(0) + 2 * DAY_MS}
    for world in (plain, resent):
        world.send(event("u1", 0, 0), event("u1", 1, 2))
        world.tick(marks[resend_at])
    resent.send(event("u1", 1, 2))  # a producer re-send: same event, new offset
    for world in (plain, resent):
        world.tick(at_minute(0) + 40 * DAY_MS)
    ids = [[r.prediction_id for r in w.records if r.trigger != "event"]
           for w in (plain, resent)]
    # the close, the 1-day milestone when the clock stopped on day 2, the 30-day one
    assert ids[0] == ids[1] and len(ids[0]) == (3 if resend_at == "silent" else 2)
    assert_one_content_per_id(plain.records + resent.records)


@pytest.mark.parametrize("crash", ["before_outputs", "before_delivered"])
def test_a_crash_mid_timer_repeats_the_same_ids_and_loses_nothing(crash):
    steady, crashing = Pipeline(), Pipeline()
    for world in (steady, crashing):
        world.send(event("u1", 0, 0, "add_to_cart"), event("u2", 0, 1))
    steady.tick(at_minute(0) + 2 * DAY_MS)
    crashing.tick(at_minute(0) + 2 * DAY_MS, crash=crash)
    # Restarted, the clock past the next milestone too: the milestone chosen before the
    # crash is scored first (not skipped for the latest), then the next one.
    for world in (crashing, steady, crashing, steady):
        world.tick(at_minute(0) + 3 * DAY_MS + HOUR_MS)
    ids = [{r.prediction_id for r in w.records} for w in (steady, crashing)]
    assert ids[0] == ids[1]
    assert_one_content_per_id(steady.records + crashing.records)
    assert {a.alert_id for a in steady.alerts} == {a.alert_id for a in crashing.alerts}
    assert [r.silence_days for r in crashing.of("u1", "silence")] == (
        [1, 3] if crash == "before_outputs" else [1, 1, 3])
    assert crashing.table["u1"]["silence"] == {"scored": 1}


def test_undelivered_work_is_due_at_once_and_timers_rebuild_from_the_table():
    world = Pipeline()
    world.send(event("u1", 0, 0))
    state = world.table["u1"]
    assert due_at(state, TIMERS) == at_minute(30) + 1
    fired = {**state, "pending": list(state["pending"])}
    assert fire(fired, at_minute(31), TIMERS)
    assert due_at(fired, TIMERS) == OVERDUE
    assert [i.trigger for i in scoring_items(fired, with_current=False)] == ["session_close"]
    done = delivered(fired)
    assert due_at(done, TIMERS) == at_minute(0) + DAY_MS
    assert not fire(done, at_minute(0) + DAY_MS - 1, TIMERS)


def test_a_stale_timer_fires_nothing():
    world = Pipeline()
    world.send(event("u1", 0, 0))
    plan = plan_timers(["u1", "nobody"], world.table.get, at_minute(10), TIMERS)
    assert plan.states == {} and plan.to_score == []


# --- alerts -------------------------------------------------------------------------------------


def test_a_silent_user_gets_one_churn_alert_within_the_cooldown_naming_the_silence():
    timers = TimerPolicy.of(SESSION, SilenceSchedule((0.05, 0.1, 0.2, 0.5)))  # 1.2 h .. 12 h
    world = Pipeline(churn=0.9, timers=timers)
    world.send(event("u1", 0, 0), event("u1", 1, 1, "purchase"))
    for step in range(0, 13 * 4):
        world.tick(at_minute(1) + step * 15 * MINUTE_MS)
    assert [r.silence_days for r in world.of("u1", "silence")] == [0.05, 0.1, 0.2, 0.5]
    churn = [a for a in world.alerts if a.head == "churn"]
    # In-session churn alert at minute 0 (cooldown 6 h): the 0.05/0.1/0.2-day milestones are
    # inside it, the 12-hour one is not.
    assert [a.kind for a in churn] == ["score", "silence"]
    silent = churn[1]
    assert silent.event_time == at_minute(1) + round(0.5 * DAY_MS)
    assert "silent for 0.5 days" in silent.reason and "1 order, the last 0 days ago" in (
        silent.reason)
    assert silent.prediction_id == world.of("u1", "silence")[-1].prediction_id


@pytest.mark.parametrize(("past_cooldown", "cooldown_h", "carts"),
                         [(True, 6, 1), (False, 6, 0), (False, 0, 1)])
def test_an_abandoned_cart_alerts_once_with_its_items(past_cooldown, cooldown_h, carts):
    """Past the intent cooldown when so configured; else only when the usual rules send the
    final score's intent alert (here the in-session alert at the same event time holds it
    back, unless there is no cooldown)."""
    policy = AlertPolicy(intent_threshold=0.6, churn_threshold=0.6, explore_rate=0.0,
                         cooldown_ms=cooldown_h * HOUR_MS, cart_past_cooldown=past_cooldown)
    world = Pipeline(alert_policy=policy)
    world.send(event("u1", 0, 0, "add_to_cart"), event("u1", 1, 2, "add_to_cart"),
               event("u1", 2, 3, "remove_from_cart", item={"id": "sku-1", "title": "x"}))
    world.tick(at_minute(40))
    world.send(event("u1", 0, 0))  # redelivered: the final score again, no second alert
    world.tick(at_minute(0) + 2 * DAY_MS)
    found = [a for a in world.alerts if a.kind == "abandoned_cart"]
    assert len(found) == carts
    if carts:
        (cart,) = found
        assert cart.head == "intent" and cart.reason.startswith("abandoned cart: ")
        assert "Trail shoe 0" in cart.reason and "Trail shoe 1" not in cart.reason
        assert cart.prediction_id == world.of("u1", "session_close")[0].prediction_id


def test_a_bought_cart_is_not_abandoned():
    world = Pipeline()
    world.send(event("u1", 0, 0, "add_to_cart"), event("u1", 1, 2, "purchase"))
    world.tick(at_minute(40))
    assert [a for a in world.alerts if a.kind == "abandoned_cart"] == []


def test_the_score_record_alone_gives_the_same_alert_decisions():
    """What the feedback sidecar's replica has is the score record (FEATURES included), not
    the session: the decisions, ids and kinds must not depend on anything else."""
    world = Pipeline(churn=0.9, timers=TimerPolicy.of(SESSION, SilenceSchedule((0.3, 0.6))),
                     alert_policy=AlertPolicy(explore_rate=0.1, cart_past_cooldown=True))
    world.send(event("u1", 0, 0, "add_to_cart"), event("u2", 0, 1), event("u2", 1, 2, "purchase"))
    for step in range(0, 4 * 24):
        world.tick(at_minute(2) + step * 15 * MINUTE_MS)
    state: dict[str, AlertState] = {}
    replayed = []
    for record in world.records:
        doc = record.model_dump(mode="json")
        raised, state[record.user_id] = alerts_for(
            doc, {"events": []}, state.get(record.user_id, {}), world.alert_policy,
            record.features.values if record.features else None)
        replayed.extend(raised)

    def decided(alerts):
        return [(a.alert_id, a.prediction_id, a.kind, a.event_time) for a in alerts]
    assert decided(replayed) == decided(world.alerts)
    assert {a.kind for a in replayed} == {"score", "silence", "abandoned_cart"}
