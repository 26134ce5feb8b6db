"""Timers that live in a user's state: sessions closed on time, silent users re-scored. Pure.

A user's next timer is *derived* from the user's state (`due_at`), never stored beside it, so
the index of pending timers (`streams.core.clock.TimerIndex`) is rebuilt from the session
table after a rebalance or restart, and is set again whenever a batch writes the state:

- an open session is due to close when the watermark passes its end + gap (it is closed by
  an event strictly later than that, as `sessions.absorb` closes it) or its start + max span;
- after it closed, the next silence milestone (`SilenceSchedule`) after its end that has not
  been scored yet;
- a state holding something not yet delivered (a closed session, a chosen milestone) is due
  at once (`OVERDUE`): a crash left it there, and re-scoring it gives the same ids.

`fire(state, watermark)` applies what the watermark reached, in place, like `absorb` applies
an event: it closes the open session (into `pending`, features frozen as of its end, the
profile's close applied exactly as `absorb` does, so the final score is the same whichever
closed it) and keeps it as `last_closed`; and it chooses the latest milestone reached
(`silence.pending`). If the clock jumped past several milestones at once, only the latest is
scored: a stale "silent for 3 days" score is no use once 14 days have passed.

The worker writes the fired state, produces what `batching.scoring_items` asks for, and only
then writes `batching.delivered(state)`: the milestone index scored is recorded only after
its score (and alerts) are on their topics. Timer-driven work has no input offset to ack,
so this is what makes it idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streams.core.batching import ToScore, copy_state, scoring_items
from streams.core.clock import SilenceSchedule
from streams.core.features import close_session_in_profile, empty_stats, feature_vector
from streams.core.sessions import Session, SessionPolicy, UserState

OVERDUE = 0  # the due time of a state with undelivered work: fires at the next watermark


@dataclass(frozen=True, slots=True)
class TimerPolicy:
    gap_ms: int
    max_span_ms: int
    schedule: SilenceSchedule

    @classmethod
    def of(cls, session: SessionPolicy, schedule: SilenceSchedule) -> TimerPolicy:
        return cls(session.gap_ms, session.max_span_ms, schedule)


def close_due(session: Session, policy: TimerPolicy) -> int:
    """The watermark at which an open session is closed: an event later than end + gap, or
    at start + max span, would open a new one (`sessions.absorb`)."""
    return min(session["end"] + policy.gap_ms + 1, session["start"] + policy.max_span_ms)


def has_undelivered(state: UserState) -> bool:
    return bool(state["pending"]) or "pending" in (state.get("silence") or {})


def due_at(state: UserState, policy: TimerPolicy) -> int | None:
    """The event time of the user's next timer (None: nothing left to do)."""
    if has_undelivered(state):
        return OVERDUE
    current = state["current"]
    if current is not None:
        return close_due(current, policy)
    last = state.get("last_closed")
    if last is None:
        return None
    following = (state.get("silence") or {}).get("scored", -1) + 1
    if following >= len(policy.schedule.days):
        return None
    return policy.schedule.milestone(last["end"], following).due_ms


def fire(state: UserState, watermark_ms: int, policy: TimerPolicy) -> bool:
    """Apply what the watermark reached to the user's state, in place; True if it changed."""
    changed = False
    current = state["current"]
    if current is not None and watermark_ms >= close_due(current, policy):
        profile = state.get("profile")
        if profile is not None:
            close_session_in_profile(profile, current.get("stats") or empty_stats())
        closed: Session = {**current, "features": feature_vector(current, profile)}
        state["pending"] = [*state["pending"], closed]
        state["current"] = None
        state["last_closed"] = current  # without the frozen features: silence recomputes them
        state["silence"] = {"scored": -1}
        changed = True
    last = state.get("last_closed")
    silence = state.get("silence") or {"scored": -1}
    if state["current"] is None and last is not None and "pending" not in silence:
        reached = policy.schedule.reached_at(last["end"], watermark_ms)
        if reached is not None and reached.index > silence["scored"]:
            state["silence"] = {"scored": silence["scored"], "pending": {
                "index": reached.index, "days": reached.days, "as_of": reached.due_ms}}
            changed = True
    return changed


@dataclass
class TimerPlan:
    """What one partition's timers produced at a watermark (a `BatchPlan` without input)."""

    states: dict[str, UserState] = field(default_factory=dict)  # fired users' new states
    to_score: list[ToScore] = field(default_factory=list)
    closed: int = 0  # sessions the clock closed
    milestones: int = 0  # silence milestones chosen


def plan_timers(
    users: Iterable[str], load_state: Callable[[str], UserState | None], watermark_ms: int,
    policy: TimerPolicy,
) -> TimerPlan:
    """Fire the timers of `users` (those `TimerIndex.pop_due` gave) at a watermark. A user
    whose state has undelivered work is scored again as it stands (same ids)."""
    plan = TimerPlan()
    for user in users:
        loaded = load_state(user)
        if loaded is None:
            continue
        state = copy_state(loaded)
        had_open = state["current"] is not None
        had_milestone = "pending" in (state.get("silence") or {})
        if not fire(state, watermark_ms, policy) and not has_undelivered(state):
            continue  # a stale timer (the state moved on since it was set)
        plan.closed += had_open and state["current"] is None
        plan.milestones += not had_milestone and "pending" in (state.get("silence") or {})
        plan.states[user] = state
        plan.to_score.extend(scoring_items(state, with_current=False))
    return plan
