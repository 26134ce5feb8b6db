"""The platform's own event history → labelled windows, split by time (`intentstream train
--events FILE` or `--from T --to T`).

Only the source of histories differs from a simulated run; windows, FEATURES rows and labels
come from the live code path (`training.data.examples_of`: `streams.core.sessions` and
`streams.core.labelling`), so the model learns what the worker scores.

- **Reading.** A JSONL or CSV file of events is read as replay reads it
  (`training.data.event_files`: one event per line, or one column per event field with `item.*`
  flattened and optional cells blank); the events topic is read between two event times with a
  plain consumer (no group, no commits: `streams.runtime.topic_reader`), broker, topic and
  security from the settings.
- **Validation, as the worker's.** Each record goes through `parse_event` (the `ShopEvent`
  contract, size limit, privacy, the settings' event-time bounds), then `not_from_the_future`
  where the record has a timestamp, then the worker's re-send check: a second event with the same
  user and event id is a `duplicate` (same content) or a `conflicting_duplicate`. On the topic an
  event outside [from, to) is `before_range` / `after_range`. Every dropped record is counted by
  reason; no valid event at all is `NoValidEvents` (the CLI prints the counts and exits 2).
- **Histories.** Valid events grouped by user and sorted by (event time, event id); the history
  is complete up to the newest valid event (a file) or up to `--to` (the topic).
- **Split by time.** Two split times at the quantiles of event time (shares of events:
  `--validation-share`, `--test-share`). Train windows end before the first, labelled from the
  history cut there; validation windows end between the two, labelled from the history cut at
  the second; test windows end after it, labelled from the whole history. So training never
  sees an event at or after its split time, not even in a label, and test is the newest part.
  A window whose labels the cut leaves unresolved is dropped, as in simulated runs.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streams.core.clock import SilenceSchedule
from streams.core.events import Rejection, ShopEvent, not_from_the_future, parse_event
from streams.core.features import feature_vector
from streams.core.labelling import LabelPolicy, label_window
from streams.core.raw_message import RawMessage
from streams.core.sessions import SessionPolicy, absorb, empty_state, render
from streams.core.silence import TimerPolicy, fire
from streams.core.timeunits import DAY_MS, iso
from streams.settings import Settings
from training.data import event_files
from training.data.simulator import UserHistory
from training.data.windows import (
    SPLITS,
    Example,
    examples_of,
    split_users,
    validated,
)


class NoValidEvents(ValueError):
    """A file or range with no usable event: the message carries the counts by reason."""


class TooLittleHistory(ValueError):
    """Valid events, but a split without windows (or a head with one label in training)."""


@dataclass(frozen=True, slots=True)
class Validated:
    events: list[ShopEvent]  # valid, in input order
    records: int  # records read
    dropped: Counter[str]  # reason -> records dropped


@dataclass(frozen=True, slots=True)
class TimeSplit:
    test_from: int  # event time: test windows end at or after it, the others settle before it
    observed_until: int  # the history is complete up to this event time
    settles_ms: int  # a window's labels are all decided this long after its end


@dataclass(frozen=True, slots=True)
class HistoryData:
    splits: dict[str, list[Example]]
    card: dict[str, Any]  # the model card's "data" fields for this source
    histories: dict[str, list[dict[str, Any]]]  # user -> valid events, sorted
    fit_before: int  # models fitted on the history (customer value) see only events before it


# --- reading --------------------------------------------------------------------------------------


def read_topic(settings: Settings, from_ms: int, to_ms: int,
               idle_s: float = 1.0) -> tuple[list[RawMessage], dict[str, Any]]:
    """The events topic's records stamped in [from_ms - skew, to_ms + skew), the skew being
    the producer clock slack the worker allows (`watermark_lateness_s`): event times, not
    record stamps, decide what is in the range (`validate`)."""
    from streams.runtime.reachable import require_listening
    from streams.runtime.topic_reader import KafkaRange, read_kafka  # aiokafka: serve extra
    from streams.runtime.topics import bootstrap_servers

    skew = int(settings.watermark_lateness_s * 1000)
    spec = KafkaRange(bootstrap=bootstrap_servers(settings.broker_url),
                      topic=settings.events_topic, from_ms=from_ms - skew,
                      until_ms=to_ms + skew, idle_s=idle_s,
                      client_kwargs=settings.kafka_client_kwargs())
    require_listening(spec.bootstrap, "broker",
                      "start one, or point INTENTSTREAM_BROKER_URL at it")
    messages = asyncio.run(read_kafka(spec))
    return messages, {"type": "kafka", "topic": spec.topic, "from": iso(from_ms),
                      "to": iso(to_ms)}


# --- validation, grouping, split ------------------------------------------------------------------


def validate(messages: Sequence[RawMessage], settings: Settings,
             event_range: tuple[int, int] | None = None) -> Validated:
    """The records the worker would absorb; the others counted by reason (module docstring)."""
    policy = settings.session_policy()
    privacy = settings.privacy_policy()
    dropped: Counter[str] = Counter()
    seen: dict[tuple[str, str], str] = {}  # (user, event id) -> content
    events = []
    for msg in messages:
        parsed = parse_event(msg.value, msg.key, settings.max_event_bytes, privacy,
                             policy.ts_bounds)
        if not isinstance(parsed, Rejection):
            parsed = not_from_the_future(parsed, msg.timestamp_ms, policy.max_future_ms)
        if isinstance(parsed, Rejection):
            dropped[parsed.reason] += 1
            continue
        if event_range is not None and parsed.ts < event_range[0]:
            dropped["before_range"] += 1
            continue
        if event_range is not None and parsed.ts >= event_range[1]:
            dropped["after_range"] += 1
            continue
        key, content = (parsed.user_id, parsed.event_id), parsed.model_dump_json()
        earlier = seen.get(key)
        if earlier is not None:  # the worker's re-send check (streams.core.sessions.admit)
            dropped["duplicate" if earlier == content else "conflicting_duplicate"] += 1
            continue
        seen[key] = content
        events.append(parsed)
    return Validated(events, len(messages), dropped)


def require_valid(validated: Validated, where: str) -> None:
    """`NoValidEvents` with the counts by reason when nothing is left to learn from."""
    if validated.events:
        return
    counts = ", ".join(f"{reason} {n}" for reason, n in validated.dropped.most_common())
    raise NoValidEvents(f"no valid event to train on in {where}: {validated.records} records"
                        + (f", rejected: {counts}" if counts else ""))


def group_by_user(events: Iterable[ShopEvent]) -> dict[str, list[dict[str, Any]]]:
    """Each user's events as event dicts, sorted by (event time, event id)."""
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_user[event.user_id].append(event.model_dump(exclude_none=True))
    return {user: sorted(docs, key=lambda d: (d["ts"], d["event_id"]))
            for user, docs in sorted(by_user.items())}


def split_time(event_times: Sequence[int], test_share: float, observed_until: int,
               settles_ms: int) -> TimeSplit:
    """The split time: the newest `test_share` of the events that can still carry settled
    labels (at least `settles_ms` before `observed_until`) fall after it."""
    times = np.sort(np.asarray(event_times, dtype=np.int64))
    labelled = times[times + settles_ms <= observed_until]
    if len(labelled) == 0:
        labelled = times  # nothing settles: require_trainable says why
    at = int(labelled[min(len(labelled) - 1, int((1 - test_share) * len(labelled)))])
    return TimeSplit(test_from=at, observed_until=observed_until, settles_ms=settles_ms)


def settled(examples: Iterable[Example], start: int | None, until: int,
            settles_ms: int) -> list[Example]:
    """Windows ending at or after `start` whose every label is decided by `until`, whatever
    the user did: keeping windows that resolved early (a purchase, a return) and dropping the
    rest would bias the labels near the cut towards `strong` and `no churn`."""
    return [x for x in examples
            if (start is None or x.window_end >= start) and x.window_end + settles_ms <= until]


def part_examples(
    user: str, events: Sequence[dict[str, Any]], split: TimeSplit, session_policy: SessionPolicy,
    label_policy: LabelPolicy, *, prefix_share: float, seed: int,
    timers: TimerPolicy | None = None,
) -> tuple[list[Example], list[Example]]:
    """One user's settled windows before the split time (labelled from the events before it:
    nothing at or after the split time reaches training) and after it (test, labelled from the
    whole history; its FEATURES rows read the user's past, as the worker's do)."""
    older = UserHistory(user, "history", tuple(e for e in events if e["ts"] < split.test_from),
                        (), split.test_from - 1)
    whole = UserHistory(user, "history", tuple(events), (), split.observed_until)
    parts = []
    for history, start, until in ((older, None, split.test_from - 1),
                                  (whole, split.test_from, split.observed_until)):
        rng = random.Random(f"windows:{seed}:{user}")  # the same prefix cuts in both parts
        examples = examples_of(history, session_policy, label_policy,
                               prefix_share=prefix_share, rng=rng, timers=timers)
        parts.append(settled(examples, start, until, split.settles_ms))
    return parts[0], parts[1]


def capped(examples: list[Example], cap: int | None, rng: random.Random) -> list[Example]:
    if cap is None or len(examples) <= cap:
        return examples
    return [examples[i] for i in sorted(rng.sample(range(len(examples)), cap))]


def history_splits(
    histories: dict[str, list[dict[str, Any]]], split: TimeSplit, session_policy: SessionPolicy,
    label_policy: LabelPolicy, *, seed: int, validation_share: float, prefix_share: float,
    max_windows_per_user: int | None, max_heldout_windows_per_user: int | None,
    timers: TimerPolicy | None = None,
) -> dict[str, list[Example]]:
    """Test: every window after the split time. Train and validation: the windows before it,
    by user (validation early-stops the network and fits the stacked heads: it must not share
    users with train). Capped per user as in simulated runs."""
    heldout_cap = (max_windows_per_user if max_heldout_windows_per_user is None
                   else max_heldout_windows_per_user)
    assignment = split_users(list(histories), seed, (1 - validation_share, validation_share, 0))
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for user, events in histories.items():
        rng = random.Random(f"cap:{seed}:{user}")
        older, newer = part_examples(user, events, split, session_policy, label_policy,
                                     prefix_share=prefix_share, seed=seed, timers=timers)
        name = assignment[user]
        splits[name].extend(capped(older, max_windows_per_user if name == "train"
                                   else heldout_cap, rng))
        splits["test"].extend(capped(newer, heldout_cap, rng))
    return splits


def require_trainable(splits: dict[str, list[Example]], split: TimeSplit) -> None:
    """`TooLittleHistory` where a split has no window: say how much history labels need."""
    empty = [name for name in SPLITS if not splits[name]]
    if empty:
        days = split.settles_ms / DAY_MS
        raise TooLittleHistory(
            f"no settled window in the {', '.join(empty)} split(s) (split time "
            f"{iso(split.test_from)}, history complete until {iso(split.observed_until)}): a "
            f"window is kept once its labels are settled ({days:g} days after it, the longer "
            "of --horizon-hours and --churn-days), so each side of the split time needs more "
            "history than that — give a longer history, more users, or shorter horizons")


# --- the whole source -----------------------------------------------------------------------------


def load(data_args: Any, settings: Settings, session_policy: SessionPolicy,
         label_policy: LabelPolicy, seed: int) -> HistoryData:
    """`--events FILE` or `--from/--to` → the three splits and the card's data section."""
    messages, description, event_range, where = read_source(data_args, settings)
    validated = validate(messages, settings, event_range)
    require_valid(validated, where)
    histories = group_by_user(validated.events)
    newest = max(e.ts for e in validated.events)
    # The topic is complete up to --to once --to has passed; a file up to its newest event.
    observed = newest if event_range is None else min(event_range[1] - 1,
                                                      max(newest, now_ms() - 1))
    split = split_time([e.ts for e in validated.events], data_args.test_share, observed,
                       label_policy.settles_after_ms)
    splits, fit_before, how = windows_by_time_or_cut(data_args, histories, split,
                                                     session_policy, label_policy, settings,
                                                     seed)
    splits["train"] = capped(splits["train"], data_args.max_windows,
                             random.Random(f"total:{seed}"))
    card = history_card(data_args, description, validated, histories, split, splits, how)
    return HistoryData(splits, card, histories, fit_before)


def read_source(data_args: Any, settings: Settings
                ) -> tuple[list[RawMessage], dict[str, Any], tuple[int, int] | None, str]:
    """The file or the topic's range: (messages, description, event range, where)."""
    if data_args.events:
        messages, description = event_files.read_events(Path(data_args.events))
        return messages, description, None, str(data_args.events)
    event_range = data_args.history_range()
    messages, description = read_topic(settings, *event_range)
    where = f"{settings.events_topic} from {iso(event_range[0])} to {iso(event_range[1])}"
    return messages, description, event_range, where


def windows_by_time_or_cut(
    data_args: Any, histories: dict[str, list[dict[str, Any]]], split: TimeSplit,
    session_policy: SessionPolicy, label_policy: LabelPolicy, settings: Settings, seed: int,
) -> tuple[dict[str, list[Example]], int, dict[str, str] | None]:
    """The time split's windows; where it cannot settle labels on both of its sides (or with
    --split cut), one earlier cut's. (splits, the time the customer value is fitted before,
    how the cut was chosen or None)."""
    timers = settings.timer_policy() if data_args.windows == "worker" else None
    caps = {"max_windows_per_user": data_args.history_windows_per_user(),
            "max_heldout_windows_per_user": data_args.heldout_windows_per_user}
    splits = history_splits(
        histories, split, session_policy, label_policy, seed=seed,
        validation_share=data_args.validation_share, prefix_share=data_args.prefix_share,
        timers=timers, **caps)
    try:
        if data_args.split == "cut":
            raise TooLittleHistory("--split cut")
        require_trainable(splits, split)
        young = None if data_args.split == "time" else labelled_too_young(histories, split)
        if young:
            raise TooLittleHistory(young)
        return splits, split.test_from, None
    except TooLittleHistory as error:  # labels cannot settle on both sides of one split time
        if data_args.split == "time":
            raise
        cut = split.observed_until - split.settles_ms
        splits = cut_splits(histories, cut, split.observed_until, session_policy, label_policy,
                            seed=seed, fractions=data_args.split_fractions(),
                            prefix_share=data_args.prefix_share, timers=timers, **caps)
        require_cut_trainable(splits, cut, error)
        return splits, cut + 1, {"why": str(error), "cut": iso(cut)}


def labelled_too_young(histories: dict[str, list[dict[str, Any]]],
                       split: TimeSplit) -> str | None:
    """Why the time split's labelled windows cannot stand for the history's end, or None: they
    all end in the history's first half. Churn is asked at the history's end, of customers
    older and silent longer than any such window (9 months of orders, a 90-day horizon: the
    labelled windows end by day 38), and what is learned there does not carry so far."""
    first = min(events[0]["ts"] for events in histories.values() if events)
    labelled_until = split.test_from - split.settles_ms
    middle = first + (split.observed_until - first) // 2
    if labelled_until >= middle:
        return None
    return (f"the time split's labelled windows end by {iso(labelled_until)}, in the first half "
            f"of a history from {iso(first)} to {iso(split.observed_until)}: scores are asked "
            "at its end, of customers older and silent longer than any of them")


def history_card(data_args: Any, description: dict[str, Any], validated: Validated,
                 histories: dict[str, list[dict[str, Any]]], split: TimeSplit,
                 splits: dict[str, list[Example]], how: dict[str, str] | None) -> dict[str, Any]:
    """The model card's data section for a history."""
    first = min(e.ts for e in validated.events)
    newest = max(e.ts for e in validated.events)
    return {
        "source": f"the platform's own events ({description['type']}: "
                  f"{description.get('name') or description.get('topic')})",
        "history": {
            **description,
            "records": validated.records,
            "valid_events": len(validated.events),
            "dropped": dict(validated.dropped.most_common()),
            "users": len(histories),
            "first_event": iso(first),
            "observed_until": iso(split.observed_until),
            "event_types": dict(Counter(e.type for e in validated.events).most_common()),
            "split": "by event time: test windows end at or after test_from; train and "
                     "validation windows (split by user) settle before it, labelled from the "
                     "events before it; every kept window's labels are settled",
            "test_from": iso(split.test_from),
            "labels_settle_days": split.settles_ms / DAY_MS,
            "windows": data_args.windows,
            "triggers": dict(Counter(x.trigger for part in splits.values() for x in part)),
            **({"earlier_cut": {
                **how, "split": "one earlier cut, the newest time whose labels are settled "
                "(observed until - labels_settle_days): windows as of the cut or before it "
                "(each user's last session with FEATURES as of the cut among them), labelled "
                "from the horizon after them, split by user into train, validation and test; "
                "the time split above could not settle labels on both of its sides"}}
               if how else {}),
        },
        "users": len(histories),
        "sim_days": (newest - first) / DAY_MS,  # the history's span, in the card's field
        "archetype_mix": "n/a (real history)",
    }


def cut_splits(
    histories: dict[str, list[dict[str, Any]]], cut: int, observed_until: int,
    session_policy: SessionPolicy, label_policy: LabelPolicy, *, seed: int,
    fractions: tuple[float, float, float], prefix_share: float, timers: TimerPolicy | None,
    max_windows_per_user: int | None, max_heldout_windows_per_user: int | None,
) -> dict[str, list[Example]]:
    """Windows whose labels are settled by `observed_until` (those as of `cut` or before),
    plus each user's window at the cut itself, split by user."""
    assignment = split_users(list(histories), seed, fractions)
    heldout_cap = (max_windows_per_user if max_heldout_windows_per_user is None
                   else max_heldout_windows_per_user)
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for user, events in histories.items():
        whole = UserHistory(user, "history", tuple(events), (), observed_until)
        rng = random.Random(f"windows:{seed}:{user}")
        examples = settled(examples_of(whole, session_policy, label_policy,
                                       prefix_share=prefix_share, rng=rng, timers=timers),
                           None, observed_until, label_policy.settles_after_ms)
        name = assignment[user]
        examples = capped(examples, max_windows_per_user if name == "train" else heldout_cap,
                          random.Random(f"cap:{seed}:{user}"))
        at_cut = window_at(whole, cut, session_policy, label_policy)
        splits[name].extend(examples + ([at_cut] if at_cut else []))
    return splits


def window_at(history: UserHistory, as_of: int, session_policy: SessionPolicy,
              label_policy: LabelPolicy) -> Example | None:
    """The user's last session before `as_of` with FEATURES as of it (the clock closed the
    session, as the worker's does, if its gap has passed), labelled from after it; None for a
    user with no event before it or labels not settled."""
    before = [e for e in history.events if e["ts"] < as_of]
    if not before:
        return None
    state = empty_state()
    for doc in before:
        absorb(state, validated(doc, session_policy), session_policy)
    fire(state, as_of, TimerPolicy.of(session_policy, SilenceSchedule((1,))))
    session = state["current"] or state.get("last_closed")
    if session is None:
        return None
    labels = label_window(session["events"], as_of, history.events, history.observed_until,
                          label_policy)
    if not labels.resolved:
        return None
    return Example(user_id=history.user_id, text=render(session, session_policy.max_chars),
                   strength=labels.strength,  # type: ignore[arg-type]  # resolved
                   intent_type=labels.intent_type, churn=bool(labels.churn), window_end=as_of,
                   prefix=False,
                   features=tuple(feature_vector(session, state.get("profile"), as_of=as_of)),
                   trigger="cut")


def require_cut_trainable(splits: dict[str, list[Example]], cut: int,
                          error: TooLittleHistory) -> None:
    empty = [name for name in SPLITS if not splits[name]]
    if empty:
        raise TooLittleHistory(f"{error}; an earlier cut at {iso(cut)} left the "
                               f"{', '.join(empty)} split(s) empty too") from error


def guarded_load(data_args: Any, settings: Settings, session_policy: SessionPolicy,
                 label_policy: LabelPolicy, seed: int) -> HistoryData | int:
    """`load`, or the exit status after one line on stderr: 2 for a bad request (no file or
    topic, no valid event, too little history), 1 for a broker that does not answer."""
    from aiokafka.errors import KafkaError

    from streams.runtime.reachable import Unreachable

    try:
        return load(data_args, settings, session_policy, label_policy, seed)
    except (FileNotFoundError, LookupError, NoValidEvents, TooLittleHistory) as error:
        print(f"train: {error}", file=sys.stderr)
        return 2
    except (Unreachable, KafkaError) as error:
        print(f"train: {error}", file=sys.stderr)
        return 1


def now_ms() -> int:
    return int(time.time() * 1000)
