"""Simulated histories → labelled windows (text + three labels) → a split by user. Pure.

A window is exactly what the live worker scores: the user's events fed through
`streams.core.sessions.absorb` and rendered with `streams.core.sessions.render` under the
worker's policy, with the FEATURES row the worker would send at that moment
(`streams.core.sessions.session_features` on the one state that absorbed the user's whole
history so far, so the profile counts every earlier session, not only the window's).
Two ways to choose the windows:

- `worker_windows` (`--windows worker`, the default): exactly what the live worker scores, from
  its own code: each event absorbed (`absorb`) gives a score of the open session (every prefix,
  as events arrive); between events the worker's timers fire as its clock passes them
  (`streams.core.silence.fire`): the session closes on time (its final score) and the user's
  silence milestones (`SilenceSchedule`) re-score the last session with FEATURES as of the
  milestone (`batching.scoring_items`). A silence window's labels read what happened after the
  milestone, so the churn head learns from "silent for X days" windows.
- `live_windows` (`--windows sessions`): every session at its close, and a seeded share of
  sessions also once mid-way (one prefix window).

Labels come from `streams.core.labelling` on the events after the window's as-of time (a
session's end, or the milestone); windows whose future is not known far enough (near the end of
the history) are dropped, never guessed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from inference.heads import INTENT_TYPE_LABELS, MODEL_HEADS, STRENGTH_LABELS
from streams.core.batching import delivered, scoring_items
from streams.core.cascade import free_text_digest, kinds_mask, reading_digest
from streams.core.events import ShopEvent
from streams.core.labelling import DEFAULT_LABEL_POLICY, LabelPolicy, label_window
from streams.core.sessions import (
    Session,
    SessionPolicy,
    UserState,
    absorb,
    empty_state,
    render,
    session_features,
)
from streams.core.silence import TimerPolicy, due_at, fire
from streams.settings import get_settings
from training.data.simulator import UserHistory

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True, slots=True)
class Example:
    user_id: str
    text: str
    strength: str
    intent_type: str
    churn: bool
    window_end: int
    prefix: bool  # a mid-session window (the worker scoring an open session)
    features: tuple[float, ...] = ()  # the FEATURES row the worker sends for this window
    trigger: str = "session_close"  # event (an open session), session_close or silence
    # What the cascade (streams/core/cascade.py) routes by: the session scored, its free text
    # digest (`free_text_digest`: "" where it holds none; no kept outputs and none of it: the
    # typical route, keyed by `kinds_mask`), what the network's reading turns on
    # (`reading_digest`: the free text and the kinds of event held; unchanged since the kept
    # run: the stale route) and its size then.
    session_id: str = ""
    free_text: str = ""
    n_events: int = 0
    reads: str = ""
    kinds: int = 0


def validated(doc: dict[str, Any], policy: SessionPolicy) -> ShopEvent:
    """An event as the worker validates it, with the deployment's event-time bounds."""
    return ShopEvent.model_validate(doc, context={"ts_bounds": policy.ts_bounds})


def sessions_of(events: Iterable[dict[str, Any]], policy: SessionPolicy) -> list[Session]:
    """A user's sessions, as the worker builds them: events absorbed in order."""
    state = empty_state()
    for doc in events:
        absorb(state, validated(doc, policy), policy)
    closed = list(state["pending"])
    return closed + ([state["current"]] if state["current"] else [])


@dataclass(frozen=True, slots=True)
class Window:
    """A session as the worker scored it at one moment: a copy of its events and bounds, and
    the FEATURES row taken then (the open session keeps changing after a prefix snapshot)."""

    session: Session
    features: tuple[float, ...]
    prefix: bool
    trigger: str = "session_close"
    as_of: int | None = None  # labels read events after this (None: the session's end)

    @property
    def labelled_from(self) -> int:
        return self.session["end"] if self.as_of is None else self.as_of


def _snapshot(state: UserState, session: Session, prefix: bool) -> Window:
    copied: Session = {**session, "events": list(session["events"])}
    return Window(copied, tuple(session_features(state, session)), prefix,
                  "event" if prefix else "session_close")


def worker_windows(events: Sequence[dict[str, Any]], policy: SessionPolicy,
                   timers: TimerPolicy, observed_until: int) -> list[Window]:
    """What the live worker scores for a user's history, in order: one window per event (the
    open session as of it), each session's close when the clock passes its end + gap, and each
    silence milestone reached before the user's next event (or before `observed_until`). The
    clock is taken to pass every timer before the next event, as it does on a stream whose
    other users keep it moving."""
    state = empty_state()
    out: list[Window] = []

    def run_timers(until: int) -> None:
        nonlocal state
        while (due := due_at(state, timers)) is not None and due < until:
            fire(state, due, timers)
            out.extend(_scored(state, with_current=False))
            state = delivered(state)

    for doc in events:
        run_timers(doc["ts"])
        absorb(state, validated(doc, policy), policy)
        out.extend(_scored(state, with_current=True))
        state = delivered(state)
    run_timers(observed_until + 1)
    return out


def _scored(state: UserState, with_current: bool) -> list[Window]:
    """The worker's scoring items of this state as windows (sessions copied: they change)."""
    return [Window({**item.session, "events": list(item.session["events"])},
                   tuple(item.features), item.trigger == "event", item.trigger, item.as_of)
            for item in scoring_items(state, with_current)]


def live_windows(
    events: Sequence[dict[str, Any]], policy: SessionPolicy, prefix_cuts: dict[str, int]
) -> list[Window]:
    """Every session of a user's history with its FEATURES row, plus a prefix window for each
    session id in `prefix_cuts` (after that many of its events), in one pass through `absorb`:
    closed sessions carry the row frozen at their close, the open one (and each prefix) the row
    as of its newest event."""
    state = empty_state()
    out: list[Window] = []
    cuts = dict(prefix_cuts)  # each cut is taken once
    closed = 0
    for doc in events:
        absorb(state, validated(doc, policy), policy)
        for session in state["pending"][closed:]:
            out.append(_snapshot(state, session, prefix=False))
        closed = len(state["pending"])
        current = state["current"]
        if current is not None and cuts.get(current["session_id"]) == current["n_events"]:
            del cuts[current["session_id"]]
            out.append(_snapshot(state, current, prefix=True))
    if state["current"] is not None:
        out.append(_snapshot(state, state["current"], prefix=False))
    return out


def _prefix_cuts(sessions: Sequence[Session], prefix_share: float,
                 rng: random.Random) -> dict[str, int]:
    """Which sessions also give a mid-session window, and after how many events (seeded)."""
    cuts = {}
    for session in sessions:
        n = len(session["events"])
        if n > 1 and n == session["n_events"] and rng.random() < prefix_share:
            cuts[session["session_id"]] = rng.randint(1, n - 1)
    return cuts


def examples_of(
    history: UserHistory,
    session_policy: SessionPolicy,
    label_policy: LabelPolicy = DEFAULT_LABEL_POLICY,
    *,
    prefix_share: float,
    rng: random.Random,
    timers: TimerPolicy | None = None,
) -> list[Example]:
    """The resolved windows of one user's history, each with its text, features and labels:
    the worker's triggers with `timers` (`worker_windows`), else closed sessions and sampled
    prefixes (`live_windows`, `prefix_share`)."""
    if timers is not None:
        windows = worker_windows(history.events, session_policy, timers,
                                 history.observed_until)
    else:
        cuts = _prefix_cuts(sessions_of(history.events, session_policy), prefix_share, rng)
        windows = live_windows(history.events, session_policy, cuts)
    out = []
    for window in windows:
        session = window.session
        labels = label_window(
            session["events"], window.labelled_from, history.events, history.observed_until,
            label_policy,
        )
        if not labels.resolved:
            continue
        out.append(
            Example(
                user_id=history.user_id,
                text=render(session, session_policy.max_chars),
                strength=labels.strength,  # type: ignore[arg-type]  # resolved: not None
                intent_type=labels.intent_type,
                churn=bool(labels.churn),
                window_end=window.labelled_from,
                prefix=window.prefix,
                features=window.features,
                trigger=window.trigger,
                session_id=session["session_id"],
                free_text=free_text_digest(session),
                n_events=session["n_events"],
                reads=reading_digest(session),
                kinds=kinds_mask(session),
            )
        )
    return out


def split_users(user_ids: Sequence[str], seed: int, fractions: Sequence[float]) -> dict[str, str]:
    """Each user to exactly one of SPLITS, by a seeded shuffle: no user's windows span splits."""
    if len(fractions) != len(SPLITS) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions {fractions} must be {len(SPLITS)} shares summing to 1")
    users = sorted(set(user_ids))
    random.Random(f"split:{seed}").shuffle(users)
    n_train = round(fractions[0] * len(users))
    n_val = round(fractions[1] * len(users))
    bounds = (n_train, n_train + n_val)  # train below the first, validation below the second
    return {user: SPLITS[sum(i >= b for b in bounds)] for i, user in enumerate(users)}


def build_splits(
    histories: Sequence[UserHistory],
    session_policy: SessionPolicy,
    label_policy: LabelPolicy = DEFAULT_LABEL_POLICY,
    *,
    seed: int,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    prefix_share: float = 0.5,
    max_windows_per_user: int | None = None,
    max_heldout_windows_per_user: int | None = None,
    timers: TimerPolicy | None = None,
) -> dict[str, list[Example]]:
    """Labelled windows of all users, grouped by the split their user belongs to. A cap on
    windows per user (a seeded sample) spreads a fixed training budget over more users; held-out
    users (validation, test) have their own cap (default: the same), since more of their windows
    cost only prediction and give the stacked heads (fitted on validation) more rows."""
    heldout_cap = (max_windows_per_user if max_heldout_windows_per_user is None
                   else max_heldout_windows_per_user)
    assignment = split_users([h.user_id for h in histories], seed, fractions)
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for history in histories:
        rng = random.Random(f"windows:{seed}:{history.user_id}")
        examples = examples_of(history, session_policy, label_policy, prefix_share=prefix_share,
                               rng=rng, timers=timers)
        split = assignment[history.user_id]
        cap = max_windows_per_user if split == "train" else heldout_cap
        if cap is not None and len(examples) > cap:
            keep = sorted(rng.sample(range(len(examples)), cap))
            examples = [examples[i] for i in keep]
        splits[split].extend(examples)
    return splits


# --- label indices per head, as the fitting code takes them --------------------------------------


Targets = dict[str, list[int]]  # head -> one label index per window (churn: 0/1)


def worker_session_policy() -> SessionPolicy:
    """The worker's session policy (streams/settings.py), so training texts match live ones."""
    return get_settings().session_policy()


def worker_timer_policy() -> TimerPolicy:
    """The worker's timers (session gap and span, silence milestones from the settings)."""
    return get_settings().timer_policy()


def targets_of(examples: Sequence[Any]) -> Targets:
    """Label indices per head of windows or feedback examples: anything with `strength`,
    `intent_type` and `churn` labels, on itself (`Example`) or on `.labels` (`FeedbackExample`)."""
    labels = [getattr(x, "labels", x) for x in examples]
    return {
        "strength": [STRENGTH_LABELS.index(x.strength) for x in labels],
        "intent_type": [INTENT_TYPE_LABELS.index(x.intent_type) for x in labels],
        "churn": [int(x.churn) for x in labels],
    }


def label_counts(targets: Targets) -> dict[str, dict[str, int]]:
    """Per head, how many examples carry each label (every label listed, zeros included)."""
    return {head: {label: targets[head].count(i) for i, label in enumerate(labels)}
            for head, labels in MODEL_HEADS.items()}
