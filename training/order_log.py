"""Churn at the end of a calibration period on an order log, against the peers users trust.

The check the issue's goal names: train only on the calibration period (`intentstream train
--events calibration.jsonl`), then score every customer as of the calibration end with the
served version (network + stacker step, training/served.py) from their last session
with FEATURES as of that time (what a silence score at that moment carries); churn = no
purchase in the following label days. Peers in the same run, on the same customers: BG/NBD
P(alive) fitted on the whole calibration period (as lifetimes would be), the same fit's expected
orders in the label period, and days since the last order. Each ROC-AUC with a 95% interval
over resampled customers, and each margin too. Beside them, for reference, the same fit's
P(no order in the label period): the best ranking there is where orders follow BG/NBD (the
simulated logs do), so no model can beat it by more than chance there.

One run judges several versions (`--run DIR`, repeated: a training run's --out, whose card
names its version and churn horizon; each judged at its own horizon) and prints a table of
them; the result is recorded in each run's model card (JSON and Markdown):

    python -m training.order_log --events orders.jsonl --calibration-end 2024-10-01 \\
        --run runs/orders90 --run runs/orders180
    python -m training.order_log --events orders.jsonl --calibration-end 2024-10-01 \\
        --repo runs/x/triton_models [--version N] [--label-days 274]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.repository import INTENT_BERT
from streams.core.customer_value import BgNbdParams, expected_purchases, p_alive
from streams.core.labelling import LabelPolicy
from streams.core.timeunits import DAY_MS, iso
from streams.settings import get_settings
from training import card as model_card
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
PEERS = ("days_since_last_order", "bgnbd_expected_orders")  # the served head must beat both
# Shown beside them: BG/NBD's P(alive) (below chance where most never repeat) and P(no order).
REFERENCES = ("bgnbd_p_alive", "bgnbd_no_order")
NAMES = {"served": "served churn head", "days_since_last_order": "days since last order",
         "bgnbd_expected_orders": "BG/NBD expected orders", "bgnbd_p_alive":
         "BG/NBD 1 - P(alive)", "bgnbd_no_order": "BG/NBD P(no order)"}
CARD, CARD_MD = "model_card.json", "model_card.md"


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
    """Churn scores (higher: more likely to churn) of the served model, the peers and the
    reference (REFERENCES)."""
    features = np.asarray([w.features for w in customers.windows], dtype=np.float64)
    result = served.score([w.text for w in customers.windows], features)
    x, t_x, T, m = rfm_arrays(customers.orders, end_ms)
    model, _, _ = fit_customer_value(x, t_x, T, m, version="calibration period")
    alive = np.array([p_alive(model.bgnbd, int(a), b, c) for a, b, c in zip(x, t_x, T,
                                                                            strict=True)])
    expected = np.array([expected_purchases(model.bgnbd, label_days, int(a), b, c)
                         for a, b, c in zip(x, t_x, T, strict=True)])
    return {"served": result.probs["churn"][:, 1], "bgnbd_p_alive": 1 - alive,
            "bgnbd_expected_orders": -expected, "days_since_last_order": T - t_x,
            "bgnbd_no_order": no_order(model.bgnbd, x, T, alive, label_days)}


def no_order(params: BgNbdParams, x: np.ndarray, T: np.ndarray, alive: np.ndarray,
             days: float) -> np.ndarray:
    """BG/NBD P(no purchase in the next `days`): dropped out, or alive with none at the
    posterior Gamma(r + x, alpha + T) rate: (1 - P(alive)) + P(alive) ((a+T)/(a+T+t))^(r+x)."""
    quiet = ((params.alpha + T) / (params.alpha + T + days)) ** (params.r + x)
    return (1 - alive) + alive * quiet


def compare(y: np.ndarray, by_model: dict[str, np.ndarray], users: Sequence[str],
            seed: int) -> dict[str, Any]:
    """ROC-AUC of each with its interval, and the served model's margin over each other."""
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
    out["beats_peers"] = all(out[f"served_minus_{peer}"]["delta"] > 0 for peer in PEERS)
    return out


def load_log(events_path: Path) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """Every customer's valid events, and the time the log is complete to."""
    messages, _ = read_events(events_path)
    validated = own_history.validate(messages, get_settings())
    own_history.require_valid(validated, str(events_path))
    return (own_history.group_by_user(validated.events),
            max(e.ts for e in validated.events))


def evaluate(histories: dict[str, list[dict[str, Any]]], observed: int, end_ms: int,
             repo: Path, version: int, label_days: float, seed: int = 0) -> dict[str, Any]:
    """One version judged at one horizon, beside the peers, on every customer."""
    if observed < end_ms + label_days * DAY_MS:
        raise ValueError(f"the log ends {iso(observed)}: labels need {label_days:g} days after "
                         f"{iso(end_ms)}")
    customers = customers_at(histories, end_ms, observed, label_days)
    y = np.asarray([int(w.churn) for w in customers.windows])
    by_model = scores(customers, ServedVersion.from_repo(repo, version), end_ms, label_days)
    return {"calibration_end": iso(end_ms), "label_days": label_days, "version": version,
            "customers": len(y), "churned": int(y.sum()),
            **compare(y, by_model, [w.user_id for w in customers.windows], seed)}


def run(events_path: Path, end_ms: int, repo: Path, version: int | None,
        label_days: float, seed: int = 0) -> dict[str, Any]:
    """One version (default: the newest) at `label_days`."""
    histories, observed = load_log(events_path)
    version = version or live_version(repo)
    if version is None:
        raise ValueError(f"no intent_bert version in {repo}")
    return evaluate(histories, observed, end_ms, repo, version, label_days, seed)


def run_of(out: Path, repo: Path | None) -> tuple[Path, int, float]:
    """A training run's repository (its card's, else `repo`), exported version and churn
    horizon, from its model card."""
    card = json.loads((out / CARD).read_text(encoding="utf-8"))
    exported = card.get("exported") or {}
    if not exported.get(INTENT_BERT):
        raise ValueError(f"{out}: the run exported no version (gate rejected, or --no-export)")
    where = Path(exported["repo"]) if exported.get("repo") else repo
    if where is None:
        raise ValueError(f"{out}: its card names no repository: give --repo")
    return where, int(exported[INTENT_BERT]), float(card["data"]["label_policy"]["churn_days"])


def judge_runs(events_path: Path, end_ms: int, runs: Sequence[Path], repo: Path | None = None,
               seed: int = 0) -> list[dict[str, Any]]:
    """Each run's version at its own horizon, in one pass over the log; each result written
    into its run's card (`order_log`) and the card's Markdown rendered again."""
    histories, observed = load_log(events_path)
    results = []
    for out in runs:
        where, version, days = run_of(out, repo)
        result = evaluate(histories, observed, end_ms, where, version, days, seed)
        record(out, {**result, "events": str(events_path)})
        results.append(result)
    return results


def record(out: Path, result: dict[str, Any]) -> None:
    card = json.loads((out / CARD).read_text(encoding="utf-8"))
    card["order_log"] = result
    (out / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out / CARD_MD).write_text(model_card.render_markdown(card), encoding="utf-8")


def table(results: Sequence[dict[str, Any]]) -> str:
    """One line per version and model: ROC-AUC [95%] and the served margin [95%]."""
    lines = [f"{'horizon':>7} {'model':<24} {'ROC-AUC':>7} {'95% interval':<16} "
             f"{'served margin [95%]':<24}"]
    for result in results:
        for name in ("served", *PEERS, *REFERENCES):
            row, versus = result[name], result.get(f"served_minus_{name}")
            margin = ("" if versus is None else f"{versus['delta']:+.3f} "
                      f"[{versus['ci95'][0]:+.3f}, {versus['ci95'][1]:+.3f}]")
            lines.append(f"{result['label_days']:>6g}d {NAMES[name]:<24} "
                         f"{row['roc_auc']:>7.3f} [{row['roc_auc_ci95'][0]:.3f}, "
                         f"{row['roc_auc_ci95'][1]:.3f}]   {margin}")
        lines.append(f"{result['label_days']:>6g}d version {result['version']}: "
                     f"{result['customers']} customers, {result['churned']} churned; beats "
                     f"both peers: {result['beats_peers']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.order_log",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=Path, required=True, help="the whole order log")
    parser.add_argument("--calibration-end", required=True, help="ISO-8601 or epoch ms")
    parser.add_argument("--repo", type=Path, default=None,
                        help="the model repository (with --run: where a card names none)")
    parser.add_argument("--run", type=Path, action="append", default=[],
                        help="a training run's --out (repeat): its version at its horizon, "
                             "recorded in its card")
    parser.add_argument("--version", type=int, default=None, help="default: the newest")
    parser.add_argument("--label-days", type=float, default=274.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    end_ms = _event_time(args.calibration_end)
    if args.run:
        results = judge_runs(args.events, end_ms, args.run, args.repo, args.seed)
    elif args.repo is None:
        parser.error("give --run, or --repo (with --version)")
    else:
        results = [run(args.events, end_ms, args.repo, args.version, args.label_days,
                       args.seed)]
    print(json.dumps(results if args.run else results[0], indent=1))
    print(table(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
