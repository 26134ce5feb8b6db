"""`intentstream train`: fine-tune IntentBert on labelled windows, stack it with the behaviour
features, compare it with the peers, publish it to Triton, and write the model card.

    intentstream train [--tiny] [--epochs 2] [--max-steps N] [--users 1500] [--seed 0]
                       [--out runs/latest] [--repo triton_models] [--uci/--no-uci]
    intentstream train --events FILE | --from T --to T [--horizon-hours H] [--churn-days D]

`run` is a list of named stages, each a function below: load windows (simulated users, or with
--events / --from/--to the platform's own history split by time, training/data/history.py) →
TF-IDF baseline → fine-tune → evaluate on held-out users → stacked heads over [FEATURES, the
network's probabilities] against the peers (training/fit/stacking.py) → UCI real sessions →
publish (gated against the live version for a history; exit 3 when rejected) → model card
(`<out>/model_card.json` and `.md`).

`--fusion` says how FEATURES join the text: `stack` (the default, the stacked heads above over
a text-only network), `tower` (IntentBert's feature tower, normalised on the training split's
rows, no stack) or `both` (the tower network, then the stack over it); docs/model.md records
the measured comparison behind the default.

Only training/cli.py imports this module (tests/test_layout.py).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.heads import MODEL_HEADS
from inference.model.intent_bert import IntentBert
from inference.model.tokenizer import base_path, load_tokenizer
from streams.core.features import FEATURE_SCHEMA_VERSION, N_FEATURES, feature_schema
from streams.core.timeunits import iso
from streams.settings import get_settings
from training import card as model_card
from training.arguments import DataArguments, ModelArguments, RunArguments
from training.data import history as own_history
from training.data.simulator import SimConfig, simulate
from training.data.windows import (
    SPLITS,
    Example,
    Targets,
    build_splits,
    targets_of,
    worker_session_policy,
    worker_timer_policy,
)
from training.evaluate.metrics import (
    HEADLINE_METRIC,
    alert_precision_recall,
    columns,
    compare,
    compute_metrics,
)
from training.evaluate.metrics import validation_score as baseline_score
from training.fit import served_value
from training.fit.baseline import TfidfBaseline, fit_baseline
from training.fit.cascade import Heads, fit_cascade, prototypes_of, worker_order
from training.fit.cascade import rows_of as cascade_rows_of
from training.fit.loop import (
    FitConfig,
    FitResult,
    as_tensors,
    fit,
    loss_over,
    multitask_loss,
    predict,
    tokenize,
)
from training.fit.served_value import ValueFit
from training.fit.stacking import StackResult, fit_stack
from training.fit.uci_tune import tune_on_uci
from training.publish import (
    export_uci_repository,
    gate_against_live,
    held_out_sample,
    publish_version,
)
from training.served import ServedVersion, candidate_value

UCI_BATCH_SIZE = 32  # short texts: bigger batches cost little
METRIC_LABEL = "macro-F1 on held-out users"
Probs = dict[str, np.ndarray]  # head -> probabilities (churn: [n] of P(churn))


@dataclass(frozen=True, slots=True)
class Windows:
    """The data stage's output: labelled windows per split, and what the other stages read."""

    splits: dict[str, list[Example]]
    texts: dict[str, list[str]]
    targets: dict[str, Targets]
    features: dict[str, np.ndarray]  # FEATURES rows per split, [n, N_FEATURES]
    history: own_history.HistoryData | None  # the platform's own events; None: simulated
    orders: list[served_value.Orders]  # purchases the customer value model is fitted on
    orders_as_of: int  # ... as of this event time (nothing after it reaches the fit)
    lapsing: frozenset[str] | None = None  # simulated: the users of the lapsing archetype

    def users(self, split: str) -> list[str]:
        return [x.user_id for x in self.splits[split]]


@dataclass(frozen=True, slots=True)
class Baseline:
    model: TfidfBaseline
    validation: Probs
    test: Probs
    metrics: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Network:
    model: IntentBert
    tokenizer: Any
    fit_config: FitConfig
    result: FitResult
    tower: bool  # the network reads FEATURES through its own tower


@dataclass(frozen=True, slots=True)
class Evaluation:
    validation: Probs
    test: Probs
    metrics: dict[str, Any]
    comparison: dict[str, Any]


class Laps:
    """Seconds per stage, for the card."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(now - self.last, 1)
        self.last = now

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": round(time.monotonic() - self.started, 1)}


def run(data_args: DataArguments, model_args: ModelArguments, run_args: RunArguments) -> int:
    """The stages in order; 0 done, 3 rejected by the gate (as retrain), 1/2 for a history that
    cannot be read or is too short (one line on stderr)."""
    load_at_start = os.getloadavg()  # other work on the same cores slows the run: recorded
    laps = Laps()
    seed_everything(run_args)
    out = Path(run_args.out)
    out.mkdir(parents=True, exist_ok=True)
    windows = load_windows(data_args, run_args.seed)
    if isinstance(windows, int):
        return windows
    laps.lap("simulate_and_label")
    earlier_value = fit_customer_value(windows, data_args)
    value = refit_for_serving(windows, data_args, earlier_value)
    laps.lap("customer_value")
    baseline = fit_tfidf_baseline(windows, run_args.seed)
    laps.lap("baseline")
    network = fine_tune(windows, model_args, run_args)
    laps.lap("fine_tune")
    evaluation = evaluate(network, baseline, windows, run_args.seed)
    laps.lap("evaluate")
    network.model.save(out / "model")
    stack = stack_heads(windows, evaluation, baseline, value, run_args.seed,
                        stack=run_args.fusion != "tower")
    if value is not earlier_value:
        stack.card["customer_value_before_test"] = earlier_value.card
    silent_alerts = silent_churn_alerts(windows, stack)
    if silent_alerts:
        stack.card["silent_churn_alerts"] = silent_alerts
    laps.lap("stacking")
    if run_args.fusion != "tower":  # a stack was fitted: the cascade's policy over it
        fit_cascade_policy(windows, evaluation, stack, value)
        laps.lap("cascade")
    uci_results = None
    if data_args.uci and not data_args.history:
        uci_results = tune_uci(network, data_args, model_args, run_args)
        laps.lap("uci")
    gate = exported = None
    if run_args.export:
        gate, exported = publish(network, windows, evaluation, stack, value, run_args)
        laps.lap("export")
    data = model_card.data_section(data_args, worker_session_policy(), windows.splits,
                                   windows.targets, windows.history)
    data["heads_skipped"] = skipped_heads(windows.targets["train"])
    card = model_card.build_card(
        model_card.model_section(model_args, run_args.fusion, network.model), data,
        model_card.training_section(network.fit_config, network.result, model_args.tiny),
        model_card.test_section(evaluation.metrics, baseline.metrics,
                                baseline.model.chosen_c, evaluation.comparison),
        model_card.stacking_section(stack, feature_schema()),
        uci=uci_results, exported=exported, gate=gate, seconds=laps.total(),
        load_average=(load_at_start, os.getloadavg()))
    write_outputs(out, card, evaluation, stack)
    print(model_line(stack), file=sys.stderr, flush=True)
    if silent_alerts:
        print(alerts_line(silent_alerts), file=sys.stderr, flush=True)
    print(json.dumps(summary(out, exported, stack, card["seconds"]["total"], gate)))
    return 3 if gate and not gate["accepted"] else 0


# --- the stages -----------------------------------------------------------------------------------


def seed_everything(run_args: RunArguments) -> None:
    random.seed(run_args.seed)
    np.random.seed(run_args.seed)
    torch.manual_seed(run_args.seed)
    if run_args.threads:
        torch.set_num_threads(run_args.threads)


def load_windows(data_args: DataArguments, seed: int) -> Windows | int:
    """Simulated users → labelled windows, split by user; or the platform's own events, split
    by time. An int: the exit status of a history that cannot be used (its reason printed)."""
    session_policy = worker_session_policy()
    label_policy = data_args.label_policy()
    history = None
    if data_args.history:
        loaded = own_history.guarded_load(data_args, get_settings(), session_policy,
                                          label_policy, seed)
        if isinstance(loaded, int):
            return loaded
        history, splits = loaded, loaded.splits
        orders_as_of = loaded.fit_before
        orders = served_value.orders_of(loaded.histories.values(), orders_as_of)
        lapsing = None  # a history does not say who lapsed
    else:
        users = simulate(data_args.users, SimConfig(seed=seed, days=data_args.sim_days))
        splits = build_splits(
            users, session_policy, label_policy, seed=seed,
            fractions=data_args.split_fractions(), prefix_share=data_args.prefix_share,
            max_windows_per_user=data_args.simulated_windows_per_user(),
            max_heldout_windows_per_user=data_args.heldout_windows_per_user,
            timers=worker_timer_policy() if data_args.windows == "worker" else None,
        )
        # Fitted on the training users only: held-out users' orders stay out of every fit.
        train_users = {x.user_id for x in splits["train"]}
        orders_as_of = max((u.observed_until for u in users), default=0) + 1
        orders = served_value.orders_of(
            (u.events for u in users if u.user_id in train_users), orders_as_of)
        lapsing = frozenset(u.user_id for u in users if u.archetype == "lapsing")
    return Windows(
        splits=splits,
        texts={name: [x.text for x in splits[name]] for name in SPLITS},
        targets={name: targets_of(splits[name]) for name in SPLITS},
        features={name: feature_matrix(splits[name]) for name in SPLITS},
        history=history,
        orders=orders,
        orders_as_of=orders_as_of,
        lapsing=lapsing,
    )


def fit_customer_value(windows: Windows, data_args: DataArguments) -> ValueFit:
    """BG/NBD + Gamma-Gamma on the training history's orders, over the churn horizon."""
    return served_value.fit_value_model(windows.orders, windows.orders_as_of,
                                        data_args.churn_days,
                                        version=f"orders before {iso(windows.orders_as_of)}")


def refit_for_serving(windows: Windows, data_args: DataArguments, value: ValueFit) -> ValueFit:
    """A history's customer value model refitted on every order of the history: the one the
    churn head learns its value columns from, the gate scores with and the version ships.
    The version is served at the history's end, as much as a horizon after the newest
    labelled window, and the fit before the test windows can be far too short to place those
    customers (a 180-day horizon on 9 months of orders: 94 days; on 500 customers it gave
    BG/NBD a 81, b 187, no drop-out heterogeneity at all, against a 0.52, b 1.09 on all 274).
    The head must learn on the columns it is served (learned on the short fit's and served
    the refit's, it fell from 0.72 to 0.66 ROC-AUC). The price: four population parameters
    have seen the labels' period (each row's columns still read only its own as-of FEATURES),
    so the card's test figures for churn are slightly optimistic; the order-log check
    (training/order_log.py) judges on a period none of it saw. Simulated runs, and a refit
    that fails, keep the first fit."""
    if windows.history is None or value.model is None:
        return value
    newest = max(e["ts"] for events in windows.history.histories.values() for e in events)
    orders = served_value.orders_of(windows.history.histories.values(), newest + 1)
    refit = served_value.fit_value_model(orders, newest + 1, data_args.churn_days,
                                         version=f"orders before {iso(newest + 1)}")
    return value if refit.model is None else refit


def fit_tfidf_baseline(windows: Windows, seed: int) -> Baseline:
    """TF-IDF + logistic regression on the same texts and split, C tuned on validation."""
    model = fit_baseline(
        windows.texts["train"], windows.targets["train"],
        {h: len(v) for h, v in MODEL_HEADS.items()}, windows.texts["validation"],
        windows.targets["validation"], baseline_score, seed,
    )
    validation, test = (
        {h: p[:, 1] if h == "churn" else p
         for h, p in model.predict_proba(windows.texts[name]).items()}
        for name in ("validation", "test"))
    metrics = compute_metrics(windows.targets["validation"], validation, windows.targets["test"],
                              test)
    return Baseline(model, validation, test, metrics)


def fine_tune(windows: Windows, model_args: ModelArguments, run_args: RunArguments) -> Network:
    """A new network fine-tuned on the training split, early-stopped on validation."""
    tokenizer = load_tokenizer(max_length=model_args.max_length)
    tower = run_args.fusion in ("tower", "both")
    model = new_model(model_args, len(tokenizer), tower)
    if tower:  # normalisation statistics from the training split only, saved with the model
        model.fit_normalisation(torch.from_numpy(windows.features["train"]))
    config = FitConfig(
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
    tokens = {name: tokenize(tokenizer, windows.texts[name], model_args.max_length)
              for name in ("train", "validation")}
    skipped = skipped_heads(windows.targets["train"])
    loss = loss_over(frozenset(MODEL_HEADS) - set(skipped)) if skipped else multitask_loss
    net_features = windows.features if tower else dict.fromkeys(SPLITS)
    result = fit(
        model, tokens["train"], as_tensors(windows.targets["train"]),
        tokens["validation"], as_tensors(windows.targets["validation"]), config, loss,
        train_features=net_features["train"], val_features=net_features["validation"],
    )
    return Network(model, tokenizer, config, result, tower)


def skipped_heads(targets: Targets) -> dict[str, str]:
    """Heads the training windows cannot teach (one label only), each with the reason."""
    out = {}
    for head, labels in MODEL_HEADS.items():
        seen = sorted(set(targets[head]))
        if len(seen) < 2:
            only = labels[seen[0]] if seen else "none"
            out[head] = (f"every training window has the label {only!r}: not trained (its "
                         "output is the fresh head's, read it as no signal)")
    return out


def evaluate(network: Network, baseline: Baseline, windows: Windows, seed: int) -> Evaluation:
    """The network on held-out users, against the baseline (intervals over test users)."""
    probs = {name: predict(network.model,
                           tokenize(network.tokenizer, windows.texts[name],
                                    network.model.max_length),
                           features=windows.features[name] if network.tower else None)
             for name in ("validation", "test")}
    metrics = compute_metrics(windows.targets["validation"], probs["validation"],
                              windows.targets["test"], probs["test"])
    comparison = compare(metrics, baseline.metrics, windows.targets["test"], probs["test"],
                         baseline.test, windows.users("test"), seed)
    return Evaluation(probs["validation"], probs["test"], metrics, comparison)


def stack_heads(windows: Windows, evaluation: Evaluation, baseline: Baseline, value: ValueFit,
                seed: int, *, stack: bool = True) -> StackResult:
    """Stacked heads fitted on validation rows the network did not train on; all probability
    arrays as [n, classes] (churn [n, 2]) for the stacking module. The customer value columns
    compete as extra churn inputs; BG/NBD P(alive) and days since the last order are churn
    peers."""
    def full(probs: Probs) -> Probs:
        return {h: columns(h, p) for h, p in probs.items()}

    held_out = ("validation", "test")
    peers = {"tfidf_lr": {"validation": full(baseline.validation), "test": full(baseline.test)}}
    for split in held_out:
        for name, score in served_value.peer_scores(windows.features[split], value).items():
            peers.setdefault(name, {})[split] = {"churn": columns("churn", score)}
    matrices = {s: served_value.value_matrix(value, windows.features[s]) for s in SPLITS}
    # A history's scores are served after its labelled windows: churn is chosen forward.
    as_of = (np.asarray([x.window_end for x in windows.splits["validation"]], dtype=np.int64)
             if windows.history else None)
    result = fit_stack(
        MODEL_HEADS, windows.features,
        {"validation": full(evaluation.validation), "test": full(evaluation.test)},
        windows.targets, {name: windows.users(name) for name in SPLITS},
        peers, seed, stack,
        value=None if value.model is None else matrices,  # type: ignore[arg-type]
        as_of=as_of,
        # Trained at an earlier cut: served a horizon or more beyond every labelled window.
        extrapolate=bool(windows.history and "earlier_cut" in windows.history.card["history"]),
    )
    result.card["customer_value"] = value.card
    return result


def fit_cascade_policy(windows: Windows, evaluation: Evaluation, stack: StackResult,
                       value: ValueFit) -> None:
    """The cascade's policy (training/fit/cascade.py): chosen on the validation windows in the
    order the worker scores them, measured on test; its card section goes to
    stack.card["cascade"]. Where a policy was chosen it joins the exported heads as
    "cascade" (its JSON), with "prototypes" (the network's typical outputs per kinds of event,
    from the validation windows without free text) where the policy lets typical answers
    stand; a policy with typical=False sends those rows to the network."""
    heads = Heads(stack.heads)
    reads_value = bool(stack.heads.get("churn_reads_customer_value"))
    rows, y, resorted = {}, {}, []
    for split, network in (("validation", evaluation.validation), ("test", evaluation.test)):
        examples = windows.splits[split]
        order = worker_order([x.user_id for x in examples], [x.window_end for x in examples])
        if not np.array_equal(order, np.arange(len(order))):
            resorted.append(split)
        matrix = served_value.value_matrix(value, windows.features[split]) if reads_value \
            else None
        rows[split] = cascade_rows_of(
            [examples[i] for i in order], windows.features[split][order],
            {h: columns(h, p)[order] for h, p in network.items()}, heads,
            None if matrix is None else matrix[order])
        y[split] = {h: np.asarray(windows.targets[split][h], dtype=np.int64)[order]
                    for h in MODEL_HEADS}
    heads = Heads(stack.heads, prototypes_of(rows["validation"]))
    fitted = fit_cascade(rows, y, heads, stack.thresholds.get("churn"), resorted)
    exported = []
    if fitted.policy is not None:
        stack.heads["cascade"] = fitted.policy.to_json()
        exported.append("cascade")
        if fitted.policy.typical:
            stack.heads["prototypes"] = heads.prototypes
            exported.append("prototypes")
    stack.card["cascade"] = {**fitted.card, "exported": exported}


def silent_churn_alerts(windows: Windows, stack: StackResult) -> dict[str, Any] | None:
    """Churn alerts for silent users against the simulator's lapsing users, on the test
    users: a user is alerted when one of their silence scores (the served churn head) reaches
    the worker's churn alert threshold. None for a history (no one knows who lapsed)."""
    if windows.lapsing is None:
        return None
    test = windows.splits["test"]
    silent = [i for i, x in enumerate(test) if x.trigger == "silence"]
    churn = np.asarray(stack.test_probs["churn"])[:, 1]
    return {"of": "test users; alerted: a silence score of theirs at or above the churn alert "
                  "threshold (INTENTSTREAM_ALERT_CHURN_THRESHOLD; exploration alerts aside); "
                  "positives: the simulator's lapsing users",
            **alert_precision_recall([test[i].user_id for i in silent], churn[silent],
                                     get_settings().alert_churn_threshold,
                                     set(windows.lapsing), set(windows.users("test")))}


def alerts_line(alerts: dict[str, Any]) -> str:
    """One line: churn alerts on silent users, precision and recall against lapsing users."""
    def share(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    return (f"churn alerts for silent users (p >= {alerts['threshold']:g}): precision "
            f"{share(alerts['precision'])} ({alerts['true_alerts']}/{alerts['alerted']} alerted "
            f"users lapsing), recall {share(alerts['recall'])} ({alerts['true_alerts']}/"
            f"{alerts['positives']} lapsing users alerted), {alerts['users']} test users")


def tune_uci(network: Network, data_args: DataArguments, model_args: ModelArguments,
             run_args: RunArguments) -> dict[str, Any]:
    """The UCI real sessions; the events-only network exported so replay can serve it."""
    # It starts from the trained model, which may stay the best weights: validate it first.
    config = FitConfig(**{**asdict(network.fit_config), "epochs": run_args.uci_epochs,
                          "max_steps": None, "batch_size": UCI_BATCH_SIZE,
                          "initial_check": True})
    tuned = tune_on_uci(data_args.uci_path(), Path(run_args.out) / "model", network.tokenizer,
                        model_args.max_length, train_limit=data_args.uci_train_limit,
                        with_analytics=data_args.uci_analytics, config=config,
                        seed=run_args.seed)
    # Servable, so the UCI backtest can replay it (`intentstream replay … --model-repo <this>`).
    tuned.results["variants"]["events_only"]["triton_repository"] = str(export_uci_repository(
        tuned.events_only_model, Path(run_args.repo), Path(run_args.out)))
    return tuned.results


def publish(network: Network, windows: Windows, evaluation: Evaluation, stack: StackResult,
            value: ValueFit, run_args: RunArguments,
            ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The gate (a history's version must beat the live one), then version N+1."""
    gate = None
    payload = served_value.served_payload(value)
    if windows.history:
        heads = ({"n_features": N_FEATURES, "feature_schema": FEATURE_SCHEMA_VERSION,
                  **stack.heads} if stack.heads else None)
        candidate = ServedVersion(network.model, heads, candidate_value(payload),
                                  Path(run_args.repo))
        gate = gate_against_live(Path(run_args.repo), candidate, windows.texts["test"],
                                 windows.targets["test"], windows.features["test"],
                                 windows.users("test"), run_args.seed)
        if not gate["accepted"]:
            return gate, None
    held_out = held_out_sample(
        windows.texts["test"], windows.targets["test"], run_args.runtime_check_texts,
        churn_threshold=evaluation.metrics["churn"]["threshold"] or 0.5,
        features=windows.features["test"] if network.tower else None)
    exported = publish_version(network.model, Path(run_args.repo), stack.heads,
                               runtime=run_args.runtime, held_out=held_out, int8=run_args.int8,
                               customer_value=payload)
    return gate, {**exported, "repo": str(run_args.repo)}


def write_outputs(out: Path, card: dict[str, Any], evaluation: Evaluation,
                  stack: StackResult) -> None:
    """The card (JSON and Markdown) and the headline metrics."""
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out / "model_card.md").write_text(model_card.render_markdown(card), encoding="utf-8")
    (out / "metrics.json").write_text(
        json.dumps({"test": evaluation.metrics, "comparison": evaluation.comparison,
                    "served": stack.card["test"]["served"],
                    "served_vs_peers": stack.card["served_vs_peers"]}, indent=2) + "\n",
        encoding="utf-8",
    )


# --- helpers --------------------------------------------------------------------------------------


def summary(out: Path, exported: dict[str, Any] | None, stack: StackResult, seconds: float,
            gate: dict[str, Any] | None) -> dict[str, Any]:
    """The one JSON line a run prints."""
    versus = stack.card["served_vs_peers"]
    return {
        "out": str(out),
        "exported": exported,
        "beats_baseline": {h: versus[h]["tfidf_lr"]["beats"] for h in MODEL_HEADS
                           if "tfidf_lr" in versus.get(h, {})},
        "beats_peers": stack.card["beats_peers"],
        "seconds": seconds,
        **({"gate": gate} if gate else {}),
    }


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
