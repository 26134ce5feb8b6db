"""Simulated histories → labelled windows (text + three labels) → a split by user. Pure.

A window is exactly what the live worker scores: the user's events fed through
`streams.core.sessions.absorb` and rendered with `streams.core.sessions.render` under the
worker's policy.
Every closed session is one window; a seeded share of sessions also gives one prefix window (the
session as the worker saw it mid-way), because the worker scores open sessions too. Labels come
from `streams.core.labelling` on the events after the window's end; windows whose future is not
known far enough (near the end of the simulation) are dropped, never guessed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from streams.core.events import ShopEvent
from streams.core.labelling import DEFAULT_LABEL_POLICY, LabelPolicy, label_window
from streams.core.sessions import Session, SessionPolicy, absorb, empty_state, render
from training.simulator import UserHistory

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


def sessions_of(events: Iterable[dict[str, Any]], policy: SessionPolicy) -> list[Session]:
    """A user's sessions, as the worker builds them: events absorbed in order."""
    state = empty_state()
    for doc in events:
        absorb(state, ShopEvent.model_validate(doc), policy)
    closed = list(state["pending"])
    return closed + ([state["current"]] if state["current"] else [])


def session_prefix(events: Sequence[dict[str, Any]], k: int, policy: SessionPolicy) -> Session:
    """The session holding the first `k` of a session's events, as it was before the rest came."""
    (session,) = sessions_of(events[:k], policy)
    return session


def examples_of(
    history: UserHistory,
    session_policy: SessionPolicy,
    label_policy: LabelPolicy = DEFAULT_LABEL_POLICY,
    *,
    prefix_share: float,
    rng: random.Random,
) -> list[Example]:
    """The resolved windows of one user's history, each with its text and labels."""
    by_id = {e["event_id"]: e for e in history.events}
    windows: list[tuple[Session, bool]] = []
    for session in sessions_of(history.events, session_policy):
        windows.append((session, False))
        n = len(session["events"])
        if n > 1 and n == session["n_events"] and rng.random() < prefix_share:
            originals = [by_id[e["event_id"]] for e in session["events"]]
            windows.append((session_prefix(originals, rng.randint(1, n - 1), session_policy), True))
    out = []
    for session, prefix in windows:
        labels = label_window(
            session["events"], session["end"], history.events, history.observed_until, label_policy
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
                window_end=session["end"],
                prefix=prefix,
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
) -> dict[str, list[Example]]:
    """Labelled windows of all users, grouped by the split their user belongs to. A cap on
    windows per user (a seeded sample) spreads a fixed training budget over more users."""
    assignment = split_users([h.user_id for h in histories], seed, fractions)
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for history in histories:
        rng = random.Random(f"windows:{seed}:{history.user_id}")
        examples = examples_of(history, session_policy, label_policy, prefix_share=prefix_share,
                               rng=rng)
        if max_windows_per_user is not None and len(examples) > max_windows_per_user:
            keep = sorted(rng.sample(range(len(examples)), max_windows_per_user))
            examples = [examples[i] for i in keep]
        splits[assignment[history.user_id]].extend(examples)
    return splits
