"""Rolling a new model version while a client streams requests at the real tritonserver."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import torch

from inference.client import ScoringError, TritonScorer
from inference.model.export import export_version
from inference.model.intent_bert import IntentBert
from inference.tritonserver import tiny_triton_server

pytestmark = pytest.mark.e2e
TEXTS = ["search: trail running shoes | add_to_cart: Speedcross 6 (shoes, 129.99)",
         "support: where is my order, it is late again"] * 8


async def stream_until(url: str, swapped: threading.Event, after_swap: int) -> dict:
    """Score back to back; stop after `after_swap` calls that began once the swap was done."""
    counts = {"calls": 0, "failed": 0, "versions": [], "after": []}
    async with TritonScorer(url, max_batch=8, timeout_s=30) as scorer:
        while len(counts["after"]) < after_swap:
            began_after_swap = swapped.is_set()
            try:
                predictions = await scorer.score(TEXTS)
                versions = sorted({p.model_version for p in predictions})
                counts["versions"].append(versions)
                if began_after_swap:
                    counts["after"].append(versions)
            except ScoringError:
                counts["failed"] += 1
            counts["calls"] += 1
    return counts


def test_swapping_versions_under_load_fails_no_request(tmp_path: Path, tokenizer) -> None:
    with tiny_triton_server(tmp_path) as server:
        swapped = threading.Event()

        def roll_out() -> None:
            torch.manual_seed(1)
            export_version(IntentBert.tiny(len(tokenizer)), server.repo)
            server.load_model("intent_bert")  # explicit control: newest version replaces v1
            swapped.set()

        roller = threading.Timer(1.0, roll_out)  # let the stream get going first
        roller.start()
        counts = asyncio.run(stream_until(server.grpc_url, swapped, after_swap=20))
        roller.join()
    flat = [v for versions in counts["versions"] for v in versions]
    print(f"\n[hot-swap] {counts['calls']} calls, {counts['failed']} failed, "
          f"versions seen in order: {sorted(set(flat))}")
    assert counts["failed"] == 0
    assert counts["versions"][0] == [1]
    assert counts["after"] == [[2]] * 20  # every call begun after the swap: the new version
    assert flat == sorted(flat)  # never back to the old version once the new one answered
