from __future__ import annotations

from collections import Counter

from streams.core.features import FEATURE_NAMES
from streams.core.sessions import render
from tests.training.conftest import WORKER_POLICY
from training.data.simulator import UserHistory
from training.data.windows import SPLITS, build_splits, examples_of, sessions_of, split_users


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


def test_window_features_are_what_the_worker_sends(histories: list[UserHistory]) -> None:
    """Training's window rows equal the rows plan_batch puts in ToScore for the same events,
    fed one event per micro-batch as a live worker may see them (closed sessions: the row
    frozen at their close; prefixes: the open session's row after its k-th event)."""
    import orjson

    from streams.core.batching import plan_batch
    from streams.core.raw_message import RawMessage
    from training.data.windows import live_windows

    for history in [h for h in histories if len(h.sessions) >= 3][:4]:
        sessions = sessions_of(history.events, WORKER_POLICY)
        cuts = {s["session_id"]: max(1, s["n_events"] // 2) for s in sessions}
        windows = live_windows(history.events, WORKER_POLICY, cuts)
        assert sum(w.prefix for w in windows) == len(cuts)
        closed: dict[str, list[float]] = {}
        open_rows: dict[tuple[str, int], list[float]] = {}
        table: dict = {}
        for i, doc in enumerate(history.events):
            message = RawMessage(doc["user_id"].encode(), orjson.dumps(doc), "ev", 0, i, None)
            plan = plan_batch([message], table.get, WORKER_POLICY, 16_384)
            assert not plan.dead_letters
            for item in plan.to_score:
                if item.closed:
                    closed[item.session["session_id"]] = item.features
                else:
                    open_rows[(item.session["session_id"], item.session["n_events"])] = (
                        item.features)
            table.update({u: {**s, "pending": []} for u, s in plan.states.items()})
        last = sessions[-1]["session_id"]
        for window in windows:
            sid, n = window.session["session_id"], window.session["n_events"]
            live = open_rows[(sid, n)] if window.prefix or sid == last else closed[sid]
            assert list(window.features) == live
        assert len({w.features for w in windows}) > len(windows) // 2  # not a constant row
        sessions_column = FEATURE_NAMES.index("profile_sessions")
        assert [w.features[sessions_column] for w in windows if not w.prefix] == list(
            range(1, len(sessions) + 1))  # the profile spans the whole history


def test_examples_carry_their_windows_features(histories: list[UserHistory]) -> None:
    import random

    from streams.core.features import N_FEATURES

    history = next(h for h in histories if len(h.sessions) >= 3)
    examples = examples_of(history, WORKER_POLICY, prefix_share=1.0, rng=random.Random(0))
    assert examples and all(len(x.features) == N_FEATURES for x in examples)
    assert any(x.prefix for x in examples)
