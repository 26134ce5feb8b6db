"""Write model versions into the Triton model repository.

A built repository (numbered directories are build outputs, never committed):

    <repo>/intent_bert/<N>/model.py                copy of <repo>/intent_bert/model.py
    <repo>/intent_bert/<N>/artifacts/              IntentBert.save(): weights, config, heads.json
    <repo>/intent_bert/<N>/artifacts/intentbert/   copy of inference/{model,heads}.py and
                                                   inference/model/runtimes.py
    <repo>/intent_bert/<N>/artifacts/model.onnx    with a runtime other than torch: the ONNX
    <repo>/intent_bert/<N>/artifacts/model.int8.onnx  graphs (fp32, dynamic int8)
    <repo>/intent_bert/<N>/runtime.json            the runtime this version serves and its
                                                   quality verdicts (absent: torch)
    <repo>/intent_bert/<N>/inputs.json             the inputs it takes: INPUT_IDS,
                                                   ATTENTION_MASK (+ FEATURES with a feature
                                                   tower); absent: text only (older versions)
    <repo>/tokenizer/1/model.py                    copy of <repo>/tokenizer/model.py
    <repo>/tokenizer/1/artifacts/                  the shared MiniLM tokenizer files

Every version is filled in a hidden staging directory beside it and then renamed into place,
so a running Triton (which skips non-numeric entries) never loads half a version. To serve a
new intent_bert version, export it, then ask Triton to load `intent_bert` again (explicit model
control): it swaps to the newest version.

A version runs torch unless exported with another runtime (`runtime=`, or "auto" for the
fastest available one): then its ONNX files are written, each candidate runtime is checked
against torch fp32 on held-out texts (inference/model/quality.py), and a refused runtime is
never written as the version's runtime.

    python -m inference.model.export --repo triton_models [--tiny | --from DIR] [--if-missing]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from inference import repository
from inference.repository import INTENT_BERT, TOKENIZER, ExportError, write_atomically

from . import runtimes
from .intent_bert import IntentBert
from .onnx import write_onnx_files
from .quality import AUTO, HeldOut, choose_runtime
from .runtimes import TORCH
from .stacking import ensure_stacker
from .tokenizer import base_path, load_tokenizer

TOKENIZER_VERSION = 1
BACKEND_FILE = "model.py"  # the python backend's code, canonical at model level
ARTIFACTS = "artifacts"
# The architecture travels with the weights; triton_models/intent_bert/model.py imports it.
ARCHITECTURE_PACKAGE = "intentbert"
# Source file -> its name in artifacts/intentbert/ (the names older versions were saved with).
ARCHITECTURE_FILES = {
    Path(__file__).with_name("intent_bert.py"): "model.py",
    Path(__file__).parents[1] / "heads.py": "heads.py",
    Path(__file__).with_name("runtimes.py"): "runtimes.py",
}
DEFAULT_SEED = 0
_MAX_LENGTH_PARAMETER = re.compile(r'key:\s*"max_length",\s*value:\s*\{\s*string_value:\s*"(\d+)"')


def export_version(
    model: IntentBert,
    repo: Path,
    version: int | None = None,
    *,
    runtime: str = TORCH,
    held_out: HeldOut | None = None,
) -> int:
    """Write `model` as intent_bert version `version` (default: newest + 1); return it.

    `runtime`: torch, another name in runtimes.RUNTIMES, or "auto" (the fastest available
    one that passes the quality bar on `held_out`, which any runtime but torch needs).
    Also writes the tokenizer's version if the repository has none yet.
    """
    model_dir = _model_dir(repo, INTENT_BERT)
    _check_max_length(model, repo)
    _check_runtime_request(runtime, held_out)
    if version is None:
        version = max(repository.versions(model_dir), default=0) + 1
    if version < 1:
        raise ExportError(f"version must be >= 1, got {version}")

    def fill(staging: Path) -> None:
        shutil.copy2(model_dir / BACKEND_FILE, staging / BACKEND_FILE)
        artifacts = model.save(staging / ARTIFACTS)
        _copy_architecture(artifacts / ARCHITECTURE_PACKAGE)
        schema = model.feature_schema or {}
        runtimes.write_inputs(staging, model.n_features, schema.get("version"))
        if runtime != TORCH:
            assert held_out is not None  # _check_runtime_request
            _write_runtime(model, staging, version, runtime, held_out)

    write_atomically(model_dir / str(version), fill)
    ensure_tokenizer(repo)
    ensure_stacker(repo)  # the ensemble's last step; heads of its own come with training
    return version


def runtime_report(repo: Path, version: int) -> dict:
    """What a version's runtime.json says (for the model card): runtime, speeds, verdicts."""
    path = Path(repo) / INTENT_BERT / str(version) / runtimes.RUNTIME_FILE
    if not path.is_file():
        return {"runtime": TORCH}
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _check_runtime_request(runtime: str, held_out: HeldOut | None) -> None:
    """Refuse before any work: an unknown or unavailable runtime, or no data for the bar."""
    if runtime == TORCH:
        return
    if runtime != AUTO:
        if runtime not in runtimes.RUNTIMES:
            raise ExportError(f"unknown runtime {runtime!r}: auto or one of "
                              f"{', '.join(runtimes.RUNTIMES)}")
        if runtime not in runtimes.available_runtimes():
            raise ExportError(f"runtime {runtime} is not available on this machine "
                              f"(available: {', '.join(runtimes.available_runtimes())})")
    if held_out is None:
        raise ExportError(f"runtime {runtime}: the quality bar needs held-out texts and labels")


def _write_runtime(
    model: IntentBert, version_dir: Path, version: int, runtime: str, held_out: HeldOut
) -> None:
    """ONNX files into artifacts/, the quality bar, and runtime.json naming what passed."""
    artifacts = version_dir / ARTIFACTS
    parity = write_onnx_files(model, artifacts, version)
    choice = choose_runtime(artifacts, held_out, None if runtime == AUTO else [runtime])
    chosen = choice.runtime
    if runtime != AUTO:
        verdict = choice.verdicts[runtime]
        if not verdict.passed:
            raise ExportError(f"runtime {runtime} {verdict.reason}")
        chosen = runtime
    runtimes.write_runtime(version_dir, chosen,
                           {"requested": runtime, "onnx": parity, "quality": choice.as_dict()})


def ensure_tokenizer(repo: Path) -> bool:
    """Write the tokenizer's version if missing; True when it was written now."""
    model_dir = _model_dir(repo, TOKENIZER)
    if repository.versions(model_dir):
        return False

    def fill(staging: Path) -> None:
        shutil.copy2(model_dir / BACKEND_FILE, staging / BACKEND_FILE)
        load_tokenizer().save_pretrained(staging / ARTIFACTS)

    write_atomically(model_dir / str(TOKENIZER_VERSION), fill)
    return True


def build_model(*, tiny: bool, seed: int = DEFAULT_SEED) -> IntentBert:
    """Untrained IntentBert, seeded: tiny random (tests) or MiniLM encoder with fresh heads."""
    torch.manual_seed(seed)
    if tiny:
        return IntentBert.tiny(len(load_tokenizer()))
    return IntentBert.from_base(base_path())


def ensure_model(
    repo: Path,
    tiny: bool,
    *,
    seed: int = DEFAULT_SEED,
    runtime: str = TORCH,
    held_out: HeldOut | None = None,
) -> int:
    """The newest intent_bert version, building an untrained one first if there is none
    (served on `runtime`, see export_version)."""
    versions = repository.versions(_model_dir(repo, INTENT_BERT))
    if versions:
        ensure_tokenizer(repo)
        ensure_stacker(repo)
        return versions[-1]
    return export_version(build_model(tiny=tiny, seed=seed), repo, runtime=runtime,
                          held_out=held_out)


def tokenizer_max_length(repo: Path) -> int:
    """The truncation length set in the tokenizer model's config.pbtxt."""
    config = (_model_dir(repo, TOKENIZER) / "config.pbtxt").read_text(encoding="utf-8")
    found = _MAX_LENGTH_PARAMETER.search(config)
    if not found:
        raise ExportError(f"no max_length parameter in {repo}/{TOKENIZER}/config.pbtxt")
    return int(found.group(1))


def _model_dir(repo: Path, name: str) -> Path:
    model_dir = Path(repo) / name
    if not (model_dir / "config.pbtxt").is_file() or not (model_dir / BACKEND_FILE).is_file():
        raise ExportError(
            f"{model_dir} lacks config.pbtxt or {BACKEND_FILE}: is {repo} the intentstream "
            "model repository (triton_models/)?"
        )
    return model_dir


def _check_max_length(model: IntentBert, repo: Path) -> None:
    """Triton tokenizes for every version alike: a model expecting other lengths is refused."""
    served = tokenizer_max_length(repo)
    if model.max_length != served:
        raise ExportError(
            f"model max_length {model.max_length} differs from the tokenizer's {served} "
            f"({repo}/{TOKENIZER}/config.pbtxt)"
        )


def _copy_architecture(package_dir: Path) -> None:
    package_dir.mkdir()
    (package_dir / "__init__.py").write_text(
        '"""IntentBert code copied from inference/ by inference/model/export.py."""\n',
        encoding="utf-8",
    )
    for source, name in ARCHITECTURE_FILES.items():
        shutil.copy2(source, package_dir / name)




# --- command line -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference.model.export",
        description="Write an intent_bert version (and the tokenizer) into a Triton repository.",
    )
    parser.add_argument("--repo", type=Path, required=True, help="model repository directory")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tiny", action="store_true", help="small random model (tests, demos)")
    source.add_argument(
        "--from", dest="source", type=Path, help="a directory saved by IntentBert.save()"
    )
    parser.add_argument(
        "--if-missing", action="store_true", help="only when no intent_bert version exists yet"
    )
    parser.add_argument("--version", type=int, help="version number (default: newest + 1)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed for untrained heads")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.if_missing and (args.source or args.version):
        parser.error("--if-missing builds an untrained model: not with --from or --version")
    try:
        if args.if_missing:
            version = ensure_model(args.repo, args.tiny, seed=args.seed)
        else:
            if args.source:
                model = IntentBert.load(args.source)
            else:
                model = build_model(tiny=args.tiny, seed=args.seed)
            version = export_version(model, args.repo, args.version)
    except (ExportError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    path = Path(args.repo) / INTENT_BERT / str(version)
    print(json.dumps({"model": INTENT_BERT, "version": version, "path": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
