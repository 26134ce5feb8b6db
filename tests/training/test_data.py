from __future__ import annotations

from collections import Counter

from streams.core.sessions import render
from training.data import SPLITS, build_splits, examples_of, sessions_of, split_users
from training.simulator import UserHistory

from .conftest import WORKER_POLICY


def test_split_by_user_puts_every_user_in_exactly_one_split() -> None:
    users = [f"u{i}" for i in range(1000)]
    assignment = split_users(users, seed=4, fractions=(0.7, 0.15, 0.15))
    assert set(assignment) == set(users)
    counts = Counter(assignment.values())
    assert (counts["train"], counts["validation"], counts["test"]) == (700, 150, 150)
    assert split_users(list(reversed(users)), 4, (0.7, 0.15, 0.15)) == assignment


def test_no_user_has_windows_in_two_splits(histories: list[UserHistory]) -> None:
    splits = build_splits(histories, WORKER_POLICY, seed=1, max_windows_per_user=4)
    owners = {name: {x.user_id for x in splits[name]} for name in SPLITS}
    assert all(owners[name] for name in SPLITS)
    assert not owners["train"] & owners["validation"]
    assert not owners["train"] & owners["test"]
    assert not owners["validation"] & owners["test"]
    assert all(Counter(x.user_id for x in splits[n]).most_common(1)[0][1] <= 4 for n in SPLITS)
    assert build_splits(histories, WORKER_POLICY, seed=1, max_windows_per_user=4) == splits


def test_window_texts_are_what_the_worker_renders(histories: list[UserHistory]) -> None:
    import random

    history = next(h for h in histories if len(h.sessions) >= 3)
    examples = examples_of(history, WORKER_POLICY, prefix_share=0.0, rng=random.Random(0))
    rendered = [render(s, WORKER_POLICY.max_chars) for s in sessions_of(history.events,
                                                                        WORKER_POLICY)]
    assert [x.text for x in examples] == rendered[: len(examples)]
    assert all(not x.prefix for x in examples)
