"""The model card: built from the run's facts as typed sections (`build_card`), written as JSON
(the record) and rendered as Markdown (a view, one function per section)."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from inference.heads import MODEL_HEADS
from inference.model.quality import MACRO_F1_MARGIN, ROC_AUC_MARGIN
from training.data.simulator import ARCHETYPE_WEIGHTS, ARCHETYPES
from training.data.windows import label_counts
from training.evaluate.metrics import HEADLINE_METRIC

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


# --- building the card: the run passes facts in, each section is built here ----------------------


def model_section(model_args: Any, fusion: str, model: Any) -> dict[str, Any]:
    return {
        "encoder": "tiny random 2-layer BERT (tests)" if model_args.tiny
        else "sentence-transformers/all-MiniLM-L6-v2 (6 layers, 384 hidden), offline copy",
        "heads": {h: list(v) for h, v in MODEL_HEADS.items()},
        "max_length": model_args.max_length,
        "truncation": "left (the newest events are kept)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "fusion": fusion,
        "feature_tower": model.heads_metadata().get("features"),
    }


def data_section(data_args: Any, session_policy: Any, splits: dict[str, list[Any]],
                 targets: dict[str, dict[str, list[int]]], history: Any) -> dict[str, Any]:
    """Where the windows came from and how they split; a history adds its own facts."""
    section = {
        "source": "training.data.simulator (synthetic shoppers; see docs/model.md)",
        "users": data_args.users,
        "sim_days": data_args.sim_days,
        "archetype_mix": dict(zip(ARCHETYPES, ARCHETYPE_WEIGHTS, strict=True)),
        "session_policy": asdict(session_policy),
        "label_policy": {"horizon_hours": data_args.horizon_hours,
                         "churn_days": data_args.churn_days},
        "windows": data_args.windows,
        "windows_per_user": (data_args.windows_per_user if history
                             else data_args.simulated_windows_per_user()),
        "heldout_windows_per_user": data_args.heldout_windows_per_user,
        "split_fractions": data_args.split_fractions(),
        "prefix_share": data_args.prefix_share,
        "splits": {name: {"users": len({x.user_id for x in windows}),
                          "windows": len(windows),
                          "labels": label_counts(targets[name])}
                   for name, windows in splits.items()},
    }
    return {**section, **(history.card if history else {})}


def training_section(fit_config: Any, result: Any, tiny: bool) -> dict[str, Any]:
    return {
        **{k: v for k, v in asdict(fit_config).items() if k != "progress"},
        "steps": result.steps,
        "best_step": result.best_step,
        "best_val_loss": result.best_val_loss,
        "stopped_early": result.stopped_early,
        "history": result.history,
        "threads": torch_threads(),
        "tiny": tiny,
    }


def test_section(model: dict[str, Any], baseline: dict[str, Any], baseline_c: Any,
                 comparison: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "baseline": baseline, "baseline_c": baseline_c,
            "comparison": comparison}


def stacking_section(stack: Any, schema: dict[str, Any]) -> dict[str, Any]:
    return {**stack.card, "exported_heads": sorted(h for h in stack.heads if h in MODEL_HEADS),
            "churn_reads_customer_value": bool(stack.heads.get("churn_reads_customer_value")),
            "feature_schema": schema}


def build_card(model: dict[str, Any], data: dict[str, Any], training: dict[str, Any],
               test: dict[str, Any], stacking: dict[str, Any], *, uci: dict[str, Any] | None,
               exported: dict[str, Any] | None, gate: dict[str, Any] | None,
               seconds: dict[str, float], load_average: tuple[Any, Any]) -> dict[str, Any]:
    """The card as JSON fields, in the order they are written (`gate`: a history's only)."""
    card = {
        "model": model, "data": data, "training": training,
        "headline_metric": HEADLINE_METRIC, "test": test, "stacking": stacking, "uci": uci,
        "exported": exported, "seconds": seconds,
        "load_average_1_5_15min": {"start": load_average[0], "end": load_average[1]},
        "cpu_count": os.cpu_count(),
    }
    return {**card, "gate": gate} if "history" in data else card


def torch_threads() -> int:
    import torch  # the run has loaded it already

    return torch.get_num_threads()


# --- rendering ------------------------------------------------------------------------------------


def render_markdown(card: dict[str, Any]) -> str:
    """The card's Markdown: one function per section, in reading order."""
    sections = (_exported, _model, _data, _versus_baseline, _confusions,
                lambda c: _stacking(c.get("stacking"), c["headline_metric"]), _uci, _history,
                lambda c: _cascade((c.get("stacking") or {}).get("cascade")),
                lambda c: _silent_alerts((c.get("stacking") or {}).get("silent_churn_alerts")),
                _order_log, _training, _limitations)
    return "\n".join(["# IntentBert model card", "",
                      *(line for section in sections for line in section(card))])


def _exported(card: dict[str, Any]) -> list[str]:
    exported = card.get("exported")
    if not exported:
        return []
    onnx = exported["intent_bert_onnx"]
    lines = [f"Exported as `intent_bert` version {exported['intent_bert']} and "
             f"`intent_bert_onnx` version {onnx['version']} (ONNX vs PyTorch max abs diff "
             f"{onnx['max_abs_diff']:.1e}, tolerance {onnx['tolerance']:.0e}).", ""]
    runtime = exported.get("runtime") or {}
    if runtime:
        lines += [f"Served on `{runtime.get('runtime', 'torch')}` (the fastest runtime that "
                  "passed the quality bar: every head's ROC-AUC within "
                  f"{ROC_AUC_MARGIN} and macro-F1 within {MACRO_F1_MARGIN} of torch fp32 on "
                  "held-out users)."]
        verdicts = (runtime.get("quality") or {}).get("verdicts") or {}
        for name, verdict in sorted(verdicts.items()):
            lines.append(f"- {name}: " + ("passed" if verdict.get("passed")
                                          else verdict.get("reason", "refused")))
        lines.append("")
    return lines


def _model(card: dict[str, Any]) -> list[str]:
    model = card["model"]
    return [
        "## Model",
        f"- Encoder: {model['encoder']}; mean pooling; {model['parameters']:,} parameters.",
        f"- Heads: intent strength {model['heads']['strength']}, intent type "
        f"{model['heads']['intent_type']}, churn (binary).",
        f"- Input: the worker's rendered session text, at most {model['max_length']} tokens, "
        f"truncated on the {model['truncation']}.",
        *_fusion(model),
        "",
    ]


def _windows_line(data: dict[str, Any]) -> str:
    cap = data["windows_per_user"]
    capped = f"; at most {cap} windows per user" if cap else ""
    if data.get("windows", "worker") == "worker":
        return ("- Windows: what the live worker scores under its policy "
                f"({data['session_policy']}): every session prefix as its events arrive, each "
                f"close, each silence milestone with FEATURES as of it{capped}.")
    return (f"- Windows: every session the worker would build ({data['session_policy']}), plus "
            f"a mid-session window for {data['prefix_share']:.0%} of sessions{capped}.")


def _data(card: dict[str, Any]) -> list[str]:
    data = card["data"]
    lines = [
        "## Data",
        f"- Source: {data['source']}; {data['users']} users, {data['sim_days']:g} days each; "
        f"archetype mix {data['archetype_mix']}.",
        _windows_line(data),
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
    return [*lines, ""]


def _versus_baseline(card: dict[str, Any]) -> list[str]:
    test, headline = card["test"], card["headline_metric"]
    lines = [
        "## Held-out users: model vs TF-IDF + logistic regression",
        "",
        f"Headline metric: {METRIC_NAMES[headline]}. The baseline reads the same texts (not cut "
        f"to {card['model']['max_length']} tokens) and split; its C was tuned per head on "
        f"validation ({test['baseline_c']}). Churn's decision threshold is chosen on validation "
        "for both.",
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
    return lines


def _confusions(card: dict[str, Any]) -> list[str]:
    test = card["test"]
    lines = ["", "### Confusion matrices (test)", ""]
    for head in test["model"]:
        lines += _confusion(f"{head}, model", test["model"][head]["confusion_matrix"])
        lines += _confusion(f"{head}, baseline", test["baseline"][head]["confusion_matrix"])
    return lines


def _uci(card: dict[str, Any]) -> list[str]:
    uci = card.get("uci")
    if not uci:
        return []
    lines = [
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
    return [*lines, "", "Example text (events only): `"
            + uci["variants"]["events_only"]["example_text"][:300] + "`", ""]


def _history(card: dict[str, Any]) -> list[str]:
    """Training on the platform's own history: the source, what was dropped, the split, the gate."""
    h = card["data"].get("history")
    if not h:
        return []
    lines = ["## Training on the platform's own history", "",
             f"- Source: {h['type']} {h.get('name') or h.get('topic')}; {h['records']} records, "
             f"{h['valid_events']} valid events of {h['users']} users, "
             f"{h['first_event']} to {h['observed_until']}.",
             f"- Dropped by reason: {h['dropped'] or 'none'}.",
             f"- Split by event time at {h['test_from']} (the table above: train and "
             "validation are split by user before it, test is every user after it): windows "
             f"before it settle ({h['labels_settle_days']:g} days) before it, labelled from the "
             "events before it; test windows end after it.",
             f"- Event types: {h['event_types']}.",
             f"- Windows: {h.get('windows')} triggers, by kind {h.get('triggers')}."]
    cut = h.get("earlier_cut")
    if cut:
        lines.append(f"- **Trained at an earlier cut, {cut['cut']}**, not at the split time "
                     f"above: {cut['split']}. Why: {cut['why']}")
    skipped = card["data"].get("heads_skipped")
    if skipped:
        lines.append(f"- Heads skipped (no labels to learn from): {skipped}.")
    gate_result = card.get("gate")
    if gate_result:
        verdict = "exported" if gate_result["accepted"] else "NOT exported"
        lines.append(f"- Gate against live version {gate_result['live_version']}: {verdict} "
                     f"({gate_result['why']})"
                     + (f"; {gate_result['on']}." if gate_result.get("on") else "."))
        for head, row in (gate_result.get("heads") or {}).items():
            lines.append(f"  - {head}: ROC-AUC live {row['live_roc_auc']:.3f}, candidate "
                         f"{row['candidate_roc_auc']:.3f}, difference {row['delta']:+.3f} "
                         f"(95% {_ci(row['delta_ci95'])}); log-loss {row['live_log_loss']:.3f} "
                         f"→ {row['candidate_log_loss']:.3f}.")
    return [*lines, "", *_churn_peers(card)]


def _ci(pair: list[float] | None, signed: bool = True) -> str:
    if not pair:
        return "n/a"
    return f"[{pair[0]:+.3f}, {pair[1]:+.3f}]" if signed else f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def _churn_peers(card: dict[str, Any]) -> list[str]:
    """The served churn head beside BG/NBD P(alive) and days since the last order."""
    stacking = card.get("stacking") or {}
    test = stacking.get("test") or {}
    value = stacking.get("customer_value") or {}
    if "churn" not in test.get("served", {}):
        return []
    lines = ["## Churn against customer value and recency", "",
             "ROC-AUC on the test windows (95% interval over users); the margin is the served "
             "head's ROC-AUC minus the peer's.", "",
             "| model | ROC-AUC | margin of the served head |", "|---|---|---|"]
    names = {"served": "served churn head", "bgnbd_p_alive": "BG/NBD 1 - P(alive)",
             "days_since_last_order": "days since the last order",
             "recency_frequency": "recency/frequency logistic regression"}
    versus = (stacking.get("served_vs_peers") or {}).get("churn", {})
    for name, label in names.items():
        row = test.get(name, {}).get("churn")
        if row is None:
            continue
        peer = versus.get(name, {})
        margin = (f"{peer['roc_auc_delta']:+.3f} ({_ci(peer.get('roc_auc_delta_ci95'))})"
                  if "roc_auc_delta" in peer else "")
        auc = "n/a" if row.get("roc_auc") is None else f"{row['roc_auc']:.3f}"
        lines.append(f"| {label} | {auc} {_ci(row.get('roc_auc_ci95'), signed=False)} "
                     f"| {margin} |")
    if value.get("bgnbd"):
        lines += ["", f"Customer value model (BG/NBD + Gamma-Gamma, days), fitted on "
                      f"{value['customers']} customers ({value['repeat_customers']} repeat): "
                      f"BG/NBD {value['bgnbd']}, Gamma-Gamma {value['gamma_gamma']}; "
                      f"horizon {value['horizon_days']:g} days. Churn head reads its columns: "
                      f"{stacking.get('churn_reads_customer_value', False)}."]
    elif value.get("skipped"):
        lines += ["", f"No customer value model: {value['skipped']}."]
    earlier = stacking.get("customer_value_before_test")
    if earlier and earlier.get("bgnbd"):
        lines += ["", f"Fitted on every order of the history (the version is served at its "
                      f"end); the fit on the orders before the test windows alone "
                      f"({earlier['customers']} customers) gave BG/NBD {earlier['bgnbd']}."]
    return [*lines, ""]


def _cascade(cascade: dict[str, Any] | None) -> list[str]:
    """The cascade's policy (training/fit/cascade.py): how often the network runs, and what
    answering without it costs per head against the all-network answer."""
    if not cascade:
        return []
    test, val = cascade["test"], cascade["validation"]
    bar = cascade["bar"]["max_abs_delta_macro_f1"]
    policy, search = cascade["policy"], cascade["search"]
    chosen = ("no policy: every cheap answer runs the network" if policy is None
              else f"`{policy}`")
    lines = [
        "## Cascade: when the text network runs",
        "",
        f"Policy chosen on validation: {chosen}. The cheapest of {search['candidates']} "
        f"candidates wins among those ({search['within_bar']}) that keep every head's macro-F1 "
        f"and ROC-AUC within {bar} of the all-network answer there. Exported with the heads: "
        f"{', '.join(cascade.get('exported') or []) or 'nothing'}.",
        *_closest(search.get("closest") if policy is None else None),
        "",
        "A stale answer reuses the kept network outputs where the session's reading signature "
        "(a digest of its free text and of the set of event kinds it holds) is unchanged since "
        "the kept run: new free text or a new kind of event runs the network. A typical answer "
        "(no free text, nothing kept: the stacker over the network's mean outputs on "
        "validation sessions with the same kinds of event) stands only under a policy with "
        "`typical` true; with it false, those rows run the network.",
        "",
        f"Network share: test {_num(test['network_share'])} of {test['windows']} windows "
        f"(validation {_num(val['network_share'])}; without a policy, only exact re-scores "
        f"skip it: test {_num(test['network_share_without_policy'])}). By route: "
        + "; ".join(f"{name} {row['windows']} windows, network {_num(row['network_share'])}"
                    for name, row in test["by_route"].items()) + ". Why the network ran: "
        + (", ".join(f"{why} {count}" for why, count in test.get("why_network", {}).items())
           or "never") + ".",
        "",
        "| head | cascade macro-F1 | all-network macro-F1 | Δ | cascade ROC-AUC | "
        "all-network ROC-AUC | Δ |",
        "|---|---|---|---|---|---|---|",
    ]
    def signed(value: float | None) -> str:
        return "–" if value is None else _signed(value)

    for head, row in test["heads"].items():
        lines.append(f"| {head} | {_num(row['cascade']['macro_f1'])} | "
                     f"{_num(row['all_network']['macro_f1'])} | {signed(row['delta_macro_f1'])} | "
                     f"{_num(row['cascade']['roc_auc'])} | {_num(row['all_network']['roc_auc'])} | "
                     f"{signed(row['delta_roc_auc'])} |")
    flips = test["alert_flips"]
    lines += ["", "Alert decisions that differ from the all-network answer on test: intent "
              f"{flips['intent']['windows']}, churn {flips['churn']['windows']} windows. "
              f"Note: {cascade['note']}.", ""]
    return lines


def _closest(closest: dict[str, Any] | None) -> list[str]:
    """Where the bar refused every candidate: the one nearest the all-network answer."""
    if not closest:
        return []
    parts = [f"{head} {metric} {_signed(d)}" for head, row in closest["deltas"].items()
             for metric, d in row.items() if d is not None]
    return ["", f"Nearest candidate on validation: `{closest['policy']}`, network share "
            f"{_num(closest['network_share'])}, Δ " + ", ".join(parts) + "."]


def _silent_alerts(alerts: dict[str, Any] | None) -> list[str]:
    """Churn alerts on silent test users against the simulator's lapsing users."""
    if not alerts:
        return []

    def share(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    return ["## Churn alerts for silent users", "",
            f"Of the {alerts['users']} test users, {alerts['alerted']} get a churn alert from a "
            f"silence score (p(churn) >= {alerts['threshold']:g}) and {alerts['positives']} "
            f"are the simulator's lapsing users: precision {share(alerts['precision'])}, "
            f"recall {share(alerts['recall'])} ({alerts['true_alerts']} alerted and lapsing).",
            ""]


ORDER_LOG_ROWS = {"served": "served churn head", "days_since_last_order":
                  "days since the last order (peer)", "bgnbd_expected_orders":
                  "BG/NBD expected orders (peer)", "bgnbd_p_alive": "BG/NBD 1 - P(alive)",
                  "bgnbd_no_order": "BG/NBD P(no order in the horizon)"}


def _order_log(card: dict[str, Any]) -> list[str]:
    """`python -m training.order_log --run`: the version on a whole order log, every
    customer as of the calibration end, churn = no order in the horizon after it."""
    result = card.get("order_log")
    if not result:
        return []
    lines = ["## Churn at the end of the calibration period (order log)", "",
             f"{result['events']}: {result['customers']} customers as of "
             f"{result['calibration_end']}, {result['churned']} with no order in the next "
             f"{result['label_days']:g} days (`python -m training.order_log`). ROC-AUC with "
             "95% intervals over customers; the margin is the served head's minus the row's. "
             f"Beats both peers: {result['beats_peers']}.", "",
             "| model | ROC-AUC | margin of the served head |", "|---|---|---|"]
    for name, label in ORDER_LOG_ROWS.items():
        row, versus = result.get(name), result.get(f"served_minus_{name}")
        if row is None:
            continue
        margin = "" if versus is None else f"{versus['delta']:+.3f} {_ci(versus['ci95'])}"
        lines.append(f"| {label} | {_num(row['roc_auc'])} "
                     f"{_ci(row['roc_auc_ci95'], signed=False)} | {margin} |")
    return [*lines, ""]


def _training(card: dict[str, Any]) -> list[str]:
    training = card["training"]
    return [
        "## Training",
        f"- AdamW, peak rate {training['learning_rate']:g}, linear warm-up "
        f"{training['warmup_ratio']:.0%} then decay, weight decay {training['weight_decay']:g}, "
        f"batch {training['batch_size']}, seed {training['seed']}, {training['threads']} threads.",
        f"- {training['steps']} steps (best validation loss {training['best_val_loss']:.4f} at "
        f"step {training['best_step']}; stopped early: {training['stopped_early']}).",
        f"- Seconds: {card['seconds']} on {card['cpu_count']} cores (load average at start and "
        f"end: {card['load_average_1_5_15min']}; other work on the same cores slows it).",
        "",
    ]


def _limitations(card: dict[str, Any]) -> list[str]:
    return [
        "## Limitations",
        "- Trained on simulated shoppers: the numbers above say how well it recovers the "
        "simulator's behaviour, not how it will do on a real shop's traffic.",
        "- Intent type is a rule of the window's content (streams/core/labelling.py); a support "
        "message older than the newest ~128 tokens is out of the model's sight.",
        "- UCI sessions are summaries (page counts and total times), not event streams: the text "
        "carries no order, no items and no per-page times.",
        "",
    ]
