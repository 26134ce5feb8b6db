"""Churn at the end of a calibration period on an order log, against the peers users trust.

The check the issue's goal names: train only on the calibration period (`intentstream train
--events calibration.jsonl`), then score every customer as of the calibration end with the
served version (network + stacker step, training/served.py) from their last session
with FEATURES as of that time (what a silence score at that moment carries); churn = no
purchase in the following `--label-days`. Peers in the same run, on the same customers: BG/NBD
P(alive) fitted on the whole calibration period (as lifetimes would be), the same fit's expected
orders in the label period, and days since the last order. Each ROC-AUC with a 95% interval
over resampled customers, and each margin too.

    python -m training.order_log --events orders.jsonl --calibration-end 2024-10-01 \\
        --repo runs/x/triton_models [--version N] [--label-days 274]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streams.core.customer_value import expected_purchases, p_alive
from streams.core.labelling import LabelPolicy
from streams.core.timeunits import DAY_MS, iso
from streams.settings import get_settings
from training.arguments import _event_time
from training.data import history as own_history
from training.data.event_files import read_events
from training.data.simulator import UserHistory
from training.data.windows import Example
from training.evaluate.metrics import interval, ranked_roc_auc, user_resamples
from training.fit.customer_value import fit_customer_value, rfm_arrays
from training.fit.served_value import orders_of
from training.served import ServedVersion, live_version

BOOTSTRAP_ROUNDS = 300


@dataclass(frozen=True)
class Customers:
    windows: list[Example]  # one per customer with an order before the calibration end
    orders: list[tuple[list[int], list[float]]]  # their calibration orders, same order


def customers_at(histories: dict[str, list[dict[str, Any]]], end_ms: int, observed: int,
                 label_days: float) -> Customers:
    """Each customer's window as of `end_ms` (labels: churn = nothing in `label_days`)."""
    policy = get_settings().session_policy()
    labels = LabelPolicy(horizon_ms=DAY_MS, churn_after_ms=int(label_days * DAY_MS))
    windows, orders = [], []
    for user, events in histories.items():
        whole = UserHistory(user, "history", tuple(events), (), observed)
        window = own_history.window_at(whole, end_ms, policy, labels)
        bought = orders_of([events], end_ms)
        if window is not None and bought:
            windows.append(window)
            orders.append(bought[0])
    return Customers(windows, orders)


def scores(customers: Customers, served: ServedVersion, end_ms: int,
           label_days: float) -> dict[str, np.ndarray]:
    """Churn scores (higher: more likely to churn) of the served model and the peers."""
    features = np.asarray([w.features for w in customers.windows], dtype=np.float64)
    result = served.score([w.text for w in customers.windows], features)
    x, t_x, T, m = rfm_arrays(customers.orders, end_ms)
    model, _, _ = fit_customer_value(x, t_x, T, m, version="calibration period")
    alive = np.array([p_alive(model.bgnbd, int(a), b, c) for a, b, c in zip(x, t_x, T,
                                                                            strict=True)])
    expected = np.array([expected_purchases(model.bgnbd, label_days, int(a), b, c)
                         for a, b, c in zip(x, t_x, T, strict=True)])
    recency = np.array([T_ - tx for tx, T_ in zip(t_x, T, strict=True)])
    del m
    return {"served": result.probs["churn"][:, 1], "bgnbd_p_alive": 1 - alive,
            "bgnbd_expected_orders": -expected, "days_since_last_order": recency}


def compare(y: np.ndarray, by_model: dict[str, np.ndarray], users: Sequence[str],
            seed: int) -> dict[str, Any]:
    """ROC-AUC of each with its interval, and the served model's margin over each peer."""
    resamples = user_resamples(users, BOOTSTRAP_ROUNDS, seed)

    def auc(score: np.ndarray, rows: np.ndarray | slice = slice(None)) -> float | None:
        return ranked_roc_auc(y[rows], np.column_stack([-score[rows], score[rows]]))

    out: dict[str, Any] = {name: {"roc_auc": auc(s), "roc_auc_ci95": interval(
        [auc(s, r) for r in resamples])} for name, s in by_model.items()}
    for peer in (n for n in by_model if n != "served"):
        deltas = []
        for r in resamples:
            a, b = auc(by_model["served"], r), auc(by_model[peer], r)
            deltas.append(None if a is None or b is None else a - b)
        out[f"served_minus_{peer}"] = {
            "delta": (out["served"]["roc_auc"] or 0) - (out[peer]["roc_auc"] or 0),
            "ci95": interval(deltas)}
    return out


def run(events_path: Path, end_ms: int, repo: Path, version: int | None,
        label_days: float, seed: int = 0) -> dict[str, Any]:
    settings = get_settings()
    messages, _ = read_events(events_path)
    validated = own_history.validate(messages, settings)
    own_history.require_valid(validated, str(events_path))
    histories = own_history.group_by_user(validated.events)
    observed = max(e.ts for e in validated.events)
    if observed < end_ms + label_days * DAY_MS:
        raise ValueError(f"the log ends {iso(observed)}: labels need {label_days:g} days after "
                         f"{iso(end_ms)}")
    version = version or live_version(repo)
    if version is None:
        raise ValueError(f"no intent_bert version in {repo}")
    customers = customers_at(histories, end_ms, observed, label_days)
    y = np.asarray([int(w.churn) for w in customers.windows])
    by_model = scores(customers, ServedVersion.from_repo(repo, version), end_ms, label_days)
    return {"calibration_end": iso(end_ms), "label_days": label_days, "version": version,
            "customers": len(y), "churned": int(y.sum()),
            **compare(y, by_model, [w.user_id for w in customers.windows], seed)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.order_log",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=Path, required=True, help="the whole order log")
    parser.add_argument("--calibration-end", required=True, help="ISO-8601 or epoch ms")
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--version", type=int, default=None, help="default: the newest")
    parser.add_argument("--label-days", type=float, default=274.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.events, _event_time(args.calibration_end), args.repo, args.version,
                 args.label_days, args.seed)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
