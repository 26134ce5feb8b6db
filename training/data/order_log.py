"""An order log drawn from known BG/NBD and Gamma-Gamma parameters, as events (`purchase` with
item and price): the own-history checks of `intentstream train --events` on an orders-only
shop, where the truth is known. Pure (numpy only).

Customers arrive (first purchase) uniformly over the first `cohort_days`, as CDNOW's 1997
cohort did over 12 weeks; then each buys at Poisson rate lambda ~ Gamma(r, alpha) per day and
drops out with probability p ~ Beta(a, b) after each repeat purchase (FHL 2005); each order's
value is Gamma(p, nu) with nu ~ Gamma(q, v) per customer. The defaults are the published CDNOW
estimates (BG/NBD r 0.243, alpha 4.414 weeks = 30.9 days, a 0.793, b 2.426; Gamma-Gamma p 6.25,
q 3.74, v 15.44).

    python -m training.data.order_log --customers 3000 --days 548 --out var/orders.jsonl
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streams.core.customer_value import BgNbdParams, GammaGammaParams
from streams.core.timeunits import DAY_MS

CDNOW_BGNBD = BgNbdParams(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)
CDNOW_SPEND = GammaGammaParams(p=6.25, q=3.74, v=15.44)
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
CATEGORIES = ("music", "books", "film")


@dataclass(frozen=True, slots=True)
class OrderLogConfig:
    customers: int = 3000
    days: float = 548.0  # 18 months: 9 of calibration, 9 of labels
    cohort_days: float = 84.0
    start_ms: int = START_MS
    seed: int = 0
    bgnbd: BgNbdParams = CDNOW_BGNBD
    spend: GammaGammaParams = CDNOW_SPEND


def simulate_orders(config: OrderLogConfig) -> list[dict[str, Any]]:
    """Every purchase of every customer in [start, start + days), as events sorted by time."""
    rng = np.random.default_rng(config.seed)
    events: list[dict[str, Any]] = []
    end_day = config.days
    for n in range(config.customers):
        times = _purchase_days(rng, config.bgnbd, rng.uniform(0, config.cohort_days), end_day)
        nu = rng.gamma(config.spend.q, 1 / config.spend.v)
        for k, day in enumerate(times):
            price = round(float(rng.gamma(config.spend.p, 1 / nu)), 2)
            events.append(_purchase(n, k, config.start_ms + int(day * DAY_MS), price))
    return sorted(events, key=lambda e: (e["ts"], e["event_id"]))


def _purchase_days(rng: np.random.Generator, params: BgNbdParams, first: float,
                   end: float) -> list[float]:
    """One customer's purchase days: the first, then repeats until drop-out or the end."""
    rate = rng.gamma(params.r, 1 / params.alpha)
    dropout = rng.beta(params.a, params.b)
    days, now = [first], first
    while rate > 0:
        now += rng.exponential(1 / rate)
        if now >= end:
            break
        days.append(now)
        if rng.random() < dropout:
            break
    return days


def _purchase(customer: int, k: int, ts: int, price: float) -> dict[str, Any]:
    user = f"c{customer:05d}"
    return {"event_id": f"{user}-o{k}", "user_id": user, "ts": ts, "type": "purchase",
            "item": {"id": f"sku-{(customer * 7 + k) % 500}",
                     "title": f"{CATEGORIES[k % 3]} title {(customer + k) % 97}",
                     "category": CATEGORIES[k % 3], "price": price}}


def split_at(events: Sequence[dict[str, Any]], cut_ms: int) -> tuple[list[dict[str, Any]],
                                                                      list[dict[str, Any]]]:
    """The calibration events (before the cut) and the hold-out (at or after it)."""
    return ([e for e in events if e["ts"] < cut_ms], [e for e in events if e["ts"] >= cut_ms])


def write_jsonl(events: Sequence[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data.order_log",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--days", type=float, default=548.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--calibration-days", type=float, default=None,
                        help="also write <out>.calibration.jsonl: the events before this day")
    args = parser.parse_args(argv)
    config = OrderLogConfig(customers=args.customers, days=args.days, seed=args.seed)
    events = simulate_orders(config)
    write_jsonl(events, args.out)
    if args.calibration_days is not None:
        cut = config.start_ms + int(args.calibration_days * DAY_MS)
        write_jsonl(split_at(events, cut)[0], args.out.with_suffix(".calibration.jsonl"))
    print(f"{len(events)} purchases of {config.customers} customers -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
