"""Publishing a version: judge it against the live one, write version N+1 (stacked heads, the
network, its ONNX copy) into the Triton repository, and roll it out.

Shared by `intentstream train` and `intentstream retrain`; the gate's rule is
`training.evaluate.gate`, this module only scores the two versions and writes files.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inference import repository
from inference.heads import MODEL_HEADS
from inference.model.export import export_version, runtime_report
from inference.model.intent_bert import IntentBert
from inference.model.onnx import export_onnx_version
from inference.model.quality import HeldOut, QualityError
from inference.model.stacking import remove_stale_heads, write_heads
from inference.repository import INTENT_BERT, INTENT_BERT_ONNX, REPOSITORY_TEMPLATE
from streams.core.features import FEATURE_SCHEMA_VERSION, N_FEATURES
from training import served
from training.evaluate.gate import (
    DEFAULT_AUC_MARGIN,
    DEFAULT_MAX_AUC_DROP,
    GateResult,
    head_comparison,
    ranking_gate,
)
from training.evaluate.metrics import columns, head_metrics
from training.fit.loop import Targets, predict
from training.served import ServedVersion


def network_macro_f1s(model: IntentBert, tokens: list[list[int]], targets: Targets,
                      features: np.ndarray | None = None) -> dict[str, float]:
    """Each head's macro-F1 (threshold 0.5); `features`, row-aligned, for a tower network (a
    text-only network ignores them)."""
    probs = predict(model, tokens, features=features if model.n_features else None)
    y = {"strength": targets.strength, "intent_type": targets.intent_type,
         "churn": targets.churn.long()}
    return {head: head_metrics(y[head].tolist(), columns(head, probs[head]), labels)["macro_f1"]
            for head, labels in MODEL_HEADS.items()}


def live_network(repo: Path) -> tuple[int, IntentBert] | None:
    """The newest `intent_bert` version in `repo` and its network; None when there is none."""
    versions = repository.versions(Path(repo) / INTENT_BERT)
    if not versions:
        return None
    return versions[-1], IntentBert.load(repo / INTENT_BERT / str(versions[-1]) / "artifacts")


def gate_against_live(repo: Path, candidate: ServedVersion, texts: Sequence[str],
                      targets: dict[str, list[int]], features: np.ndarray,
                      users: Sequence[str], seed: int) -> dict[str, Any]:
    """The gate between the live version (the newest in `repo`, as served: its network, heads
    and customer value) and the candidate, served the same way, on the same held-out rows
    (`ranking_gate`: ROC-AUC per head with labels, intervals over users). Nothing live:
    accepted."""
    live_version = served.live_version(Path(repo))
    if live_version is None:
        return {"accepted": True, "why": f"no live intent_bert version in {repo}",
                "live_version": None}
    live = served.ServedVersion.from_repo(Path(repo), live_version).score(texts, features)
    new = candidate.score(texts, features)
    heads = {}
    for head, labels in targets.items():
        compared = head_comparison(labels, live.probs[head], new.probs[head], users, seed)
        if compared is not None:
            heads[head] = compared
    result: GateResult = ranking_gate(heads)
    return {"accepted": result.accepted, "why": result.why, "live_version": live_version,
            "heads": heads, "skipped_heads": sorted(set(targets) - set(heads)),
            "margin": DEFAULT_AUC_MARGIN, "max_head_drop": DEFAULT_MAX_AUC_DROP,
            "on": f"the test part of this history ({len(texts)} windows, "
                  f"{len(set(users))} users): the served ensembles (network + stacker step), "
                  "ROC-AUC per head with two labels there, 95% intervals over resampled users"}


def publish_version(model: IntentBert, repo: Path, stacked_heads: dict[str, Any], *,
                    runtime: str, held_out: HeldOut | None, int8: bool,
                    customer_value: dict[str, Any] | None = None) -> dict[str, Any]:
    """Version N+1: stacked heads and the customer value model first (the network is never
    served without them), then the network on the runtime that passes the quality bar on
    `held_out`, then its ONNX copy."""
    version = max(repository.versions(repo / INTENT_BERT), default=0) + 1
    remove_stale_heads(repo, version)
    if stacked_heads or customer_value:
        extra = {"customer_value": customer_value} if customer_value else {}
        write_heads(repo, version, {"n_features": N_FEATURES,
                                    "feature_schema": FEATURE_SCHEMA_VERSION, **stacked_heads,
                                    **extra})
    if held_out is None:
        runtime = "torch"
    version = export_version(model, repo, version, runtime=runtime, held_out=held_out)
    # Its own numbering: the version baked into MODEL_VERSION is the one Triton serves it as.
    onnx_report = export_onnx_version(model, repo, int8=int8)
    return {INTENT_BERT: version, INTENT_BERT_ONNX: onnx_report,
            "runtime": runtime_report(repo, version)}


def held_out_sample(texts: Sequence[str], targets: dict[str, list[int]], n: int,
                    churn_threshold: float, features: np.ndarray | None) -> HeldOut | None:
    """The quality bar's sample of held-out users' texts (paired with torch on the same texts,
    so it costs seconds, not a second test pass); None when too few to judge a runtime."""
    try:
        return HeldOut(list(texts[:n]), {h: list(v[:n]) for h, v in targets.items()},
                       churn_threshold=churn_threshold,
                       features=None if features is None else features[:n].tolist())
    except QualityError as error:
        print(f"train: serving torch: {error}", file=sys.stderr)
        return None


def export_uci_repository(model: IntentBert, template: Path, out: Path) -> Path:
    """A model repository (configs from `template`) serving the UCI-tuned model as version 1."""
    repo = out / "uci_triton_models"
    if repo.exists():
        shutil.rmtree(repo)
    # --repo may name a repository not written yet (the main export comes later): its configs
    # are the committed template's.
    repository.copy_repository(template if template.is_dir() else REPOSITORY_TEMPLATE, repo)
    export_version(model, repo)
    return repo


def roll_out(triton_url: str) -> None:
    """Explicit model control: (re)loading intent_bert picks up its newest version, on every
    replica the URL names or resolves to."""
    import tritonclient.grpc as grpcclient  # the serve extra's; only a roll-out needs it

    from inference.replicas import resolve

    for endpoint in resolve(triton_url):
        grpcclient.InferenceServerClient(endpoint.address).load_model(INTENT_BERT)
