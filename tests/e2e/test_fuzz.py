"""Bad input at scale through the real worker: ≥ 10,000 hypothesis-generated malformed events
(wrong types, huge fields, broken UTF-8, nested junk, missing keys, wrong keys, raw garbage)
interleaved with valid traffic. Each malformed one lands in the DLQ with a reason, every
valid one is scored, and the worker stays up.

Hypothesis only generates here (no shrinking: the checks run after the whole lot went through
the worker). The seed is printed; INTENTSTREAM_FUZZ_SEED=<seed> replays a run.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.e2e.faults import MANY_ALERTS, dead_letters_by_source, finish, tally
from tests.e2e.kafka_io import produce, run
from tests.e2e.traffic import make_traffic
from tests.strategies import Case, malformed_events

pytestmark = pytest.mark.e2e

EXAMPLES, PER_EXAMPLE = 420, 25  # 10,500 malformed events


def generate_malformed(fuzz_seed: int) -> list[Case]:
    cases: list[Case] = []

    @seed(fuzz_seed)
    @settings(max_examples=EXAMPLES, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(malformed_events(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def collect(batch: list[Case]) -> None:
        cases.extend(batch)

    collect()
    return cases


def test_ten_thousand_malformed_events_all_dead_lettered_valid_ones_all_scored(stack):
    fuzz_seed = int(os.environ.get("INTENTSTREAM_FUZZ_SEED") or random.randrange(2**32))
    started = time.monotonic()
    malformed = generate_malformed(fuzz_seed)
    generated = time.monotonic()
    assert len(malformed) >= 10_000
    traffic = make_traffic(n_users=100, events_per_user=(5, 10), n_malformed=0, seed=31)
    records = list(traffic.records)
    rng = random.Random(fuzz_seed)
    is_bad = [False] * len(records)
    for raw, key in malformed:  # interleave the bad with the good
        at = rng.randrange(len(records) + 1)
        records.insert(at, (key, raw))
        is_bad.insert(at, True)

    worker = stack.start_worker(**MANY_ALERTS)
    metadata = run(produce(stack.bootstrap, stack.topics["events"], records))
    outputs = finish(stack, worker, metadata)
    drained = time.monotonic()
    counts = tally("fuzz", len(records), traffic.valid, len(malformed), outputs, stack)
    dlq = dead_letters_by_source(outputs[stack.topics["dlq"]])
    reasons = Counter(d["reason"] for d in dlq.values())
    print(f"[fault:fuzz] seed {fuzz_seed}; generated {len(malformed)} in "
          f"{generated - started:.1f}s, produced and drained in {drained - generated:.1f}s; "
          f"DLQ reasons {dict(reasons.most_common())}")

    bad_at = {(md.partition, md.offset) for md, bad in zip(metadata, is_bad, strict=True) if bad}
    assert set(dlq) == bad_at  # each malformed event dead-lettered once, no valid one
    assert all(d["reason"] and d["detail"] and "raw_b64" in d for d in dlq.values())
    assert len(reasons) >= 6  # the strategies reach many different failures
    assert counts.dlq == counts.malformed
    assert counts.lost == 0 and counts.overcounted == 0 and counts.duplicate_alerts == 0
    assert worker.alive, worker.log_tail()
