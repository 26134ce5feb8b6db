"""The model card's Markdown, rendered from its JSON (the JSON is the record; this is a view)."""

from __future__ import annotations

from typing import Any

METRIC_NAMES = {
    "macro_f1": "macro-F1",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "ece": "calibration error (ECE, lower is better)",
}


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _confusion(title: str, matrix: dict[str, Any]) -> list[str]:
    labels = matrix["labels"]
    lines = [f"*{title}* (rows: true, columns: predicted)", "",
             "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for label, row in zip(labels, matrix["rows_true_cols_pred"], strict=True):
        lines.append(f"| **{label}** | " + " | ".join(str(v) for v in row) + " |")
    return [*lines, ""]


MODEL_NAMES = {
    "served": "**served** (stacked heads, network's intent type)",
    "text_model": "network alone (text)",
    "stack_hgb": "stack: HistGradientBoosting over [features, text probs]",
    "stack_hgb_shallow": "stack: depth-2 HistGradientBoosting over [features, text probs]",
    "stack_logistic": "stack: logistic regression over standardised [features, text probs]",
    "stack_blend": "stack: that logistic regression also reading the features peer's "
                   "probabilities (blend)",
    "stack_pool": "stack: logistic regression over the log-probabilities of the features peer "
                  "and the network (pool)",
    "features_gb": "peer: HistGradientBoosting on the features alone",
    "tfidf_lr": "peer: TF-IDF + logistic regression on the text",
    "recency_frequency": "peer: recency/frequency logistic regression (churn)",
}


def _with_interval(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")


def _stacking(stack: dict[str, Any] | None, headline: str) -> list[str]:
    """The fusion comparison and every model side by side on the test split."""
    if not stack:
        return []
    selection = stack["selection"]
    lines = [
        "## Features + text: stacked heads and the peers",
        "",
        f"Stacked heads over {stack['inputs']}, fitted on the {stack['fitted_on']['split']} split "
        f"({stack['fitted_on']['rows']} windows, {stack['fitted_on']['users']} users) that the "
        f"network never trained on. Fusion chosen per head by {selection['method']}:",
        "",
        "| head | " + " | ".join(
            sorted({k for s in selection["scores"].values() for k in s})) + " | chosen |",
    ]
    kinds = sorted({k for s in selection["scores"].values() for k in s})
    lines.append("|---" * (len(kinds) + 2) + "|")
    for head, scores in selection["scores"].items():
        lines.append(f"| {head} | " + " | ".join(_num(scores.get(k)) for k in kinds)
                     + f" | {selection['chosen'].get(head, 'text_model')} |")
    skipped = stack.get("skipped", {})
    if skipped:
        lines += ["", *(f"- {head}: not stacked ({why})." for head, why in skipped.items())]
    lines += [
        "",
        f"Test split, {METRIC_NAMES[headline]} and ROC-AUC with 95% intervals over resampled "
        "test users:",
        "",
        "| model | head | " + METRIC_NAMES[headline] + " | ROC-AUC | PR-AUC | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for name, heads in stack["test"].items():
        for head, row in heads.items():
            lines.append(
                f"| {MODEL_NAMES.get(name, name)} | {head} | "
                f"{_with_interval(row[headline], row[headline + '_ci95'])} | "
                f"{_with_interval(row['roc_auc'], row['roc_auc_ci95'])} | "
                f"{_num(row['pr_auc'])} | {_num(row['ece'])} |")
    lines += ["", "Served model − peer, " + METRIC_NAMES[headline] + " (95% interval):", ""]
    for head, peers in stack["served_vs_peers"].items():
        parts = [f"{peer} {_signed(row['delta'])} ({_signed(row['ci95'][0])} to "
                 f"{_signed(row['ci95'][1])}){'' if row['beats'] else ' NOT beaten'}"
                 for peer, row in peers.items()]
        lines.append(f"- **{head}**: " + "; ".join(parts))
    return [*lines, ""]


def _fusion(model: dict[str, Any]) -> list[str]:
    """How the behaviour FEATURES join the text (`--fusion`), when the card records it."""
    fusion, tower = model.get("fusion"), model.get("feature_tower")
    if not fusion:
        return []
    how = {"stack": "stacked heads over [FEATURES, the network's probabilities] (below)",
           "tower": "a feature tower inside the network",
           "both": "a feature tower inside the network, and stacked heads over it (below)"}
    lines = [f"- Fusion (`--fusion {fusion}`): {how.get(fusion, fusion)}."]
    if tower:
        lines.append(
            f"- Feature tower: {tower['n_features']} FEATURES (schema "
            f"v{(tower.get('schema') or {}).get('version')}), "
            f"{tower['normalisation']['transform']}, standardised on the training split, "
            f"clipped to ±{tower['normalisation']['clip']:g}, MLP {tower['tower']}, "
            f"{tower['fusion']}.")
    return lines


def render_markdown(card: dict[str, Any]) -> str:
    model, data, training = card["model"], card["data"], card["training"]
    test, headline = card["test"], card["headline_metric"]
    lines = ["# IntentBert model card", ""]
    exported = card.get("exported")
    if exported:
        onnx = exported["intent_bert_onnx"]
        lines += [f"Exported as `intent_bert` version {exported['intent_bert']} and "
                  f"`intent_bert_onnx` version {onnx['version']} (ONNX vs PyTorch max abs diff "
                  f"{onnx['max_abs_diff']:.1e}, tolerance {onnx['tolerance']:.0e}).", ""]
        runtime = exported.get("runtime") or {}
        if runtime:
            lines += [f"Served on `{runtime.get('runtime', 'torch')}` (the fastest runtime that "
                      "passed the quality bar: every head's ROC-AUC within 0.005 and macro-F1 "
                      "within 0.01 of torch fp32 on held-out users)."]
            verdicts = (runtime.get("quality") or {}).get("verdicts") or {}
            for name, verdict in sorted(verdicts.items()):
                lines.append(f"- {name}: " + ("passed" if verdict.get("passed")
                                              else verdict.get("reason", "refused")))
            lines.append("")
    lines += [
        "## Model",
        f"- Encoder: {model['encoder']}; mean pooling; {model['parameters']:,} parameters.",
        f"- Heads: intent strength {model['heads']['strength']}, intent type "
        f"{model['heads']['intent_type']}, churn (binary).",
        f"- Input: the worker's rendered session text, at most {model['max_length']} tokens, "
        f"truncated on the {model['truncation']}.",
        *_fusion(model),
        "",
        "## Data",
        f"- Source: {data['source']}; {data['users']} users, {data['sim_days']:g} days each; "
        f"archetype mix {data['archetype_mix']}.",
        f"- Windows: every session the worker would build ({data['session_policy']}), plus a "
        f"mid-session window for {data['prefix_share']:.0%} of sessions; at most "
        f"{data['windows_per_user']} windows per user.",
        f"- Labels from after the window: strong = purchase within "
        f"{data['label_policy']['horizon_hours']:g} h, medium = cart activity without purchase, "
        f"weak = neither; churn = no activity for {data['label_policy']['churn_days']:g} days. "
        "Intent type: the window's dominant need.",
        "- Split by user (no user in two splits):",
        "",
        "| split | users | windows | strength | intent type | churn |",
        "|---|---|---|---|---|---|",
    ]
    for name, split in data["splits"].items():
        labels = split["labels"]
        lines.append(
            f"| {name} | {split['users']} | {split['windows']} | {labels['strength']} | "
            f"{labels['intent_type']} | {labels['churn']} |"
        )
    lines += [
        "",
        "## Held-out users: model vs TF-IDF + logistic regression",
        "",
        f"Headline metric: {METRIC_NAMES[headline]}. The baseline reads the same texts (not cut "
        f"to {model['max_length']} tokens) and split; its C was tuned per head on validation "
        f"({test['baseline_c']}). Churn's decision threshold is chosen on validation for both.",
        "",
        "| head | metric | model | baseline | Δ | better |",
        "|---|---|---|---|---|---|",
    ]
    for head, result in test["comparison"].items():
        for metric, row in result["metrics"].items():
            lines.append(
                f"| {head} | {METRIC_NAMES[metric]} | {_num(row['model'])} | "
                f"{_num(row['baseline'])} | {_signed(row['delta'])} | "
                f"{'model' if row['model_better'] else 'baseline'} |"
            )
    lines.append("")
    for head, result in test["comparison"].items():
        delta = result["metrics"][headline]["delta"]
        low, high = result["headline_delta_ci95"]
        verdict = "beats the baseline" if result["beats_baseline"] else "does NOT beat the baseline"
        lines.append(f"- **{head}**: {verdict}; {METRIC_NAMES[headline]} model − baseline = "
                     f"{_signed(delta)} (95% interval over test users {_signed(low)} to "
                     f"{_signed(high)}).")
    lines += ["", "### Confusion matrices (test)", ""]
    for head in test["model"]:
        lines += _confusion(f"{head}, model", test["model"][head]["confusion_matrix"])
        lines += _confusion(f"{head}, baseline", test["baseline"][head]["confusion_matrix"])
    lines += _stacking(card.get("stacking"), headline)
    uci = card.get("uci")
    if uci:
        lines += [
            "## Real sessions: UCI Online Shoppers (Revenue)",
            "",
            f"Data: {uci['data']}",
            "",
            f"Comparable split `{uci['split']}`; fine-tuned (P(strong) = P(Revenue)) on "
            f"{uci['rows']['fine_tuned_on']} rows of the {uci['rows']['train_part']}-row training "
            f"part ({uci['rows']['early_stopping']} more for early stopping), evaluated on the "
            f"{uci['rows']['test']} test rows (purchase rate {uci['test_purchase_rate']:.1%}).",
            "",
            "| model | ROC-AUC | PR-AUC |",
            "|---|---|---|",
        ]
        for name, result in uci["variants"].items():
            lines.append(f"| **IntentBert, {name.replace('_', ' ')}** | "
                         f"{_num(result['roc_auc'])} | {_num(result['pr_auc'])} |")
        for peer in uci["peers"]:
            lines.append(f"| {peer['model']} | {_num(peer['roc_auc'])} | {_num(peer['pr_auc'])} |")
        lines += ["", "Example text (events only): `"
                  + uci["variants"]["events_only"]["example_text"][:300] + "`", ""]
    lines += [
        "## Training",
        f"- AdamW, peak rate {training['learning_rate']:g}, linear warm-up "
        f"{training['warmup_ratio']:.0%} then decay, weight decay {training['weight_decay']:g}, "
        f"batch {training['batch_size']}, seed {training['seed']}, {training['threads']} threads.",
        f"- {training['steps']} steps (best validation loss {training['best_val_loss']:.4f} at "
        f"step {training['best_step']}; stopped early: {training['stopped_early']}).",
        f"- Seconds: {card['seconds']} on {card['cpu_count']} cores (load average at start and "
        f"end: {card['load_average_1_5_15min']}; other work on the same cores slows it).",
        "",
        "## Limitations",
        "- Trained on simulated shoppers: the numbers above say how well it recovers the "
        "simulator's behaviour, not how it will do on a real shop's traffic.",
        "- Intent type is a rule of the window's content (streams/core/labelling.py); a support "
        "message older than the newest ~128 tokens is out of the model's sight.",
        "- UCI sessions are summaries (page counts and total times), not event streams: the text "
        "carries no order, no items and no per-page times.",
        "",
    ]
    return "\n".join(lines)
