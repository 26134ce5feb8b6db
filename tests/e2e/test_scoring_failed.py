"""A model version that fails on one specific text: that session is dead-lettered as
`scoring_failed`, every other user is scored, and the partition's commit reaches the end.

The real tritonserver serves a tiny intent_bert whose version code answers an error for any
request holding one token (as a model that crashes on some input would); the worker is real.
"""

from __future__ import annotations

import time

import orjson
import pytest

from inference.model.tokenizer import load_tokenizer
from inference.tritonserver import tiny_triton_server
from tests.e2e.kafka_io import committed_offsets, produce, read_to_end, read_until, run
from tests.e2e.test_slice import all_users_complete, events_per_user
from tests.e2e.traffic import T0, make_traffic

pytestmark = pytest.mark.e2e

POISON_WORD = "zebra"


def poison_version(version_dir, token_id: int) -> None:
    """Make this version's backend reject every request that holds `token_id`."""
    code = (version_dir / "model.py").read_text()
    check = "        if ids.ndim != 2"
    assert check in code, "the backend's input check moved: update this test"
    poisoned = code.replace(check, f"        if ({token_id} == ids).any():\n"
                                   "            return 'this model cannot score this text'\n"
                                   + check, 1)
    (version_dir / "model.py").write_text(poisoned)


def test_a_text_the_model_rejects_is_dead_lettered_and_the_rest_flows(stack, tmp_path):
    token_id = load_tokenizer()(POISON_WORD)["input_ids"][1]
    traffic = make_traffic(n_users=60, events_per_user=(4, 8), n_malformed=0, seed=5)
    poison = [{"event_id": f"poison-e{i}", "user_id": "user-poison", "ts": T0 + i * 60_000,
               "type": "search", "query": f"striped {POISON_WORD} costume"} for i in range(3)]
    records = traffic.records[:100] + [(b"user-poison", orjson.dumps(e)) for e in poison]
    records += traffic.records[100:]
    expected = events_per_user(traffic.valid)
    with tiny_triton_server(tmp_path / "triton") as server:
        poison_version(server.repo / "intent_bert" / "1", token_id)
        server.load_model("intent_bert")
        worker = stack.start_worker(INTENTSTREAM_TRITON_URL=server.grpc_url,
                                    INTENTSTREAM_SCORE_MAX_ATTEMPTS="2")
        positions = run(produce(stack.bootstrap, stack.topics["events"], records))
        seen = run(read_until(
            stack.bootstrap, [stack.topics["scores"]],
            lambda s: all_users_complete(expected)({"scores": s[stack.topics["scores"]]}),
            timeout_s=180, alive=lambda: worker.alive))
        ends: dict[int, int] = {}
        for meta in positions:
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        deadline = time.monotonic() + 30
        while True:
            committed = run(committed_offsets(stack.bootstrap, stack.name,
                                              stack.topics["events"], 4))
            if all(committed[p] == end for p, end in ends.items()) or time.monotonic() > deadline:
                break
            time.sleep(1)
        dlq = [orjson.loads(r.value)
               for r in run(read_to_end(stack.bootstrap, [stack.topics["dlq"]], 4))[
                   stack.topics["dlq"]]]
    scores = [orjson.loads(r.value) for r in seen[stack.topics["scores"]]]
    failed = [d for d in dlq if d["reason"] == "scoring_failed"]
    print(f"\n[scoring_failed] {len(records)} events, {len(scores)} scores, "
          f"{len(failed)} scoring_failed dead letters, committed {committed} vs ends {ends}")
    assert failed and {d["key_b64"] for d in failed} == {"dXNlci1wb2lzb24="}  # user-poison
    assert all(POISON_WORD in d["raw_preview"] for d in failed)  # the session text it failed on
    assert {d["reason"] for d in dlq} == {"scoring_failed"}
    assert "user-poison" not in {s["user_id"] for s in scores}
    assert {p: committed[p] for p in ends} == ends
    assert worker.alive, worker.log_tail()
