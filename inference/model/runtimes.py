"""The runtimes that can serve IntentBert, and one scorer interface over all of them.

    torch              the saved PyTorch model (fp32), CPU
    onnxruntime-fp32   artifacts/model.onnx on onnxruntime's CPU provider
    onnxruntime-int8   artifacts/model.int8.onnx (dynamic int8 weights), CPU provider
    onnxruntime-cuda   artifacts/model.onnx on onnxruntime's CUDA provider (fp32), GPU
    tensorrt-fp16      artifacts/model.onnx through onnxruntime's TensorRT provider, fp16, GPU

A built intent_bert version names its runtime in `<version>/runtime.json` (written by export
after the quality bar, inference/model/quality.py); a version without one runs torch. The
python backend (triton_models/intent_bert/model.py) reads it, unless its config.pbtxt
parameter `runtime` names one for the whole deployment.

Like heads.py, this file is copied into every built version (artifacts/intentbert/) and
imported there by Triton's python stub without the `inference` package: it imports only the
standard library and numpy at the top; torch and onnxruntime are imported when a runtime
needs them, so an onnxruntime version's stub never loads torch.

A version also declares which inputs it takes in `<version>/inputs.json` (written by export):
INPUT_IDS and ATTENTION_MASK always, FEATURES too when the network has a feature tower (with
its column count and feature-schema version). A version without the file (every version
exported before the tower existed) is text-only, so it stays servable beside newer ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

RUNTIME_FILE = "runtime.json"  # <version>/runtime.json
ONNX_FILE = "model.onnx"  # <version>/artifacts/model.onnx
INT8_FILE = "model.int8.onnx"
HEADS_FILE = "heads.json"
ENCODER_CONFIG_FILE = "config.json"
TORCH = "torch"
OUTPUTS = ("STRENGTH", "INTENT_TYPE", "CHURN")
INPUTS = ("INPUT_IDS", "ATTENTION_MASK")
FEATURES = "FEATURES"  # the optional third input of a version with a feature tower
INPUTS_FILE = "inputs.json"  # <version>/inputs.json
# TensorRT builds one engine per shape profile: batches up to the served max_batch_size.
TRT_MAX_ROWS = 64
TRT_OPT_ROWS = 32
_RUNTIME_PARAMETER = re.compile(r'key:\s*"runtime",\s*value:\s*\{\s*string_value:\s*"([^"]*)"')


@dataclass(frozen=True)
class Runtime:
    name: str
    onnx_file: str | None  # None: the torch weights
    provider: str | None  # the onnxruntime execution provider it needs
    gpu: bool


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime(TORCH, None, None, gpu=False),
        Runtime("onnxruntime-fp32", ONNX_FILE, "CPUExecutionProvider", gpu=False),
        Runtime("onnxruntime-int8", INT8_FILE, "CPUExecutionProvider", gpu=False),
        Runtime("onnxruntime-cuda", ONNX_FILE, "CUDAExecutionProvider", gpu=True),
        Runtime("tensorrt-fp16", ONNX_FILE, "TensorrtExecutionProvider", gpu=True),
    )
}


class RuntimeUnavailable(Exception):
    """A runtime is unknown, unavailable here, or its files are missing."""


class Probabilities(NamedTuple):
    strength: np.ndarray  # [b, 3] float32
    intent_type: np.ndarray  # [b, 6] float32
    churn: np.ndarray  # [b] float32


class Scorer(Protocol):
    runtime: str
    max_positions: int
    n_features: int  # FEATURES columns the network reads (0: text only)

    def probabilities(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                      features: np.ndarray | None = None) -> Probabilities:
        """int64 [b, len] right-padded ids and mask (and float32 [b, n_features] FEATURES for a
        network with a tower) → the three heads' probabilities."""
        ...


@dataclass(frozen=True)
class VersionInputs:
    """What a version takes: INPUT_IDS, ATTENTION_MASK and, with a tower, FEATURES."""

    names: tuple[str, ...]
    n_features: int = 0
    feature_schema: int | None = None  # the schema version its FEATURES columns follow


def write_inputs(version_dir: Path, n_features: int, feature_schema: int | None) -> Path:
    """`<version>/inputs.json`: the inputs this version takes."""
    names = [*INPUTS, FEATURES] if n_features else list(INPUTS)
    body: dict[str, Any] = {"inputs": names}
    if n_features:
        body["features"] = {"n_features": n_features, "feature_schema": feature_schema}
    path = Path(version_dir) / INPUTS_FILE
    path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return path


def read_inputs(version_dir: Path) -> VersionInputs:
    """The inputs `<version>/inputs.json` declares; text-only when the version has none."""
    path = Path(version_dir) / INPUTS_FILE
    if not path.is_file():
        return VersionInputs(INPUTS)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        names = tuple(str(n) for n in body["inputs"])
        features = body.get("features") or {}
        n = int(features.get("n_features", 0))
    except (ValueError, KeyError, TypeError) as error:
        raise RuntimeUnavailable(f"{path}: not an inputs file ({error})") from error
    if names[:2] != INPUTS or set(names[2:]) - {FEATURES} or (FEATURES in names) != (n > 0):
        raise RuntimeUnavailable(f"{path}: inputs {list(names)} with {n} feature columns; "
                                 f"expected {list(INPUTS)} (+ {FEATURES} with n_features > 0)")
    return VersionInputs(names, n, features.get("feature_schema"))


def runtime(name: str) -> Runtime:
    if name not in RUNTIMES:
        raise RuntimeUnavailable(f"unknown runtime {name!r}: one of {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


def onnx_providers() -> list[str]:
    """onnxruntime's execution providers on this machine ([] without onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def available_runtimes(providers: Iterable[str] | None = None) -> list[str]:
    """The runtimes this machine can run, in RUNTIMES order (torch always)."""
    have = set(onnx_providers() if providers is None else providers)
    return [r.name for r in RUNTIMES.values() if r.provider is None or r.provider in have]


# --- the per-version choice ---------------------------------------------------------------------


def read_runtime(version_dir: Path) -> str:
    """The runtime `<version>/runtime.json` names; torch when the version has none."""
    path = Path(version_dir) / RUNTIME_FILE
    if not path.is_file():
        return TORCH
    try:
        name = json.loads(path.read_text(encoding="utf-8"))["runtime"]
    except (ValueError, KeyError, TypeError) as error:
        raise RuntimeUnavailable(f"{path}: not a runtime file ({error})") from error
    return runtime(str(name)).name


def served_runtime(model_dir: Path, version: int) -> str:
    """What the backend will run for `version`: config.pbtxt's `runtime` parameter when set,
    else the version's runtime.json."""
    config = (Path(model_dir) / "config.pbtxt").read_text(encoding="utf-8")
    found = _RUNTIME_PARAMETER.search(config)
    if found and found.group(1).strip():
        return runtime(found.group(1).strip()).name
    return read_runtime(Path(model_dir) / str(version))


def write_runtime(version_dir: Path, name: str, details: dict[str, Any]) -> Path:
    """`<version>/runtime.json`: the runtime to serve and why (speeds, quality verdicts)."""
    path = Path(version_dir) / RUNTIME_FILE
    text = json.dumps({"runtime": runtime(name).name, **details}, indent=2) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


# --- scorers ------------------------------------------------------------------------------------


def load_scorer(artifacts: Path, name: str, *, threads: int = 0) -> Scorer:
    """A scorer for the model saved in `artifacts`, on runtime `name` (checked available)."""
    chosen = runtime(name)
    artifacts = Path(artifacts)
    if chosen.onnx_file is None:
        return TorchScorer(artifacts, threads=threads)
    if chosen.name not in available_runtimes():
        raise RuntimeUnavailable(
            f"runtime {name} needs onnxruntime's {chosen.provider}, which this machine lacks "
            f"(available: {', '.join(onnx_providers()) or 'no onnxruntime'})"
        )
    path = artifacts / chosen.onnx_file
    if not path.is_file():
        raise RuntimeUnavailable(f"runtime {name} needs {path}, which the version lacks")
    return OnnxScorer(path, chosen, max_positions(artifacts), feature_columns(artifacts),
                      threads=threads)


def max_positions(artifacts: Path) -> int:
    """The encoder's longest input (config.json), read without torch."""
    config = json.loads((Path(artifacts) / ENCODER_CONFIG_FILE).read_text(encoding="utf-8"))
    return int(config["max_position_embeddings"])


class TorchScorer:
    def __init__(self, artifacts: Path, *, threads: int = 0) -> None:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self._torch = torch
        self.runtime = TORCH
        self.model = _intent_bert_class().load(artifacts)
        self.max_positions = int(self.model.encoder.config.max_position_embeddings)
        self.n_features = int(self.model.n_features)

    def probabilities(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                      features: np.ndarray | None = None) -> Probabilities:
        torch = self._torch
        feats = None
        if self.n_features:
            feats = torch.from_numpy(_feature_rows(features, len(input_ids), self.n_features))
        with torch.inference_mode():
            p = self.model.probabilities(torch.from_numpy(input_ids),
                                         torch.from_numpy(attention_mask), feats)
        return Probabilities(p.strength.numpy().astype(np.float32),
                             p.intent_type.numpy().astype(np.float32),
                             p.churn.numpy().astype(np.float32))


class OnnxScorer:
    def __init__(self, path: Path, chosen: Runtime, positions: int, n_features: int = 0, *,
                 threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            options.intra_op_num_threads = threads
        # Idle worker threads spin by default. With the broker, the worker and the other Triton
        # stub on the same few cores, spinning takes CPU from them (and from itself).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if chosen.gpu and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels, when torch has not
        self.runtime = chosen.name
        self.max_positions = positions
        self.n_features = n_features
        self.session = ort.InferenceSession(
            str(path), options,
            providers=providers_for(chosen, path, positions, self.n_features),
        )
        # onnxruntime falls back to the next provider when one fails to start (TensorRT's
        # libraries missing, say): that would be another runtime under this one's name.
        if chosen.provider not in self.session.get_providers():
            raise RuntimeUnavailable(
                f"runtime {chosen.name}: {chosen.provider} did not start (session runs on "
                f"{', '.join(self.session.get_providers())}; see onnxruntime's log)"
            )
        graph_inputs = {i.name for i in self.session.get_inputs()}
        if (FEATURES in graph_inputs) != bool(n_features):
            raise RuntimeUnavailable(f"{path} takes {sorted(graph_inputs)}, but the saved "
                                     f"network reads {n_features} FEATURES columns")

    def probabilities(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                      features: np.ndarray | None = None) -> Probabilities:
        feeds = {INPUTS[0]: np.ascontiguousarray(input_ids, dtype=np.int64),
                 INPUTS[1]: np.ascontiguousarray(attention_mask, dtype=np.int64)}
        if self.n_features:
            feeds[FEATURES] = _feature_rows(features, len(input_ids), self.n_features)
        strength, intent_type, churn = self.session.run(list(OUTPUTS), feeds)
        return Probabilities(strength.astype(np.float32), intent_type.astype(np.float32),
                             churn.reshape(-1).astype(np.float32))


def _feature_rows(features: np.ndarray | None, rows: int, n_features: int) -> np.ndarray:
    """FEATURES as contiguous float32 [rows, n_features], or a clear error."""
    if features is None:
        raise ValueError(f"this version reads {FEATURES} ({n_features} columns) with the text; "
                         "none given")
    out = np.ascontiguousarray(features, dtype=np.float32)
    if out.shape != (rows, n_features):
        raise ValueError(f"{FEATURES} {out.shape}: this version reads [{rows}, {n_features}]")
    if not np.isfinite(out).all():
        raise ValueError(f"{FEATURES} holds NaN or infinite values")
    return out


def feature_columns(artifacts: Path) -> int:
    """FEATURES columns the saved network reads (heads.json; 0: text only), without torch."""
    heads = json.loads((Path(artifacts) / HEADS_FILE).read_text(encoding="utf-8"))
    return int((heads.get("features") or {}).get("n_features", 0))


def providers_for(chosen: Runtime, path: Path, positions: int, n_features: int = 0
                  ) -> list[Any]:
    """onnxruntime's provider list for `chosen`, falling back to CPU for unsupported nodes."""
    if chosen.provider == "TensorrtExecutionProvider":
        def shapes(rows: int, length: int) -> str:
            text = ",".join(f"{name}:{rows}x{length}" for name in INPUTS)
            return text + (f",{FEATURES}:{rows}x{n_features}" if n_features else "")

        options = {
            "trt_fp16_enable": True,
            # Building an engine takes minutes on a large model: cache it per weights file.
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(_engine_cache(path)),
            "trt_profile_min_shapes": shapes(1, 1),
            "trt_profile_opt_shapes": shapes(TRT_OPT_ROWS, min(128, positions)),
            "trt_profile_max_shapes": shapes(TRT_MAX_ROWS, positions),
        }
        return [("TensorrtExecutionProvider", options), "CUDAExecutionProvider",
                "CPUExecutionProvider"]
    if chosen.provider == "CUDAExecutionProvider":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _engine_cache(path: Path) -> Path:
    """A writable cache directory for one ONNX file (the repository may be read-only)."""
    stat = path.stat()
    identity = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    key = hashlib.sha256(identity).hexdigest()[:16]
    cache = Path(os.environ.get("INTENTSTREAM_TRT_CACHE", tempfile.gettempdir())) / (
        f"intentstream-trt-{key}"
    )
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def _intent_bert_class() -> Any:
    try:  # a built version: artifacts/intentbert/model.py beside this file
        from .model import IntentBert
    except ImportError:  # in the repository
        from inference.model.intent_bert import IntentBert
    return IntentBert
