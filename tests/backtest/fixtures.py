"""Helpers for backtest tests: simulated traffic, files of it, and reading a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from training.data import uci
from training.data.simulator import SimConfig

SIM = SimConfig(seed=3, start_ms=1_790_000_000_000, days=10)  # 2026-09-21, 10 days
SIM_USERS = 40
# Where the data README keeps it, beside the checkout (as tests/training/test_uci.py finds it).
UCI_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / uci.CSV_NAME


def write_jsonl(path: Path, events: list[dict], extra_lines: tuple[bytes, ...] = ()) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events) + b"".join(
        line + b"\n" for line in extra_lines))
    return path


def metrics(out: Path) -> dict[str, Any]:
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def only_run(report: dict[str, Any]) -> dict[str, Any]:
    (run,) = report["runs"].values()
    return run
