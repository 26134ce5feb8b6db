"""Fine-tune IntentBert on simulated sessions, compare it with TF-IDF+LR, export it to Triton.

    intentstream train [--tiny] [--epochs 2] [--max-steps N] [--users 1500] [--seed 0]
                       [--out runs/latest] [--repo triton_models] [--uci/--no-uci]
    intentstream train --events FILE | --from T --to T [--horizon-hours H] [--churn-days D]
    python -m training.train --help

With --events (JSONL/CSV) or --from/--to (the events topic) the windows come from the
platform's own history instead of the simulator, split by time (training/history.py); the
export then passes a gate against the live version (exit 3 when rejected).

One linear `main()`: arguments → seed → data (simulated users → windows with the worker's
text and FEATURES row, split by user) → baseline → model → fine-tune with early stopping →
test metrics of both → stacked heads over [features, the network's probabilities] fitted on
validation, measured on test against the peers (training/stacking.py) → UCI real sessions →
save, export (stacker heads first, then the python backend + ONNX) → model card
(`<out>/model_card.json` and `.md`).

`--fusion` says how FEATURES join the text: `stack` (the default, the stacked heads above over
a text-only network), `tower` (IntentBert's feature tower, normalised on the training split's
rows, no stack) or `both` (the tower network, then the stack over it). docs/model.md records
the measured comparison behind the default.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference import repository
from inference.heads import INTENT_TYPE_LABELS, STRENGTH_LABELS
from inference.model.export import export_version, runtime_report
from inference.model.intent_bert import IntentBert
from inference.model.onnx import export_onnx_version
from inference.model.quality import HeldOut, QualityError
from inference.model.stacking import remove_stale_heads, write_heads
from inference.model.tokenizer import base_path, load_tokenizer
from inference.repository import INTENT_BERT, INTENT_BERT_ONNX
from inference.tritonserver import REPOSITORY_TEMPLATE, copy_repository
from streams.core.features import FEATURE_SCHEMA_VERSION, N_FEATURES, feature_schema
from streams.core.sessions import SessionPolicy
from streams.settings import get_settings
from training import uci
from training.baseline import fit_baseline
from training.card import render_markdown
from training.data import SPLITS, Example, build_splits
from training.loop import (
    FitConfig,
    Targets,
    fit,
    multitask_loss,
    predict,
    strong_vs_rest_loss,
    tokenize,
)
from training.metrics import (
    best_threshold,
    binary_columns,
    bootstrap_delta_interval,
    head_metrics,
    predicted_labels,
)
from training.simulator import ARCHETYPE_WEIGHTS, ARCHETYPES, SimConfig, simulate
from training.stacking import StackResult, fit_stack
from training.train_args import DataArguments, ModelArguments, RunArguments, parse_args

# The model's output heads and their label columns (alert heads are streams.core.alerts').
MODEL_HEADS: dict[str, tuple[str, ...]] = {
    "strength": STRENGTH_LABELS,
    "intent_type": INTENT_TYPE_LABELS,
    "churn": ("no_churn", "churn"),
}
UCI_BATCH_SIZE = 32  # short texts: bigger batches cost little
HEADLINE_METRIC = "macro_f1"  # the metric "beats the baseline" is judged on, every head
METRIC_LABEL = "macro-F1 on held-out users"
# Published and measured figures on the UCI data (see the data README), for the card.
UCI_PEERS: tuple[dict[str, Any], ...] = (
    {"model": "HistGradientBoosting, tabular columns (comparable split)", "roc_auc": 0.929,
     "pr_auc": 0.734},
    {"model": "logistic regression, tabular columns (comparable split)", "roc_auc": 0.902,
     "pr_auc": 0.664},
    {"model": "PageValues alone (comparable split)", "roc_auc": 0.860, "pr_auc": None},
    {"model": "gradient boosting without PageValues (comparable split)", "roc_auc": 0.768,
     "pr_auc": None},
    {"model": "XGBoost + oversampling (PMC10121810, other split)", "roc_auc": 0.937,
     "pr_auc": 0.754},
    {"model": "random forest (Satu & Islam 2023, other split)", "roc_auc": 0.975,
     "pr_auc": None},
)
UCI_ATTRIBUTION = (
    "UCI Online Shoppers Purchasing Intention Dataset (Sakar, Polat, Katircioglu, Kastro 2019, "
    "Neural Computing and Applications 31, 6893-6908), CC BY 4.0."
)

def worker_session_policy() -> SessionPolicy:
    """The worker's session policy (streams/settings.py), so training texts match live ones."""
    return get_settings().session_policy()


def targets_of(examples: Sequence[Example]) -> dict[str, list[int]]:
    return {
        "strength": [STRENGTH_LABELS.index(x.strength) for x in examples],
        "intent_type": [INTENT_TYPE_LABELS.index(x.intent_type) for x in examples],
        "churn": [int(x.churn) for x in examples],
    }


def label_counts(targets: dict[str, list[int]]) -> dict[str, dict[str, int]]:
    """Per head, how many examples carry each label (every label listed, zeros included)."""
    return {head: dict(zip(labels, np.bincount(targets[head], minlength=len(labels)).tolist(),
                           strict=True)) for head, labels in MODEL_HEADS.items()}


def as_tensors(targets: dict[str, list[int]]) -> Targets:
    return Targets(
        torch.tensor(targets["strength"], dtype=torch.long),
        torch.tensor(targets["intent_type"], dtype=torch.long),
        torch.tensor(targets["churn"], dtype=torch.float32),
    )


def columns(head: str, probs: np.ndarray) -> np.ndarray:
    """[n, classes] probabilities of a head (churn's [n] becomes two columns)."""
    return binary_columns(probs) if head == "churn" else probs


def compute_metrics(
    val_targets: dict[str, list[int]],
    val_probs: dict[str, np.ndarray],
    test_targets: dict[str, list[int]],
    test_probs: dict[str, np.ndarray],
) -> dict[str, dict[str, Any]]:
    """Test metrics per head; churn's decision threshold is chosen on validation."""
    out = {}
    for head, labels in MODEL_HEADS.items():
        threshold = None
        if head == "churn":
            threshold = best_threshold(val_targets[head], columns(head, val_probs[head])[:, 1])
        out[head] = head_metrics(
            test_targets[head], columns(head, test_probs[head]), labels, threshold=threshold
        )
    return out


def validation_score(head: str, y: Sequence[int], probs: np.ndarray) -> float:
    """The baseline's model-selection score: the headline metric on validation."""
    threshold = best_threshold(y, probs[:, 1]) if head == "churn" else None
    return head_metrics(y, probs, MODEL_HEADS[head], threshold=threshold)[HEADLINE_METRIC]


def compare(
    model: dict[str, Any],
    baseline: dict[str, Any],
    y: dict[str, list[int]],
    model_probs: dict[str, np.ndarray],
    baseline_probs: dict[str, np.ndarray],
    users: Sequence[str],
    seed: int,
) -> dict[str, Any]:
    """Per head and metric: both values, the difference, and who is better (ECE: lower); for
    the headline metric also a 95% interval of the difference, resampling test users."""
    out: dict[str, Any] = {}
    for head, labels in MODEL_HEADS.items():
        interval = bootstrap_delta_interval(
            y[head],
            predicted_labels(columns(head, model_probs[head]), model[head]["threshold"]),
            predicted_labels(columns(head, baseline_probs[head]), baseline[head]["threshold"]),
            len(labels), users, seed=seed,
        )
        rows = {}
        for metric in ("macro_f1", "roc_auc", "pr_auc", "ece"):
            a, b = model[head][metric], baseline[head][metric]
            if a is None or b is None:
                continue
            better = a < b if metric == "ece" else a > b
            rows[metric] = {"model": a, "baseline": b, "delta": a - b, "model_better": better}
        out[head] = {
            "metrics": rows,
            "beats_baseline": rows[HEADLINE_METRIC]["model_better"],
            "headline_delta_ci95": interval,
        }
    return out


def _revenue_rows(
    rows: np.ndarray, tokens: Sequence[list[int]], revenue: Sequence[bool]
) -> tuple[list[list[int]], Targets]:
    """UCI rows as training input: Revenue as strength strong (0) / weak (2); the other heads'
    targets are unused by `strong_vs_rest_loss`."""
    n = len(rows)
    strength = torch.tensor([0 if revenue[i] else 2 for i in rows], dtype=torch.long)
    return [tokens[i] for i in rows], Targets(
        strength, torch.zeros(n, dtype=torch.long), torch.zeros(n)
    )


def run_uci(
    tokenizer: Any,
    data_args: DataArguments,
    model_args: ModelArguments,
    run_args: RunArguments,
    fit_config: FitConfig,
) -> dict[str, Any]:
    """Fine-tune copies of the trained model on the UCI training part (Revenue as P(strong)),
    evaluate on the test part of the comparable split; once without and once with GA aggregates."""
    path = data_args.uci_path()
    sessions = uci.load_sessions(path)
    labels = [s.revenue for s in sessions]
    train_part, test_rows = uci.comparable_split(labels)
    train_rows = train_part
    rng = np.random.default_rng(run_args.seed)
    if data_args.uci_train_limit and len(train_rows) > data_args.uci_train_limit:
        # Stratified sample: the same purchase rate as the full training part.
        chosen = []
        for value in (True, False):
            rows = train_rows[[labels[i] == value for i in train_rows]]
            share = round(data_args.uci_train_limit * len(rows) / len(train_rows))
            chosen.extend(rng.choice(rows, size=share, replace=False).tolist())
        train_rows = np.sort(np.asarray(chosen))
    # Validation for early stopping: 10% of the (sampled) training rows, never the test part.
    shuffled = rng.permutation(train_rows)
    n_val = max(1, len(shuffled) // 10)
    val_rows, fit_rows = np.sort(shuffled[:n_val]), np.sort(shuffled[n_val:])
    policy = worker_session_policy()
    variants = {"events_only": False}
    if data_args.uci_analytics:
        variants["events_plus_ga_aggregates"] = True
    results: dict[str, Any] = {
        "data": UCI_ATTRIBUTION,
        "csv": str(path),
        "split": "train_test_split(test_size=0.3, stratify=Revenue, random_state=0)",
        "rows": {"train_part": len(train_part),
                 "fine_tuned_on": len(fit_rows), "early_stopping": len(val_rows),
                 "test": len(test_rows)},
        "test_purchase_rate": float(np.mean([labels[i] for i in test_rows])),
        "peers": list(UCI_PEERS),
        "variants": {},
    }
    for name, with_analytics in variants.items():
        texts = [uci.session_text(s, policy, with_analytics=with_analytics) for s in sessions]
        tokens = tokenize(tokenizer, texts, model_args.max_length)
        tuned = IntentBert.load(Path(run_args.out) / "model")  # a fresh copy of the trained model
        started = time.monotonic()
        result = fit(
            tuned, *_revenue_rows(fit_rows, tokens, labels),
            *_revenue_rows(val_rows, tokens, labels), fit_config, strong_vs_rest_loss,
        )
        p_buy = predict(tuned, [tokens[i] for i in test_rows])["strength"][:, 0]
        y_test = [int(labels[i]) for i in test_rows]
        metrics = head_metrics(y_test, binary_columns(p_buy), ("no_revenue", "revenue"),
                               threshold=0.5)
        results["variants"][name] = {
            "roc_auc": metrics["roc_auc"],
            "pr_auc": metrics["pr_auc"],
            "ece": metrics["ece"],
            "steps": result.steps,
            "seconds": round(time.monotonic() - started, 1),
            "example_text": texts[next(int(i) for i in test_rows if labels[i])],  # a buyer
        }
        if not with_analytics:  # the text the live path renders: keep it servable, so the
            # UCI backtest can replay it (`intentstream replay … --model-repo <this>`).
            results["variants"][name]["triton_repository"] = str(
                export_uci_repository(tuned, Path(run_args.repo), Path(run_args.out)))
    return results


def export_uci_repository(model: IntentBert, template: Path, out: Path) -> Path:
    """A model repository (configs from `template`) serving the UCI-tuned model as version 1."""
    repo = out / "uci_triton_models"
    if repo.exists():
        shutil.rmtree(repo)
    # --repo may name a repository not written yet (the main export comes later): its configs
    # are the committed template's.
    copy_repository(template if template.is_dir() else REPOSITORY_TEMPLATE, repo)
    export_version(model, repo)
    return repo


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m training.train ...` (the CLI goes through training/train_args.py)."""
    return run(*parse_args(argv))


def run(data_args: DataArguments, model_args: ModelArguments, run_args: RunArguments) -> int:
    started = time.monotonic()
    load_at_start = os.getloadavg()  # other work on the same cores slows the run: recorded
    seconds: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        seconds[name] = round(now - since, 1)
        return now

    # --- seed ---------------------------------------------------------------------------------
    random.seed(run_args.seed)
    np.random.seed(run_args.seed)
    torch.manual_seed(run_args.seed)
    if run_args.threads:
        torch.set_num_threads(run_args.threads)
    out = Path(run_args.out)
    out.mkdir(parents=True, exist_ok=True)

    # --- data: simulated users → labelled windows, split by user ------------------------------
    t = time.monotonic()
    session_policy = worker_session_policy()
    label_policy = data_args.label_policy()
    history_data = None
    if data_args.history:  # the platform's own events, split by time (training/history.py)
        from training import history

        loaded = history.guarded_load(data_args, get_settings(), session_policy, label_policy,
                                      run_args.seed)
        if isinstance(loaded, int):
            return loaded
        history_data, splits = loaded, loaded.splits
    else:
        histories = simulate(data_args.users, SimConfig(seed=run_args.seed,
                                                        days=data_args.sim_days))
        splits = build_splits(
            histories, session_policy, label_policy, seed=run_args.seed,
            fractions=data_args.split_fractions(), prefix_share=data_args.prefix_share,
            max_windows_per_user=data_args.windows_per_user,
            max_heldout_windows_per_user=data_args.heldout_windows_per_user,
        )
    texts = {name: [x.text for x in splits[name]] for name in SPLITS}
    targets = {name: targets_of(splits[name]) for name in SPLITS}
    t = lap("simulate_and_label", t)

    # --- baseline: TF-IDF + logistic regression on the same texts and split -------------------
    baseline = fit_baseline(
        texts["train"], targets["train"], {h: len(v) for h, v in MODEL_HEADS.items()},
        texts["validation"], targets["validation"], validation_score, run_args.seed,
    )
    baseline_val = {h: p[:, 1] if h == "churn" else p
                    for h, p in baseline.predict_proba(texts["validation"]).items()}
    baseline_test = {h: p[:, 1] if h == "churn" else p
                     for h, p in baseline.predict_proba(texts["test"]).items()}
    baseline_metrics = compute_metrics(
        targets["validation"], baseline_val, targets["test"], baseline_test
    )
    t = lap("baseline", t)

    # --- model ---------------------------------------------------------------------------------
    tokenizer = load_tokenizer(max_length=model_args.max_length)
    features = {name: feature_matrix(splits[name]) for name in SPLITS}
    tower = run_args.fusion in ("tower", "both")
    model = new_model(model_args, len(tokenizer), tower)
    if tower:  # normalisation statistics from the training split only, saved with the model
        model.fit_normalisation(torch.from_numpy(features["train"]))
    net_features = features if tower else dict.fromkeys(SPLITS)
    tokens = {name: tokenize(tokenizer, texts[name], model_args.max_length) for name in SPLITS}
    fit_config = FitConfig(
        epochs=run_args.epochs,
        max_steps=run_args.max_steps,
        batch_size=run_args.batch_size,
        learning_rate=run_args.learning_rate or (1e-3 if model_args.tiny else 5e-5),
        warmup_ratio=run_args.warmup_ratio,
        weight_decay=run_args.weight_decay,
        checks_per_epoch=run_args.evals_per_epoch,
        patience=run_args.patience,
        seed=run_args.seed,
        progress=run_args.progress,
        initial_check=False,  # fresh heads (new_model) are never the best weights
    )

    # --- fine-tune -----------------------------------------------------------------------------
    result = fit(
        model, tokens["train"], as_tensors(targets["train"]),
        tokens["validation"], as_tensors(targets["validation"]), fit_config, multitask_loss,
        train_features=net_features["train"], val_features=net_features["validation"],
    )
    t = lap("fine_tune", t)

    # --- evaluate on held-out users ------------------------------------------------------------
    model_val = predict(model, tokens["validation"], features=net_features["validation"])
    model_test = predict(model, tokens["test"], features=net_features["test"])
    model_metrics = compute_metrics(targets["validation"], model_val, targets["test"], model_test)
    comparison = compare(
        model_metrics, baseline_metrics, targets["test"], model_test, baseline_test,
        [x.user_id for x in splits["test"]], run_args.seed,
    )
    t = lap("evaluate", t)
    model.save(out / "model")

    # --- stacked heads over [features, text probabilities], and the peers ----------------------
    stack = run_stacking(features, splits, targets, model_val, model_test, baseline_val,
                         baseline_test, run_args.seed, stack=run_args.fusion != "tower")
    t = lap("stacking", t)

    # --- UCI real sessions ---------------------------------------------------------------------
    uci_results = None
    if data_args.uci and not data_args.history:
        # It starts from the trained model, which may stay the best weights: validate it first.
        uci_config = FitConfig(
            **{**asdict(fit_config), "epochs": run_args.uci_epochs, "max_steps": None,
               "batch_size": UCI_BATCH_SIZE, "initial_check": True}
        )
        uci_results = run_uci(tokenizer, data_args, model_args, run_args, uci_config)
        t = lap("uci", t)

    # --- export ----------------------------------------------------------------------------------
    exported = gate = None
    if run_args.export and history_data:  # export only a version that beats the live one
        gate = history.gate_against_live(Path(run_args.repo), model, tokenizer, texts["test"],
                                         as_tensors(targets["test"]), features["test"])
    if run_args.export and (gate is None or gate["accepted"]):
        repo = Path(run_args.repo)
        version = max(repository.versions(repo / INTENT_BERT), default=0) + 1
        remove_stale_heads(repo, version)
        if stack.heads:  # before the network version, so it is never served without them
            write_heads(repo, version, {"n_features": N_FEATURES,
                                        "feature_schema": FEATURE_SCHEMA_VERSION, **stack.heads})
        # The quality bar scores each candidate runtime on a sample of held-out users' texts
        # (paired with torch on the same texts), so it costs seconds, not a second test pass.
        n = run_args.runtime_check_texts
        runtime, held_out = run_args.runtime, None
        try:
            held_out = HeldOut(texts["test"][:n],
                               {h: list(v[:n]) for h, v in targets["test"].items()},
                               churn_threshold=model_metrics["churn"]["threshold"] or 0.5,
                               features=None if not tower else features["test"][:n].tolist())
        except QualityError as error:  # too few held-out users to judge a faster runtime
            print(f"train: serving torch: {error}", file=sys.stderr)
            runtime = "torch"
        version = export_version(model, repo, version, runtime=runtime, held_out=held_out)
        # Its own numbering: the version baked into MODEL_VERSION is the one Triton serves it as.
        onnx_report = export_onnx_version(model, repo, int8=run_args.int8)
        exported = {INTENT_BERT: version, INTENT_BERT_ONNX: onnx_report,
                    "runtime": runtime_report(repo, version)}
        t = lap("export", t)
    seconds["total"] = round(time.monotonic() - started, 1)
    load_at_end = os.getloadavg()

    # --- model card ------------------------------------------------------------------------------
    card = {
        "model": {
            "encoder": "tiny random 2-layer BERT (tests)" if model_args.tiny
            else "sentence-transformers/all-MiniLM-L6-v2 (6 layers, 384 hidden), offline copy",
            "heads": {h: list(v) for h, v in MODEL_HEADS.items()},
            "max_length": model_args.max_length,
            "truncation": "left (the newest events are kept)",
            "parameters": sum(p.numel() for p in model.parameters()),
            "fusion": run_args.fusion,
            "feature_tower": model.heads_metadata().get("features"),
        },
        "data": {
            "source": "training.simulator (synthetic shoppers; see docs/model.md)",
            "users": data_args.users,
            "sim_days": data_args.sim_days,
            "archetype_mix": dict(zip(ARCHETYPES, ARCHETYPE_WEIGHTS, strict=True)),
            "session_policy": asdict(session_policy),
            "label_policy": {"horizon_hours": data_args.horizon_hours,
                             "churn_days": data_args.churn_days},
            "windows_per_user": data_args.windows_per_user,
            "heldout_windows_per_user": data_args.heldout_windows_per_user,
            "split_fractions": data_args.split_fractions(),
            "prefix_share": data_args.prefix_share,
            "splits": {
                name: {
                    "users": len({x.user_id for x in splits[name]}),
                    "windows": len(splits[name]),
                    "labels": label_counts(targets[name]),
                }
                for name in SPLITS
            },
        },
        "training": {
            **{k: v for k, v in asdict(fit_config).items() if k != "progress"},
            "steps": result.steps,
            "best_step": result.best_step,
            "best_val_loss": result.best_val_loss,
            "stopped_early": result.stopped_early,
            "history": result.history,
            "threads": torch.get_num_threads(),
            "tiny": model_args.tiny,
        },
        "headline_metric": HEADLINE_METRIC,
        "test": {"model": model_metrics, "baseline": baseline_metrics,
                 "baseline_c": baseline.chosen_c, "comparison": comparison},
        "stacking": {**stack.card, "exported_heads": sorted(stack.heads),
                     "feature_schema": feature_schema()},
        "uci": uci_results,
        "exported": exported,
        "seconds": seconds,
        "load_average_1_5_15min": {"start": load_at_start, "end": load_at_end},
        "cpu_count": os.cpu_count(),
    }
    if history_data:
        card["data"].update(history_data.card)
        card["gate"] = gate
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out / "model_card.md").write_text(
        render_markdown(card) + (history.markdown(card) if history_data else ""), encoding="utf-8")
    (out / "metrics.json").write_text(
        json.dumps({"test": model_metrics, "comparison": comparison,
                    "served": stack.card["test"]["served"],
                    "served_vs_peers": stack.card["served_vs_peers"]}, indent=2) + "\n",
        encoding="utf-8",
    )
    versus = stack.card["served_vs_peers"]
    print(model_line(stack), file=sys.stderr, flush=True)
    print(json.dumps({
        "out": str(out),
        "exported": exported,
        "beats_baseline": {h: versus[h]["tfidf_lr"]["beats"] for h in MODEL_HEADS
                           if "tfidf_lr" in versus.get(h, {})},
        "beats_peers": stack.card["beats_peers"],
        "seconds": seconds["total"],
        **({"gate": gate} if gate else {}),
    }))
    return 3 if gate and not gate["accepted"] else 0  # 3: rejected by the gate, as retrain


def model_line(stack: StackResult) -> str:
    """One line: the served model's headline metric per head against each peer."""
    served, versus = stack.card["test"]["served"], stack.card["served_vs_peers"]
    parts = []
    for head in MODEL_HEADS:
        peers = ", ".join(
            f"{peer} {stack.card['test'][peer][head][HEADLINE_METRIC]:.3f} "
            f"({'beaten' if row['beats'] else 'NOT beaten'})"
            for peer, row in versus.get(head, {}).items())
        parts.append(f"{head} {served[head][HEADLINE_METRIC]:.3f} vs {peers}")
    chosen = stack.card["selection"]["chosen"] or "none (text only)"
    return f"model ({METRIC_LABEL}; stacked heads: {chosen}): " + "; ".join(parts)


def feature_matrix(examples: Sequence[Example]) -> np.ndarray:
    """The FEATURES rows of a split's windows, [n, N_FEATURES] float64."""
    return np.asarray([x.features for x in examples], dtype=np.float64).reshape(
        len(examples), N_FEATURES)


def new_model(model_args: ModelArguments, vocab_size: int, tower: bool) -> IntentBert:
    """The network to fine-tune: tiny or MiniLM, with a feature tower when `tower`."""
    extra: dict[str, Any] = {"n_features": N_FEATURES, "feature_schema": feature_schema()} \
        if tower else {}
    if model_args.tiny:
        return IntentBert.tiny(vocab_size, max_length=model_args.max_length, **extra)
    return IntentBert.from_base(base_path(), max_length=model_args.max_length, **extra)


def run_stacking(
    features: dict[str, np.ndarray],
    splits: dict[str, list[Example]],
    targets: dict[str, dict[str, list[int]]],
    model_val: dict[str, np.ndarray],
    model_test: dict[str, np.ndarray],
    baseline_val: dict[str, np.ndarray],
    baseline_test: dict[str, np.ndarray],
    seed: int,
    *,
    stack: bool = True,
) -> StackResult:
    """Stacked heads fitted on validation rows the network did not train on; all probability
    arrays as [n, classes] (churn [n, 2]) for the stacking module."""
    def full(probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {h: columns(h, p) for h, p in probs.items()}

    return fit_stack(
        MODEL_HEADS, features,
        {"validation": full(model_val), "test": full(model_test)},
        targets, {name: [x.user_id for x in splits[name]] for name in SPLITS},
        {"tfidf_lr": {"validation": full(baseline_val), "test": full(baseline_test)}},
        seed, stack,
    )


if __name__ == "__main__":
    sys.exit(main())
