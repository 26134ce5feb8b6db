"""Fit the customer value model (BG/NBD + Gamma-Gamma) to a history by maximum likelihood.

Our own small scipy implementation, not a library: `lifetimes` (the reference implementation)
is unmaintained since 2020, `btyd` is its beta fork, and pymc-marketing pulls in PyMC for what
is two closed-form likelihoods here. Both likelihoods are FHL's (see
`streams/core/customer_value.py`, which serves the fitted parameters without scipy); fitting
is L-BFGS-B on the log-parameters (positivity for free) of the mean negative log-likelihood.

    x, t_x, T per customer  --fit_bgnbd-->        BgNbdParams (r, alpha, a, b)
    x, m of repeat buyers   --fit_gamma_gamma-->  GammaGammaParams (p, q, v)
    both                    --fit_customer_value--> CustomerValueModel (saved with a version)

Simulation from the same generative models, for tests and checks: `customer_value_sim.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import betaln, gammaln

from streams.core.customer_value import (
    BgNbdParams,
    CustomerValueModel,
    GammaGammaParams,
    rfm_of,
)

__all__ = [
    "Fit",
    "bgnbd_log_likelihood",
    "fit_bgnbd",
    "fit_customer_value",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "rfm_arrays",
]

# log-parameters are kept within e^-12 .. e^12: beyond, the likelihood is flat or overflows
_LOG_BOUND = 12.0


P = TypeVar("P", BgNbdParams, GammaGammaParams)


@dataclass(frozen=True, slots=True)
class Fit(Generic[P]):
    params: P
    log_likelihood: float  # summed over customers (weighted)
    customers: int
    converged: bool
    message: str
    # Standard errors of the log-parameters (same order as the params) from the observed
    # information: log(param) +- 2 se is a ~95% interval. nan where the curvature is not
    # positive (a parameter at its bound, a flat direction).
    log_se: tuple[float, ...]


# --- BG/NBD -------------------------------------------------------------------------------------


def bgnbd_log_likelihood(params: BgNbdParams, x: ArrayLike, t_x: ArrayLike,
                         T: ArrayLike) -> NDArray[np.float64]:
    """Each customer's log-likelihood of (x, t_x, T) (FHL 2005, eq. 6)."""
    return _bgnbd_ll(np.array([params.r, params.alpha, params.a, params.b]),
                     *_as_float(x, t_x, T))


def _bgnbd_ll(theta: NDArray[np.float64], x: NDArray[np.float64], t_x: NDArray[np.float64],
              T: NDArray[np.float64]) -> NDArray[np.float64]:
    r, alpha, a, b = theta
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    survived = betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + T)
    # Dropped out right after the last purchase (only possible with x > 0).
    dropped = np.where(
        x > 0,
        betaln(a + 1, b + np.maximum(x, 1) - 1) - betaln(a, b) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return common + np.logaddexp(survived, dropped)


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike, *,
              weights: ArrayLike | None = None,
              start: BgNbdParams | None = None) -> Fit[BgNbdParams]:
    """Maximum-likelihood BG/NBD parameters; `weights` counts identical customers."""
    xs, txs, Ts = _as_float(x, t_x, T)
    _check_bgnbd_data(xs, txs, Ts)
    w = _weights(weights, len(xs))
    theta0 = np.log([1.0, max(float(np.mean(Ts)), 1e-3) / 10, 1.0, 1.0] if start is None
                    else [start.r, start.alpha, start.a, start.b])

    def loss(log_theta: NDArray[np.float64]) -> float:
        return -float(np.dot(w, _bgnbd_ll(np.exp(log_theta), xs, txs, Ts))) / w.sum()

    result = _minimize(loss, theta0)
    return Fit(BgNbdParams(*np.exp(result.x).tolist()), -result.fun * w.sum(), len(xs),
               bool(result.success), str(result.message), _log_se(loss, result.x, w.sum()))


def _check_bgnbd_data(x: NDArray[np.float64], t_x: NDArray[np.float64],
                      T: NDArray[np.float64]) -> None:
    if not (len(x) == len(t_x) == len(T)) or len(x) == 0:
        raise ValueError("x, t_x and T need one value per customer, and some customers")
    if np.any(x < 0) or np.any(x != np.round(x)):
        raise ValueError("x counts repeat purchases: whole numbers >= 0")
    if np.any(t_x < 0) or np.any(t_x > T):
        raise ValueError("need 0 <= t_x <= T for every customer")


# --- Gamma-Gamma --------------------------------------------------------------------------------


def gamma_gamma_log_likelihood(params: GammaGammaParams, x: ArrayLike,
                               mean_value: ArrayLike) -> NDArray[np.float64]:
    """Each repeat customer's log-density of their mean order value m over x orders."""
    xs, ms = _as_float(x, mean_value)
    return _gamma_gamma_ll(np.array([params.p, params.q, params.v]), xs, ms)


def _gamma_gamma_ll(theta: NDArray[np.float64], x: NDArray[np.float64],
                    m: NDArray[np.float64]) -> NDArray[np.float64]:
    # m | nu ~ Gamma(p x, rate x nu) (the mean of x Gamma(p, nu) values), nu ~ Gamma(q, v):
    p, q, v = theta
    px = p * x
    return (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v)
            + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(v + x * m))


def fit_gamma_gamma(x: ArrayLike, mean_value: ArrayLike, *,
                    weights: ArrayLike | None = None) -> Fit[GammaGammaParams]:
    """Maximum-likelihood Gamma-Gamma parameters from repeat customers (x >= 1, m > 0)."""
    xs, ms = _as_float(x, mean_value)
    if len(xs) == 0 or np.any(xs < 1) or np.any(ms <= 0):
        raise ValueError("the spend model is fitted on repeat customers: x >= 1 and m > 0")
    w = _weights(weights, len(xs))
    # Start from the moment estimates of a population with p = 1: mean m = v / (q - 1).
    theta0 = np.log([1.0, 3.0, 2.0 * float(np.average(ms, weights=w))])

    def loss(log_theta: NDArray[np.float64]) -> float:
        return -float(np.dot(w, _gamma_gamma_ll(np.exp(log_theta), xs, ms))) / w.sum()

    result = _minimize(loss, theta0)
    p, q, v = np.exp(result.x).tolist()
    if q <= 1:
        raise ArithmeticError(f"the spend fit gave q={q:.3g} <= 1: no finite mean order value")
    return Fit(GammaGammaParams(p, q, v), -result.fun * w.sum(), len(xs),
               bool(result.success), str(result.message), _log_se(loss, result.x, w.sum()))


# --- both, from orders --------------------------------------------------------------------------


def rfm_arrays(orders: Sequence[tuple[Sequence[int], Sequence[float]]],
               as_of_ms: int) -> tuple[NDArray[np.float64], ...]:
    """x, t_x, T, m (days; see `streams.core.customer_value.rfm_of`) per customer with an order
    by `as_of_ms`, from each customer's (order times ms, order values)."""
    rows = [rfm for times, values in orders
            if (rfm := rfm_of(times, values, as_of_ms)) is not None]
    table = np.array([(r.frequency, r.recency_days, r.age_days, r.mean_order_value)
                      for r in rows], dtype=np.float64).reshape(-1, 4)
    return tuple(table.T)


def fit_customer_value(x: ArrayLike, t_x: ArrayLike, T: ArrayLike, mean_value: ArrayLike,
                       version: str) -> tuple[CustomerValueModel, Fit[BgNbdParams],
                                               Fit[GammaGammaParams]]:
    """Both models on one history (days): BG/NBD on every customer, Gamma-Gamma on those with
    a repeat purchase of positive value."""
    xs, txs, Ts, ms = _as_float(x, t_x, T, mean_value)
    purchases = fit_bgnbd(xs, txs, Ts)
    repeat = (xs >= 1) & (ms > 0)
    spend = fit_gamma_gamma(xs[repeat], ms[repeat])
    return CustomerValueModel(purchases.params, spend.params, version), purchases, spend


# --- shared -------------------------------------------------------------------------------------


def _minimize(loss, theta0: NDArray[np.float64]):
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(theta0)
    return minimize(loss, theta0, method="L-BFGS-B", bounds=bounds,
                    options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-8})


def _log_se(mean_loss: Callable[[NDArray[np.float64]], float], at: NDArray[np.float64],
            n: float, h: float = 1e-4) -> tuple[float, ...]:
    """Standard errors from the inverse of the total loss's Hessian (central differences)."""
    k = len(at)
    steps = np.eye(k) * h
    hessian = np.empty((k, k))
    for i in range(k):
        for j in range(i, k):
            hessian[i, j] = hessian[j, i] = n * (
                mean_loss(at + steps[i] + steps[j]) - mean_loss(at + steps[i] - steps[j])
                - mean_loss(at - steps[i] + steps[j]) + mean_loss(at - steps[i] - steps[j])
            ) / (4 * h * h)
    try:
        variances = np.diag(np.linalg.inv(hessian))
    except np.linalg.LinAlgError:
        return (float("nan"),) * k
    return tuple(float(np.sqrt(v)) if v > 0 else float("nan") for v in variances)


def _as_float(*arrays: ArrayLike) -> tuple[NDArray[np.float64], ...]:
    return tuple(np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays)


def _weights(weights: ArrayLike | None, n: int) -> NDArray[np.float64]:
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != n or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("one non-negative weight per customer, not all zero")
    return w
