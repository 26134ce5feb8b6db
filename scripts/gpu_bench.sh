#!/usr/bin/env bash
# One shot on a CUDA machine: install intentstream from this working tree with onnxruntime-gpu,
# then measure (a) every runtime in process (texts/s, batch-32 latency) and (b) `intentstream
# bench` with Triton serving the CUDA runtime. Prints the figures; logs and JSON go to $OUT.
#
#   scripts/gpu_bench.sh                      # onnxruntime-cuda, the bench's default sizes
#   RUNTIME=tensorrt-fp16 TRT=1 scripts/gpu_bench.sh   # also install TensorRT, serve it
#   EVENTS=5000 scripts/gpu_bench.sh          # a shorter bench
#   WHEELS=/path/to/wheelhouse scripts/gpu_bench.sh    # no network: install from wheels only
#
# Needs Python 3.11 (PYTHON=...), an NVIDIA driver (nvidia-smi) and pip access to the package
# registry or a wheelhouse holding torch, onnxruntime-gpu (and tensorrt-cu12 with TRT=1) plus
# this project's dependencies. Exit status: 0 measured, 1 a step failed (its log is in $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
RUNTIME=${RUNTIME:-onnxruntime-cuda}
OUT=${OUT:-runs/gpu-bench}
VENV=${VENV:-.venv-gpu}
EVENTS=${EVENTS:-20000}
mkdir -p "$OUT"

say() { printf '[gpu-bench] %s\n' "$*" >&2; }
fail() { say "error: $*"; exit 1; }

command -v nvidia-smi >/dev/null || fail "no nvidia-smi: not a CUDA machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
command -v "$PYTHON" >/dev/null || fail "$PYTHON not found (pyproject.toml: Python 3.11); set PYTHON"

pip_args=(-q --disable-pip-version-check)
[[ -n "${WHEELS:-}" ]] && pip_args+=(--no-index --find-links "$WHEELS")

say "installing into $VENV (log: $OUT/install.log)"
{
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install "${pip_args[@]}" torch==2.13.0        # the registry's CUDA build
  "$VENV/bin/pip" install "${pip_args[@]}" -e '.[serve,embedded,train]'
  # onnxruntime (CPU) and onnxruntime-gpu install the same module: keep only the GPU one.
  "$VENV/bin/pip" uninstall -y -q onnxruntime || true
  "$VENV/bin/pip" install "${pip_args[@]}" 'onnxruntime-gpu[cuda,cudnn]>=1.21'
  if [[ "${TRT:-0}" == 1 || "$RUNTIME" == tensorrt-fp16 ]]; then
    "$VENV/bin/pip" install "${pip_args[@]}" tensorrt-cu12
  fi
} >"$OUT/install.log" 2>&1 || fail "install failed: tail $OUT/install.log"

# TensorRT's pip libraries are not on the loader's path by themselves; onnxruntime (and the
# Triton stub, which inherits this environment) dlopen libnvinfer from here.
trt_libs=$("$VENV/bin/python" -c 'import os, tensorrt_libs; print(os.path.dirname(tensorrt_libs.__file__))' 2>/dev/null || true)
[[ -n "$trt_libs" ]] && export LD_LIBRARY_PATH="$trt_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export INTENTSTREAM_TRT_CACHE="$PWD/$OUT/trt-cache" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

"$VENV/bin/python" - "$RUNTIME" <<'EOF' || fail "onnxruntime-gpu lacks the runtime's provider"
import sys
import onnxruntime as ort
from inference.model.runtimes import RUNTIMES, available_runtimes
print("[gpu-bench] onnxruntime", ort.__version__, ort.get_available_providers(), file=sys.stderr)
print("[gpu-bench] runtimes here:", available_runtimes(), file=sys.stderr)
sys.exit(0 if sys.argv[1] in available_runtimes() else 1)
EOF

say "(a) every runtime in process, MiniLM-sized, batches of 32"
"$VENV/bin/python" -m bench.runtimes --model minilm --users 60 --rounds 3 \
  --json "$OUT/runtimes.json" 2>"$OUT/runtimes.log" | tee "$OUT/runtimes.txt" \
  || fail "in-process runtimes failed: tail $OUT/runtimes.log"

say "(b) intentstream bench, Triton serving $RUNTIME ($EVENTS events)"
"$VENV/bin/intentstream" bench --runtime "$RUNTIME" --events "$EVENTS" \
  --workdir "$OUT/bench-work" --json "$OUT/bench.json" 2>"$OUT/bench.log" \
  | tee "$OUT/bench.txt" || fail "bench failed: tail $OUT/bench.log"

"$VENV/bin/python" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
r, b = json.loads((out / "runtimes.json").read_text()), json.loads((out / "bench.json").read_text())
print("summary (paste into docs/benchmarks.md, GPU section):")
for name, f in r["runtimes"].items():
    print(f"  {name:<18} {f['texts_per_s']:9.0f} texts/s  batch-32 {f['batch_32_latency_s'] * 1000:7.1f} ms")
print(f"  served {b['runtime']}: pipeline {b['pipeline_scores_per_s']:.0f} scored sessions/s, "
      f"fastest in process {b['fastest_runtime']} {b['model_texts_per_s']:.0f} texts/s")
print(f"  ratios: pipeline/model={b['pipeline_over_model']:.2f} naive={b['over_naive']:.0f}x "
      f"bare_faust={b['over_bare_faust']:.2f} p99/batch={b['p99_over_batch']:.2f}")
EOF
