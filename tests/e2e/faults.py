"""Counting what a fault did: events in, scores out, DLQ records, lost events, duplicate alerts.

Shared by tests/e2e/test_faults.py and tests/e2e/test_fuzz.py. "Lost" is counted per user: a
user's latest score (the one with the most events absorbed) must cover exactly all the user's
valid events; each one short is a lost event. Alerts are keyed by (user, head): test traffic
spans under an hour of event time per user, inside the alert cooldown, so a trigger with more
than one alert id is a duplicate alert.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from aiokafka.structs import ConsumerRecord, RecordMetadata

from streams.runtime.processes import WorkerProcess
from tests.e2e.kafka_io import committed_offsets, read_to_end, run

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

PARTITIONS = 4  # the settings' default, which the e2e stack keeps
# Low thresholds, so alerts are plentiful and a duplicate after a fault would show.
MANY_ALERTS = {"INTENTSTREAM_ALERT_INTENT_THRESHOLD": "0.05",
               "INTENTSTREAM_ALERT_CHURN_THRESHOLD": "0.05"}


@dataclass(frozen=True)
class Counts:
    name: str
    events_in: int
    valid: int
    malformed: int
    scores_out: int
    dlq: int  # records on the DLQ: a batch redelivered after a rebalance repeats its own
    dlq_inputs: int  # distinct inputs (partition, offset) dead-lettered
    lost: int
    duplicate_alerts: int
    overcounted: int  # users whose latest score counts more events than they sent
    alerts: int

    def line(self) -> str:
        return (f"[fault:{self.name}] events in={self.events_in}, valid={self.valid}, "
                f"malformed={self.malformed}, scores out={self.scores_out}, DLQ={self.dlq} "
                f"({self.dlq_inputs} inputs), "
                f"lost={self.lost}, duplicate alerts={self.duplicate_alerts}")


def events_per_user(valid: Iterable[dict]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for event in valid:
        counts[event["user_id"]] += 1
    return dict(counts)


def latest_n_events(score_records: Iterable[ConsumerRecord]) -> dict[str, int]:
    """user -> events absorbed by the user's latest score (the most absorbed so far)."""
    latest: dict[str, int] = {}
    for rec in score_records:
        doc = orjson.loads(rec.value)
        latest[doc["user_id"]] = max(latest.get(doc["user_id"], 0), doc["window"]["n_events"])
    return latest


def alert_ids_by_trigger(alert_records: Iterable[ConsumerRecord]) -> dict[tuple[str, str], set]:
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for rec in alert_records:
        doc = orjson.loads(rec.value)
        ids[(doc["user_id"], doc["head"])].add(doc["alert_id"])
    return ids


def dead_letters(dlq_records: Iterable[ConsumerRecord]) -> list[dict]:
    return [orjson.loads(rec.value) for rec in dlq_records]


def dead_letters_by_source(dlq_records: Iterable[ConsumerRecord]) -> dict[tuple[int, int], dict]:
    """(partition, offset) of the input -> its dead letter. Matched by where the input was,
    not by its bytes: the DLQ may carry them with PII scrubbed."""
    found: dict[tuple[int, int], dict] = {}
    for d in dead_letters(dlq_records):
        at = (d["source"]["partition"], d["source"]["offset"])
        assert at not in found, f"two dead letters for one input at {at}"
        found[at] = d
    return found


def tally(name: str, events_in: int, valid: Sequence[dict], malformed: int,
          outputs: dict[str, list[ConsumerRecord]], stack: Stack) -> Counts:
    """Count, print the one-line summary, and return the counts."""
    expected = events_per_user(valid)
    latest = latest_n_events(outputs[stack.topics["scores"]])
    alerts = outputs[stack.topics["alerts_intent"]] + outputs[stack.topics["alerts_churn"]]
    counts = Counts(
        name=name, events_in=events_in, valid=len(valid), malformed=malformed,
        scores_out=len(outputs[stack.topics["scores"]]),
        dlq=len(outputs[stack.topics["dlq"]]),
        dlq_inputs=len({(d["source"]["partition"], d["source"]["offset"])
                        for d in dead_letters(outputs[stack.topics["dlq"]])}),
        lost=sum(max(0, n - latest.get(user, 0)) for user, n in expected.items()),
        duplicate_alerts=sum(len(ids) > 1 for ids in alert_ids_by_trigger(alerts).values()),
        overcounted=sum(latest.get(user, 0) > n for user, n in expected.items()),
        alerts=len(alerts),
    )
    print(f"\n{counts.line()}")
    return counts


# --- waiting for the worker ------------------------------------------------------------------


def input_ends(metadata: Iterable[RecordMetadata]) -> dict[int, int]:
    """partition -> the offset after the last record produced to it."""
    ends: dict[int, int] = {}
    for md in metadata:
        ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
    return ends


def wait_committed(stack: Stack, ends: dict[int, int], worker: WorkerProcess,
                   timeout_s: float) -> dict[int, int]:
    """Wait until the worker's group has committed all input: every batch fully processed."""
    deadline = time.monotonic() + timeout_s
    while True:
        committed = run(committed_offsets(stack.bootstrap, stack.name, stack.topics["events"],
                                          PARTITIONS))
        if all(committed.get(p, -1) >= end for p, end in ends.items()):
            return committed
        assert worker.alive, worker.log_tail()
        assert time.monotonic() < deadline, f"committed {committed}, input ends {ends}"
        time.sleep(0.5)


def output_topics(stack: Stack) -> list[str]:
    return [stack.topics[t] for t in ("scores", "dlq", "alerts_intent", "alerts_churn")]


def finish(stack: Stack, worker: WorkerProcess, metadata: Iterable[RecordMetadata],
           timeout_s: float = 180.0) -> dict[str, list[ConsumerRecord]]:
    """Wait until the worker has committed all input, then read all its outputs.

    A batch is committed only after its outputs were delivered, so at that point everything
    is on the output topics; what is missing from them then is lost."""
    wait_committed(stack, input_ends(metadata), worker, timeout_s=timeout_s)
    # Read to the fetch highwater: exact on Kafka and on Tansu (kafka_io.read_to_end).
    return run(read_to_end(stack.bootstrap, output_topics(stack), PARTITIONS))


def log_events(worker: WorkerProcess, event: str) -> list[dict]:
    """The worker's structured (JSON) log lines for one event name."""
    found = []
    for line in worker.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            doc = orjson.loads(line)
            if doc.get("event") == event:
                found.append(doc)
    return found
