"""Draw customers from the BG/NBD and Gamma-Gamma generative models (tests, checks, demos).

BG/NBD (FHL 2005): a customer's first purchase is at time 0; while active they buy at Poisson
rate lambda ~ Gamma(shape r, rate alpha), and after each repeat purchase drop out with
probability p ~ Beta(a, b). Observed over (0, T]: x repeat purchases, the last at t_x; what they
buy in (T, T + horizon] is the hold-out a prediction is judged on.

Gamma-Gamma (FHL 2005, "RFM and CLV"): a customer's order values are Gamma(shape p, rate nu),
nu ~ Gamma(shape q, rate v) per customer, independent of their purchase process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from streams.core.customer_value import BgNbdParams, GammaGammaParams

__all__ = ["BgNbdSample", "SpendSample", "simulate_bgnbd", "simulate_spend"]


@dataclass(frozen=True)
class BgNbdSample:
    x: NDArray[np.int64]  # repeat purchases in (0, T]
    t_x: NDArray[np.float64]  # time of the last of them (0 when x = 0)
    T: NDArray[np.float64]  # age at the end of the calibration period
    future: NDArray[np.int64]  # purchases in (T, T + horizon]
    alive: NDArray[np.bool_]  # still active at T
    rate: NDArray[np.float64]  # lambda
    dropout: NDArray[np.float64]  # p


def simulate_bgnbd(n: int, params: BgNbdParams, T: float | ArrayLike, seed: int,
                   horizon: float = 0.0) -> BgNbdSample:
    """`n` customers of age `T` (one age, or one per customer), and their next `horizon`."""
    rng = np.random.default_rng(seed)
    ages = np.broadcast_to(np.asarray(T, dtype=np.float64), (n,)).copy()
    rate = rng.gamma(params.r, 1 / params.alpha, n)
    dropout = rng.beta(params.a, params.b, n)
    end = ages + horizon
    now = np.zeros(n)
    x = np.zeros(n, dtype=np.int64)
    t_x = np.zeros(n)
    future = np.zeros(n, dtype=np.int64)
    died_at = np.full(n, np.inf)
    active = np.flatnonzero(rate > 0)
    while active.size:  # one purchase per active customer per pass
        now[active] += rng.exponential(1 / rate[active])
        buying = active[now[active] <= end[active]]
        in_calibration = now[buying] <= ages[buying]
        cal, hold = buying[in_calibration], buying[~in_calibration]
        x[cal] += 1
        t_x[cal] = now[cal]
        future[hold] += 1
        drop = rng.random(buying.size) < dropout[buying]
        died_at[buying[drop]] = now[buying[drop]]
        active = buying[~drop]
    return BgNbdSample(x, t_x, ages, future, died_at > ages, rate, dropout)


@dataclass(frozen=True)
class SpendSample:
    mean_value: NDArray[np.float64]  # the mean of each customer's x order values (nan if x = 0)
    true_mean: NDArray[np.float64]  # p / nu: the customer's expected order value


def simulate_spend(x: ArrayLike, params: GammaGammaParams, seed: int) -> SpendSample:
    """Each customer's mean order value over their `x` orders, and their true mean."""
    rng = np.random.default_rng(seed)
    orders = np.asarray(x, dtype=np.int64).reshape(-1)
    nu = rng.gamma(params.q, 1 / params.v, orders.size)
    bought = orders > 0
    means = np.full(orders.size, np.nan)
    # the mean of x Gamma(p, rate nu) values is Gamma(p x, rate x nu)
    means[bought] = rng.gamma(params.p * orders[bought], 1 / (orders[bought] * nu[bought]))
    return SpendSample(means, params.p / nu)
