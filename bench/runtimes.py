"""Every available runtime's in-process speed on session texts, without broker or Triton.

    python -m bench.runtimes [--model minilm|tiny | --from ARTIFACTS] [--users 60] [--rounds 3]

The texts are the simulator's sessions rendered as the worker renders them (held-out users of
their own seed), tokenized and scored in batches of 32 in order, as `intentstream bench`
measures its table. Rounds alternate the runtimes (torch, fp32, int8, torch, …) so that a
burst of load from other work on shared cores falls on all of them; each runtime's figure is
its median round. Prints a table and, with --json, writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.measure import ModelSpeed, raw_model_speed
from bench.workload import held_out_sessions
from inference.model.export import build_model
from inference.model.intent_bert import IntentBert
from inference.model.onnx import write_onnx_files
from inference.model.runtimes import TORCH, RuntimeUnavailable, available_runtimes
from training.progress import quiet_progress_unless_terminal


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.runtimes",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("minilm", "tiny"), default="minilm",
                   help="untrained weights of this size (speed does not depend on training)")
    p.add_argument("--from", dest="source", type=Path, default=None,
                   help="a saved model directory (IntentBert.save / a version's artifacts)")
    p.add_argument("--users", type=int, default=60,
                   help="simulated users whose sessions are scored")
    p.add_argument("--batch", type=int, default=32, help="texts per batch (SCORE_MAX_BATCH)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per runtime")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if min(args.users, args.batch, args.rounds) < 1:
        print("python -m bench.runtimes: sizes must be positive", file=sys.stderr)
        return 2
    quiet_progress_unless_terminal()
    texts = held_out_sessions(args.users, seed=606).texts
    with tempfile.TemporaryDirectory(prefix="intentstream-runtimes-") as scratch:
        artifacts = prepared_artifacts(args, Path(scratch))
        if args.threads > 0:
            import torch

            torch.set_num_threads(args.threads)
        rounds = measure_rounds(artifacts, texts, args.batch, args.rounds)
    figures = summarise(rounds, len(texts), args.batch)
    print("\n".join(table(figures)))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def prepared_artifacts(args: argparse.Namespace, scratch: Path) -> Path:
    """A saved model with both ONNX files, in `scratch`."""
    model = IntentBert.load(args.source) if args.source else build_model(tiny=args.model == "tiny")
    artifacts = model.save(scratch / "artifacts")
    write_onnx_files(model, artifacts, version=0)
    return artifacts


def measure_rounds(artifacts: Path, texts: list[str], batch: int,
                   rounds: int) -> dict[str, list[ModelSpeed]]:
    out: dict[str, list[ModelSpeed]] = {}
    names = available_runtimes()
    for _ in range(rounds):
        for name in names:
            try:
                speed = raw_model_speed(artifacts, texts, batch, name)
            except RuntimeUnavailable as error:
                print(f"[runtimes] skipping {name}: {error}", file=sys.stderr, flush=True)
                continue
            print(f"[runtimes] {name}: {speed.texts_per_s:.1f} texts/s", file=sys.stderr,
                  flush=True)
            out.setdefault(name, []).append(speed)
    return out


def summarise(rounds: dict[str, list[ModelSpeed]], n_texts: int, batch: int) -> dict:
    runtimes = {
        name: {"texts_per_s": statistics.median(s.texts_per_s for s in speeds),
               "rounds_texts_per_s": [s.texts_per_s for s in speeds],
               f"batch_{batch}_latency_s": statistics.median(s.batch_latency_s for s in speeds)}
        for name, speeds in rounds.items()
    }
    fastest = max(runtimes, key=lambda name: runtimes[name]["texts_per_s"])
    return {"texts": n_texts, "batch": batch, "runtimes": runtimes, "fastest": fastest,
            "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0]}


def table(f: dict) -> list[str]:
    batch, runtimes = f["batch"], f["runtimes"]
    torch_speed = runtimes.get(TORCH, {}).get("texts_per_s")
    lines = [f"{f['texts']} session texts, batches of {batch} in order, median of rounds:",
             f"    {'runtime':<18} {'texts/s':>8} {'vs torch':>9} {f'batch-{batch} ms':>12}"
             "  rounds"]
    for name, r in runtimes.items():
        ratio = f"{r['texts_per_s'] / torch_speed:.2f}" if torch_speed else "-"
        spread = " ".join(f"{v:.0f}" for v in r["rounds_texts_per_s"])
        lines.append(f"    {name:<18} {r['texts_per_s']:>8.1f} {ratio:>9} "
                     f"{r[f'batch_{batch}_latency_s'] * 1000:>12.0f}  {spread}")
    lines.append(f"fastest: {f['fastest']}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
