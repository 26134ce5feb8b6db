"""The served intent_bert's threads per instance: the cores shared out over its CPU instances."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

STEP = Path(__file__).resolve().parents[2] / "triton_models" / "intent_bert" / "model.py"


@pytest.fixture(scope="module")
def step() -> Any:
    """The served step's code, imported with a stand-in for Triton's utility module (only its
    pure `instance_threads` is called)."""
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("pb_utils"))
    spec = importlib.util.spec_from_file_location("intent_bert_step", STEP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(*groups: dict[str, Any]) -> dict[str, Any]:
    return {"instance_group": list(groups)}


@pytest.mark.parametrize(
    ("threads", "config", "cores", "expected"),
    [
        (0, _config({"kind": "KIND_CPU", "count": 2}), 2, 1),  # this machine kind
        (0, _config({"kind": "KIND_CPU", "count": 2}), 16, 8),
        (0, _config({"kind": "KIND_CPU", "count": 3}), 2, 1),  # at least one each
        (0, _config({"kind": "KIND_CPU"}), 4, 4),  # count defaults to 1
        (0, {}, 4, 4),  # no instance_group: Triton's one instance
        (0, _config({"kind": "KIND_GPU", "count": 2}, {"kind": "KIND_CPU", "count": 1}), 4, 4),
        (3, _config({"kind": "KIND_CPU", "count": 2}), 2, 3),  # set: as set
    ],
)
def test_threads_per_instance(step: Any, threads: int, config: dict[str, Any], cores: int,
                              expected: int) -> None:
    assert step.instance_threads(threads, config, cores) == expected


def test_the_served_config_runs_parallel_instances_without_a_batcher() -> None:
    lines = [line.strip() for line in
             (STEP.parent / "config.pbtxt").read_text(encoding="utf-8").splitlines()
             if not line.strip().startswith("#")]
    assert "instance_group [ { kind: KIND_CPU, count: 2 } ]" in lines
    # A dynamic batcher would merge a worker's parallel requests back onto one instance.
    assert not any(line.startswith("dynamic_batching") for line in lines)
