"""Customer value at train time: fit BG/NBD + Gamma-Gamma on the training history's orders, and
the three value columns the served stacker computes from a FEATURES row.

    users' events (before the cut) --orders_of--> (times, values) per customer
        --fit_value_model--> CustomerValueModel (or None, with the reason)
    FEATURES rows --value_matrix--> [n, 3]: p_alive, expected orders, expected value in the
        churn horizon (-1: no order yet), the stacker's P_ALIVE / EXPECTED_ORDERS / EXPECTED_VALUE

The stacker runs in Triton's python stub and cannot import this project, so it gets the closed
forms as code (`self_contained_source`: streams/core/customer_value.py with its one project
import replaced by the constant) and its own copy of `rfm_from_row` (a test holds the two
equal). The columns are computed from FEATURES, not from the order list, so the churn head
trains on exactly what it is served.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streams.core import customer_value as value_code
from streams.core.customer_value import CustomerValueModel
from streams.core.features import FEATURE_NAMES
from streams.core.timeunits import DAY_MS
from training.fit.customer_value import fit_customer_value, rfm_arrays

NO_VALUE = -1.0
VALUE_COLUMNS = ("p_alive", "expected_orders", "expected_value")
# The FEATURES the stacker reads (by index, saved with the version).
ROW_COLUMNS = ("profile_orders", "profile_days_since_last_order",
               "profile_mean_days_between_orders", "profile_mean_order")
MIN_CUSTOMERS = 30  # fewer customers with an order: no fit (four parameters, then three)
MIN_REPEAT_BUYERS = 10  # Gamma-Gamma is fitted on customers with a repeat order
_PROJECT_IMPORT = "from streams.core.timeunits import DAY_MS\n"

Orders = tuple[list[int], list[float]]  # one customer's order times (ms) and values


@dataclass(frozen=True, slots=True)
class ValueFit:
    model: CustomerValueModel | None
    horizon_days: float
    card: dict[str, Any]  # what was fitted, on how much, or why not


def orders_of(histories: Iterable[Sequence[Mapping[str, Any]]], before_ms: int) -> list[Orders]:
    """Each user's purchases before `before_ms` (value: the item's price, 0 if none)."""
    out = []
    for events in histories:
        bought = [(e["ts"], float((e.get("item") or {}).get("price") or 0.0))
                  for e in events if e["type"] == "purchase" and e["ts"] < before_ms]
        if bought:
            out.append(([t for t, _ in bought], [v for _, v in bought]))
    return out


def fit_value_model(orders: Sequence[Orders], as_of_ms: int, horizon_days: float,
                    version: str) -> ValueFit:
    """The customer value model on these orders as of `as_of_ms`; None with the reason when
    the history has too few (repeat) customers or the fit fails."""
    x, t_x, T, m = rfm_arrays(orders, as_of_ms)
    repeat = int(np.sum((x >= 1) & (m > 0)))
    card: dict[str, Any] = {"customers": len(x), "repeat_customers": repeat,
                            "as_of_days_from_epoch": as_of_ms / DAY_MS,
                            "horizon_days": horizon_days}
    if len(x) < MIN_CUSTOMERS or repeat < MIN_REPEAT_BUYERS:
        return ValueFit(None, horizon_days, {**card, "skipped": (
            f"{len(x)} customers with an order, {repeat} with a repeat order: BG/NBD needs "
            f"{MIN_CUSTOMERS}, Gamma-Gamma {MIN_REPEAT_BUYERS}")})
    try:
        model, purchases, spend = fit_customer_value(x, t_x, T, m, version)
    except (ArithmeticError, ValueError) as error:
        return ValueFit(None, horizon_days, {**card, "skipped": f"fit failed: {error}"})
    return ValueFit(model, horizon_days, {
        **card, "bgnbd": _params(model.bgnbd), "gamma_gamma": _params(model.spend),
        "converged": purchases.converged and spend.converged})


def _params(params: Any) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in asdict(params).items()}


def row_columns() -> dict[str, int]:
    """The FEATURES indices the stacker reads the profile's orders from."""
    return {name: FEATURE_NAMES.index(name) for name in ROW_COLUMNS}


def rfm_from_row(row: Sequence[float],
                 columns: Mapping[str, int]) -> tuple[int, float, float, float] | None:
    """(x, t_x, T, m) in days from a FEATURES row, as the stacker reads it (its copy:
    triton_models/stacker/model.py `rfm_from_row`). x: repeat orders; t_x: mean days between
    orders x repeats; T: t_x + days since the last order; m: the mean order value (of all
    orders, the first included: FEATURES carry no other). None: no order yet."""
    orders = round(float(row[columns["profile_orders"]]))
    since_last = float(row[columns["profile_days_since_last_order"]])
    if orders < 1 or since_last < 0:
        return None
    x = orders - 1
    between = float(row[columns["profile_mean_days_between_orders"]])
    t_x = between * x if x > 0 and between > 0 else 0.0
    return x, t_x, t_x + since_last, max(0.0, float(row[columns["profile_mean_order"]]))


def value_matrix(fit: ValueFit, features: np.ndarray) -> np.ndarray | None:
    """[n, 3] value columns of FEATURES rows (NO_VALUE: no order yet); None without a model.
    Through float32, as the stacker receives FEATURES."""
    if fit.model is None:
        return None
    columns = row_columns()
    rows = np.asarray(features, dtype=np.float32)
    out = np.full((len(rows), 3), NO_VALUE, dtype=np.float32)
    for i, row in enumerate(rows):
        rfm = rfm_from_row(row, columns)
        if rfm is None:
            continue
        try:
            out[i] = fit.model.value_of(*rfm, fit.horizon_days)
        except (ValueError, ArithmeticError):
            continue
    return out


def self_contained_source() -> str:
    """streams/core/customer_value.py as a module that imports only the standard library."""
    source = inspect.getsource(value_code)
    if _PROJECT_IMPORT not in source:
        raise RuntimeError("streams/core/customer_value.py's imports changed: update "
                           "training/fit/served_value.self_contained_source")
    return source.replace(_PROJECT_IMPORT, f"DAY_MS = {DAY_MS}  # streams.core.timeunits\n")


def served_payload(fit: ValueFit) -> dict[str, Any] | None:
    """What inference.model.stacking.write_heads stores as the version's customer value."""
    if fit.model is None:
        return None
    return {"model": fit.model.to_json(), "code": self_contained_source(),
            "horizon_days": fit.horizon_days, "columns": row_columns()}


def peer_scores(features: np.ndarray, fit: ValueFit) -> dict[str, np.ndarray]:
    """Churn peers a user would try first, as scores that rank like P(churn): 1 - BG/NBD
    P(alive) (where fitted) and days since the last order (-1, never ordered: days since first
    seen, the same silence)."""
    since_last = features[:, FEATURE_NAMES.index("profile_days_since_last_order")]
    seen = features[:, FEATURE_NAMES.index("profile_days_since_first_seen")]
    days = np.where(since_last < 0, seen, since_last).astype(np.float64)
    out = {"days_since_last_order": days / (days + 30.0)}  # monotone into [0, 1)
    values = value_matrix(fit, features)
    if values is not None:
        alive = values[:, 0].astype(np.float64)
        out["bgnbd_p_alive"] = np.where(alive < 0, 0.5, 1.0 - alive)
    return out
