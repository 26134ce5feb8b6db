import pytest

from streams.core.alerts import AlertPolicy, alerts_for, decide, signals, unit_coin

HOUR = 3_600_000
POLICY = AlertPolicy(intent_threshold=0.6, churn_threshold=0.6, cooldown_ms=6 * HOUR,
                     explore_rate=0.1, explore_band=0.1)


def score(pid: str, p_strong: float, churn: float = 0.0, end: int = 10 * HOUR) -> dict:
    return {
        "prediction_id": pid, "user_id": "u1", "session_id": "s1",
        "window": {"start": 0, "end": end, "n_events": 3, "last_event_id": "e3"},
        "model": {"name": "intent_bert", "version": 2},
        "strength": {"label": "strong", "probs": {"strong": p_strong, "medium": 0.0,
                                                  "weak": 1 - p_strong}},
        "churn": churn,
    }


SESSION = {
    "session_id": "s1", "user_id": "u1", "start": 0, "end": 10 * HOUR, "n_events": 4,
    "last_event_id": "e4",
    "events": [
        {"event_id": "e1", "ts": 1, "type": "search", "query": "trail shoes"},
        {"event_id": "e2", "ts": 2, "type": "view", "item": {"id": "1", "title": "Speedcross"}},
        {"event_id": "e3", "ts": 3, "type": "add_to_cart", "item": {"id": "1",
                                                                    "title": "Speedcross"}},
        {"event_id": "e4", "ts": 4, "type": "support_message", "text": "my order is late!"},
    ],
}


@pytest.mark.parametrize(
    ("p", "send", "propensity"),
    [(0.95, True, 1.0), (0.2, False, 0.0)],  # far from the threshold: no exploration
)
def test_far_from_threshold_is_deterministic(p, send, propensity):
    decision = decide("intent", p, "pid", 0, None, POLICY)
    assert (decision.send, decision.propensity, decision.explored) == (send, propensity, False)


def test_near_threshold_explores_at_the_configured_rate_with_honest_propensities():
    below = [decide("intent", 0.55, f"p{i}", 0, None, POLICY) for i in range(4000)]
    above = [decide("intent", 0.65, f"p{i}", 0, None, POLICY) for i in range(4000)]
    sent_below = sum(d.send for d in below) / len(below)
    held_above = sum(not d.send for d in above) / len(above)
    assert 0.08 < sent_below < 0.12 and 0.08 < held_above < 0.12
    assert {d.propensity for d in below} == {0.1} and {d.propensity for d in above} == {0.9}
    assert all(d.explored == (d.send) for d in below)


def test_decisions_are_replayable():
    assert unit_coin("pid-7", "intent", "s") == unit_coin("pid-7", "intent", "s")
    assert decide("churn", 0.58, "pid-7", 5, None, POLICY) == decide(
        "churn", 0.58, "pid-7", 5, None, POLICY)


def test_cooldown_is_in_event_time_and_per_head():
    first, state = alerts_for(score("a", 0.9), SESSION, {}, POLICY)
    assert [a.head for a in first] == ["intent"]
    again, _ = alerts_for(score("b", 0.95, end=10 * HOUR + HOUR), SESSION, state, POLICY)
    assert again == []  # within 6 h of event time
    later, _ = alerts_for(score("c", 0.95, end=10 * HOUR + 7 * HOUR), SESSION, state, POLICY)
    assert [a.head for a in later] == ["intent"]
    churn, _ = alerts_for(score("d", 0.1, churn=0.9, end=10 * HOUR + HOUR), SESSION, state,
                          POLICY)
    assert [a.head for a in churn] == ["churn"]  # another head's cooldown does not apply


def test_redelivered_prediction_yields_the_same_id_and_no_second_alert():
    first, state = alerts_for(score("a", 0.9), SESSION, {}, POLICY)
    replay, _ = alerts_for(score("a", 0.9), SESSION, {}, POLICY)  # state lost: same id
    assert first[0].alert_id == replay[0].alert_id
    redelivered, _ = alerts_for(score("a", 0.9), SESSION, state, POLICY)  # state kept
    assert redelivered == []


def test_an_alert_keeps_its_id_when_another_scoring_of_the_session_triggers_it():
    # After a crash the redelivered events may be batched differently, so the session's alert
    # can come from another prediction; consumers must still see the same id.
    first, _ = alerts_for(score("a", 0.9), SESSION, {}, POLICY)
    rebatched, _ = alerts_for(score("b", 0.93, end=10 * HOUR + 60_000), SESSION, {}, POLICY)
    assert first[0].prediction_id != rebatched[0].prediction_id
    assert first[0].alert_id == rebatched[0].alert_id
    other_session, _ = alerts_for({**score("c", 0.9), "session_id": "s2"}, SESSION, {}, POLICY)
    assert other_session[0].alert_id != first[0].alert_id


def test_alerts_within_one_session_are_numbered_when_the_cooldown_is_shorter():
    short = AlertPolicy(cooldown_ms=HOUR, explore_rate=0.0)
    first, state = alerts_for(score("a", 0.9), SESSION, {}, short)
    second, state = alerts_for(score("b", 0.9, end=12 * HOUR), SESSION, state, short)
    assert first[0].alert_id != second[0].alert_id
    assert state["intent"]["n"] == 1 and state["intent"]["session_id"] == "s1"


def test_reason_names_the_score_and_the_events_that_drove_it():
    (alert,), _ = alerts_for(score("a", 0.83), SESSION, {}, POLICY)
    assert alert.reason.startswith("p(strong purchase intent)=0.83 ≥ 0.60")
    assert "add_to_cart: Speedcross" in alert.reason
    assert signals(SESSION, "churn")[0] == "support: my order is late!"
    assert alert.model_version == 2 and alert.prediction_id == "a"
