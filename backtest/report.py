"""The report directory: `metrics.json`, PNG plots and a self-contained `report.html`.

`metrics.json` is canonical: sorted keys, floats rounded to 6 places, and nothing that depends
on the wall clock, the machine, paths or ports, so two runs over the same input, model and
settings write the same bytes. The HTML links the PNGs beside it.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display; before pyplot is imported
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from streams.core.timeunits import iso

from .evaluate import Binary, Evaluation

DIGITS = 6
CALIBRATION_BINS = 10
HEAD_TITLES = {
    "strength": "intent strength: P(strong) vs a purchase within H",
    "intent_type": "intent type (one-vs-rest per class)",
    "churn": "churn: P(churn) vs no activity for D",
    "revenue": "UCI: P(purchase) vs Revenue (test part)",
}
ALERT_TITLES = {"intent": "intent alerts (P(strong))", "churn": "churn alerts (P(churn))",
                "revenue": "alerts on P(purchase) vs Revenue"}
_PNG_METADATA = {"Software": None}  # keep the PNG bytes free of the matplotlib version


def canonical(value: Any) -> Any:
    """JSON-able, with floats rounded and non-finite numbers as null."""
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return round(number, DIGITS) if math.isfinite(number) else None
    return value


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    text = json.dumps(canonical(metrics), sort_keys=True, indent=2, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def iso_or_none(ms: int | None) -> str | None:
    return None if ms is None else iso(ms)


# --- plots ----------------------------------------------------------------------------------------


def _save(fig: plt.Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_PNG_METADATA)
    plt.close(fig)
    return path.name


def _scorable(binary: Binary) -> bool:
    return len(binary.y) > 0 and 0 < int(binary.y.sum()) < len(binary.y)


def plot_roc_pr(head: str, curves: Sequence[tuple[str, Binary]], path: Path) -> str | None:
    curves = [(name, b) for name, b in curves if _scorable(b)]
    if not curves:
        return None
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.4))
    for name, binary in curves:
        fpr, tpr, _ = roc_curve(binary.y, binary.p)
        precision, recall, _ = precision_recall_curve(binary.y, binary.p)
        roc_ax.plot(fpr, tpr, label=name)
        pr_ax.step(recall, precision, where="post", label=name)
    base = curves[0][1]
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    pr_ax.axhline(base.y.mean(), color="grey", linestyle=":", linewidth=1,
                  label=f"positive rate {base.y.mean():.3f}")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=8, loc="best")
        ax.grid(alpha=0.3)
    fig.suptitle(HEAD_TITLES.get(head, head))
    return _save(fig, path)


def reliability(binary: Binary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean predicted probability, observed frequency and count per non-empty bin."""
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    which = np.clip(np.digitize(binary.p, edges[1:-1], right=True), 0, CALIBRATION_BINS - 1)
    keep = [b for b in range(CALIBRATION_BINS) if (which == b).any()]
    mean_p = np.array([binary.p[which == b].mean() for b in keep])
    freq = np.array([binary.y[which == b].mean() for b in keep])
    count = np.array([(which == b).sum() for b in keep])
    return mean_p, freq, count


def plot_calibration(evaluations: Sequence[Evaluation], path: Path) -> str | None:
    heads = [h for h in HEAD_TITLES if any(len(e.calibration.get(h, Binary.of([], [])).y)
                                           for e in evaluations)]
    if not heads:
        return None
    fig, axes = plt.subplots(1, len(heads), figsize=(4.6 * len(heads), 4.4), squeeze=False)
    for ax, head in zip(axes[0], heads, strict=True):
        for evaluation in evaluations:
            binary = evaluation.calibration.get(head)
            if binary is None or not len(binary.y):
                continue
            mean_p, freq, _ = reliability(binary)
            ax.plot(mean_p, freq, marker="o", label=evaluation.name)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
        what = "top-label confidence" if head == "intent_type" else "predicted probability"
        ax.set(xlabel=what, ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1),
               title=head.replace("_", " "))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"reliability ({CALIBRATION_BINS} equal-width bins)")
    return _save(fig, path)


def plot_alert_threshold(evaluations: Sequence[Evaluation], live: dict[str, float],
                         path: Path) -> str | None:
    heads = [h for h in ALERT_TITLES if any(h in e.sweep for e in evaluations)]
    if not heads:
        return None
    fig, axes = plt.subplots(1, len(heads), figsize=(5.2 * len(heads), 4.4), squeeze=False)
    for ax, head in zip(axes[0], heads, strict=True):
        for n, evaluation in enumerate(evaluations):
            rows = evaluation.sweep.get(head)
            if not rows:
                continue
            color = f"C{n}"
            t = [r["threshold"] for r in rows]
            ax.plot(t, [_nan(r["precision"]) for r in rows], color=color, marker=".",
                    label=f"precision, {evaluation.name}")
            ax.plot(t, [_nan(r["recall"]) for r in rows], color=color, linestyle="--",
                    label=f"recall, {evaluation.name}")
        if head in live:
            ax.axvline(live[head], color="grey", linewidth=1, label="live threshold")
        ax.set(xlabel="threshold", ylim=(0, 1.02), title=ALERT_TITLES[head])
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def plot_lead_time(evaluations: Sequence[Evaluation], path: Path) -> str | None:
    heads = [h for h in ("intent", "churn") if any(e.lead_times_h.get(h) for e in evaluations)]
    if not heads:
        return None
    fig, axes = plt.subplots(1, len(heads), figsize=(5.2 * len(heads), 4), squeeze=False)
    for ax, head in zip(axes[0], heads, strict=True):
        values = [e.lead_times_h.get(head, []) for e in evaluations]
        top = max((max(v) for v in values if v), default=1.0)
        bins = np.linspace(0, max(top, 1e-6), 25)
        for evaluation, leads in zip(evaluations, values, strict=True):
            if leads:
                ax.hist(leads, bins=bins, histtype="step", linewidth=1.5,
                        label=f"{evaluation.name} (n={len(leads)})")
        outcome = "purchase" if head == "intent" else "last event before churn"
        ax.set(xlabel=f"hours from the first alert to the {outcome}", ylabel="outcomes",
               title=ALERT_TITLES[head])
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_volume(evaluations: Sequence[Evaluation], path: Path) -> str | None:
    heads = [h for h in ("intent", "churn") if any(e.volume.get(h) for e in evaluations)]
    if not heads:
        return None
    fig, axes = plt.subplots(len(heads), 1, figsize=(10, 2.8 * len(heads)), squeeze=False)
    for ax, head in zip(axes[:, 0], heads, strict=True):
        for evaluation in evaluations:
            per_hour = evaluation.volume.get(head, {})
            if per_hour:
                hours = [datetime.fromtimestamp(h / 1000, tz=UTC) for h in per_hour]
                ax.plot(hours, list(per_hour.values()), marker=".", linewidth=1,
                        label=evaluation.name)
        ax.set(ylabel="alerts per hour", title=ALERT_TITLES[head])
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("event time (UTC); hours without alerts are not drawn")
    fig.autofmt_xdate()
    return _save(fig, path)


def plot_intent_classes(evaluation: Evaluation, path: Path) -> str | None:
    return plot_roc_pr("intent_type", list(evaluation.class_curves.items()), path)


# --- the directory ------------------------------------------------------------------------------


def write_report(out: Path, metrics: dict[str, Any], evaluations: Sequence[Evaluation],
                 live_thresholds: dict[str, float], title: str) -> dict[str, str]:
    """Write metrics.json, the plots and report.html into `out`; return plot name -> file."""
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str | None] = {}
    for head in ("revenue", "strength", "churn"):
        if any(head in e.curves for e in evaluations):
            plots[f"roc_pr_{head}"] = plot_roc_pr(
                head, [(e.name, e.curves[head]) for e in evaluations if head in e.curves],
                out / f"roc_pr_{head}.png")
    if evaluations[0].class_curves:
        plots["roc_pr_intent_type"] = plot_intent_classes(evaluations[0],
                                                          out / "roc_pr_intent_type.png")
    plots["calibration"] = plot_calibration(evaluations, out / "calibration.png")
    plots["alert_threshold"] = plot_alert_threshold(evaluations, live_thresholds,
                                                    out / "alert_threshold.png")
    plots["alert_lead_time"] = plot_lead_time(evaluations, out / "alert_lead_time.png")
    plots["alert_volume"] = plot_volume(evaluations, out / "alert_volume.png")
    written = {k: v for k, v in plots.items() if v}
    metrics = {**metrics, "plots": sorted(written.values())}
    write_metrics(out / "metrics.json", metrics)
    (out / "report.html").write_text(render_html(title, metrics, written), encoding="utf-8")
    return written


# --- html ---------------------------------------------------------------------------------------

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f6f6f6}
.note{color:#555;font-size:.92em}"""


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _head_rows(runs: dict[str, Any]) -> list[list[Any]]:
    names = list(runs)
    heads = sorted({h for r in runs.values() for h in r.get("heads", {})},
                   key=lambda h: list(HEAD_TITLES).index(h) if h in HEAD_TITLES else 99)
    rows = []
    for head in heads:
        for metric in ("n", "roc_auc", "pr_auc", "macro_f1", "ece"):
            rows.append([f"{head} {metric}"] + [runs[n].get("heads", {}).get(head, {}).get(metric)
                                                for n in names])
    return rows


def _alert_rows(runs: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, run in runs.items():
        for head, a in run.get("alerts", {}).items():
            lead = a.get("lead_time_h", {})
            rows.append([f"{name}: {head}", a.get("threshold"), a.get("alerts"),
                         a.get("precision"), a.get("recall"), lead.get("median"),
                         a.get("per_hour", {}).get("max")])
    return rows


def _uci_section(uci: dict[str, Any], runs: dict[str, Any]) -> list[str]:
    models = {name: run["heads"]["revenue"] for name, run in runs.items()}
    models[uci["peer"]] = uci["peer_metrics"]
    about = [[k, v] for k, v in sorted(uci.items()) if k not in ("data", "peer", "peer_metrics")]
    return [
        "<h2>UCI Online Shoppers: our model vs the tabular peer</h2>",
        _table(["model (test part)", "ROC-AUC", "PR-AUC", "ECE", "n"],
               [[name, m.get("roc_auc"), m.get("pr_auc"), m.get("ece"), m.get("n")]
                for name, m in models.items()]),
        *(_level_table(name, run["levels"]) for name, run in runs.items() if "levels" in run),
        _table(["", ""], about),
        f"<p class='note'>{html.escape(uci['data'])}</p>",
    ]


def _level_table(name: str, levels: dict[str, Any]) -> str:
    """ROC-AUC at each level of information: the tabular peer beside ours (backtest.uci_eval)."""
    rows = [[level, row["peer"]["roc_auc"], row["ours"]["roc_auc"],
             row["ours_features_only"]["roc_auc"], row["ours_minus_peer_roc_auc"]]
            for level, row in levels.items() if level != "text_model_alone"]
    return (f"<h3>{html.escape(name)}: each level of information (ROC-AUC, test part)</h3>"
            + _table(["level", "gradient boosting, CSV columns", "ours: features + text",
                      "ours: features only", "ours − peer"], rows))


def render_html(title: str, metrics: dict[str, Any], plots: dict[str, str]) -> str:
    runs: dict[str, Any] = metrics["runs"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    source = metrics.get("source", {})
    parts.append(_table(["input", ""], [[k, v] for k, v in sorted(source.items())]))
    if "uci" in metrics:
        parts.extend(_uci_section(metrics["uci"], runs))
    parts.append("<h2>Heads</h2>")
    parts.append(_table(["metric", *runs], _head_rows(runs)))
    alert_rows = _alert_rows(runs)
    if alert_rows:
        parts.append("<h2>Alerts (live policy)</h2>")
        parts.append(_table(["run: head", "threshold", "alerts", "precision", "recall",
                             "median lead h", "max per hour"], alert_rows))
    for name, run in runs.items():
        counts = run.get("counts", {})
        if counts:
            parts.append(f"<h3>counts: {html.escape(name)}</h3>")
            parts.append(_table(["", "n"], sorted(counts.items())))
    parts.append("<h2>Plots</h2>")
    for name, file in plots.items():
        parts.append(f"<h3>{html.escape(name.replace('_', ' '))}</h3>"
                     f"<img src='{html.escape(file)}' alt='{html.escape(name)}'>")
    notes = metrics.get("notes", [])
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
                     + "</ul>")
    parts.append("<h2>Settings</h2><pre>" + html.escape(json.dumps(
        canonical(metrics.get("settings", {})), indent=2, sort_keys=True)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
