"""Two real tritonservers behind one ReplicaSet: both do work (by their own statistics), and
killing one mid-stream fails no request."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import aio as grpcaio

from inference.client import OUTPUTS, TritonScorer, predictions_from_outputs
from inference.heads import Prediction
from inference.model.export import ensure_model
from inference.replicas import ReplicaSet
from inference.repository import ENSEMBLE, REPOSITORY_TEMPLATE, copy_repository
from inference.tritonserver import TritonServer

pytestmark = pytest.mark.e2e
TEXTS = ["search: trail running shoes | add_to_cart: Speedcross 6 (shoes, 129.99)",
         "support: where is my order, it is late again", "view: gift card"]


@pytest.fixture(scope="module")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny model both servers serve (read-only: a shared repository, as in Kubernetes)."""
    repo = copy_repository(REPOSITORY_TEMPLATE, tmp_path_factory.mktemp("replicas") / "repo")
    ensure_model(repo, tiny=True, seed=0)
    return repo


@pytest.fixture
def two_servers(model_repo: Path, tmp_path: Path) -> Iterator[list[TritonServer]]:
    """Two ready tritonservers on free ports, started side by side, stopped by PID."""
    with ExitStack() as stack:
        servers = [TritonServer(model_repo, log_path=tmp_path / f"triton-{name}.log")
                   for name in ("a", "b")]
        for server in servers:
            server.start()
            stack.callback(server.stop)
        for server in servers:
            server.wait_ready()
        yield servers


async def score(client: grpcaio.InferenceServerClient, texts: Sequence[str]) -> list[Prediction]:
    """One request to the ensemble, its outputs checked as the scorer checks them."""
    column = np.array([[t.encode()] for t in texts], dtype=np.object_)
    text = grpcclient.InferInput("TEXT", list(column.shape), "BYTES")
    text.set_data_from_numpy(column)
    result = await client.infer(ENSEMBLE, [text], client_timeout=30,
                                outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS])
    return predictions_from_outputs({n: result.as_numpy(n) for n in OUTPUTS}, len(texts))


async def executed(server: TritonServer) -> int:
    """Requests the server's ensemble completed, by the server's own statistics."""
    async with grpcaio.InferenceServerClient(server.grpc_url) as client:
        stats = await client.get_inference_statistics(model_name=ENSEMBLE, as_json=True)
    return int(stats["model_stats"][0]["inference_stats"]["success"].get("count", 0))


async def settled_counts(servers: Sequence[TritonServer], at_least: int) -> list[int]:
    """Each server's count once they add up to `at_least` (statistics trail the answers by a
    moment), or as they are after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        counts = [await executed(s) for s in servers]
        if sum(counts) >= at_least or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.2)


def test_concurrent_requests_are_spread_over_both_servers(
    two_servers: list[TritonServer],
) -> None:
    a, b = two_servers

    async def run() -> tuple[list[list[Prediction]], list[int]]:
        replicas = ReplicaSet(f"{a.grpc_url},{b.grpc_url}")
        try:
            results = await asyncio.gather(
                *(replicas.call(lambda client: score(client, TEXTS)) for _ in range(40)))
        finally:
            await replicas.close()
        return results, await settled_counts(two_servers, 40)

    results, counts = asyncio.run(run())
    assert all(len(r) == len(TEXTS) for r in results)
    print(f"\n[replicas] 40 concurrent requests, executed per server: {counts}")
    assert counts == [20, 20]  # round robin, by each server's own statistics


def test_the_scorer_splits_a_micro_batch_over_every_instance_of_both_servers(
    two_servers: list[TritonServer],
) -> None:
    async def run() -> tuple[list[Prediction], int]:
        url = ",".join(s.grpc_url for s in two_servers)
        async with TritonScorer(url, max_batch=4, timeout_s=30) as scorer:
            return await scorer.score(TEXTS * 8), await scorer.concurrency()

    predictions, parts = asyncio.run(run())
    assert len(predictions) == len(TEXTS) * 8
    assert parts == 2 * 2  # two intent_bert instances on each of two servers
    # 24 texts at most 4 a request: 6 requests, 3 to each server.
    assert asyncio.run(settled_counts(two_servers, 6)) == [3, 3]


def test_one_server_killed_mid_stream_fails_no_request(two_servers: list[TritonServer]) -> None:
    a, b = two_servers
    requests, in_flight, kill_after = 80, 8, 20

    async def run() -> dict:
        # Back-off longer than the stream: the dead server stays skipped once found dead.
        replicas = ReplicaSet(f"{a.grpc_url},{b.grpc_url}", backoff_s=60, max_backoff_s=60)
        gate = asyncio.Semaphore(in_flight)  # a worker's concurrent chunks, back to back
        done = 0
        killed = asyncio.Event()
        record: dict = {"before": [], "after": [], "a_at_kill": 0}

        async def one() -> list[Prediction]:
            nonlocal done
            async with gate:
                began_after_kill, start = killed.is_set(), time.monotonic()
                predictions = await replicas.call(lambda client: score(client, TEXTS))
                record["after" if began_after_kill else "before"].append(
                    time.monotonic() - start)
                done += 1
                if done == kill_after:
                    record["a_at_kill"] = await executed(a)
                    os.kill(b.pid, signal.SIGKILL)  # type: ignore[arg-type]  # it was started
                    killed.set()
                return predictions

        try:
            record["results"] = await asyncio.gather(*(one() for _ in range(requests)),
                                                     return_exceptions=True)
            record["down"] = replicas.down()
            expected = record["a_at_kill"] + len(record["after"])
            record["a_final"] = (await settled_counts([a], expected))[0]
        finally:
            await replicas.close()
        return record

    record = asyncio.run(run())
    failures = [r for r in record["results"] if isinstance(r, BaseException)]
    assert failures == []
    assert all(len(r) == len(TEXTS) for r in record["results"])
    assert not b.is_running()
    assert record["down"] == [b.grpc_url]
    # Every request begun after the kill was answered by the server left.
    assert record["a_final"] - record["a_at_kill"] >= len(record["after"]) > 0

    def p50(seconds: list[float]) -> float:
        return sorted(seconds)[len(seconds) // 2] * 1000

    print(f"\n[replicas] {requests} requests, {in_flight} at a time, server b killed after "
          f"{kill_after}: none failed; p50 {p50(record['before']):.0f} ms before, "
          f"{p50(record['after']):.0f} ms after ({len(record['after'])} requests)")
