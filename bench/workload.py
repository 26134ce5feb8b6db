"""The benchmark's traffic: the simulator's shoppers (training/simulator.py) in event-time order.

Realistic sessions (browse, compare, buy, abandon, support…) rather than uniform noise, so the
coalescing the worker gets from it is the coalescing a shop would give it. Different seeds give
disjoint users, so each measurement starts from empty per-user state.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field

import orjson

from inference.model.quality import HeldOut
from training.data.simulator import SimConfig, event_stream, simulate
from training.data.windows import build_splits, targets_of, worker_session_policy


@dataclass(frozen=True)
class Traffic:
    records: list[tuple[bytes, bytes]]  # (key, value), in produce (event-time) order
    event_ids: list[str]  # per record
    users: list[str]  # per record
    last_event: dict[str, str] = field(default_factory=dict)  # user -> their final event id

    def __len__(self) -> int:
        return len(self.records)

    def head(self, n: int) -> Traffic:
        return self.part(0, n)

    def part(self, start: int, stop: int) -> Traffic:
        """Records [start, stop): a later part continues the same users' streams."""
        return _traffic([orjson.loads(v) for _, v in self.records[start:stop]])


def shop_traffic(n_events: int, n_users: int, seed: int) -> Traffic:
    """The first `n_events` events of `n_users` simulated shoppers."""
    events = list(itertools.islice(event_stream(n_users, SimConfig(seed=seed)), n_events))
    if len(events) < n_events:
        raise ValueError(f"{n_users} users make only {len(events)} events; ask for more users")
    return _traffic(events)


def _traffic(events: list[dict]) -> Traffic:
    last: dict[str, str] = {}
    for e in events:
        last[e["user_id"]] = e["event_id"]
    return Traffic(
        records=[(e["user_id"].encode(), orjson.dumps(e)) for e in events],
        event_ids=[e["event_id"] for e in events],
        users=[e["user_id"] for e in events],
        last_event=last,
    )


def position_in_user(traffic: Traffic) -> dict[str, tuple[str, int]]:
    """event id -> (user, index among that user's events)."""
    seen: dict[str, int] = defaultdict(int)
    out: dict[str, tuple[str, int]] = {}
    for event_id, user in zip(traffic.event_ids, traffic.users, strict=True):
        out[event_id] = (user, seen[user])
        seen[user] += 1
    return out


def held_out_sessions(n_users: int, seed: int) -> HeldOut:
    """Labelled session windows of `n_users` simulated users that no traffic or training run
    uses (their own seed): what the quality bar checks a faster runtime on."""
    histories = simulate(n_users, SimConfig(seed=seed))
    windows = build_splits(histories, worker_session_policy(), seed=seed,
                           fractions=(0.0, 0.0, 1.0))["test"]
    return HeldOut([x.text for x in windows], targets_of(windows))
