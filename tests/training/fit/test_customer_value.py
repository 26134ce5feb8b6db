"""Customer value: the pure BG/NBD and Gamma-Gamma formulas (streams/core/customer_value.py)
and their fit (training/fit/customer_value.py), checked against the published CDNOW figures,
closed forms, Monte-Carlo draws from the generative models, and parameter recovery."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from streams.core.customer_value import (
    RFM,
    BgNbdParams,
    CustomerValueModel,
    GammaGammaParams,
    expected_order_value,
    expected_purchases,
    hyp2f1,
    p_alive,
    rfm_of,
)
from streams.core.timeunits import DAY_MS, HOUR_MS
from training.fit.customer_value import (
    bgnbd_log_likelihood,
    fit_bgnbd,
    fit_customer_value,
    fit_gamma_gamma,
    rfm_arrays,
)
from training.fit.customer_value_sim import simulate_bgnbd, simulate_spend

# The CDNOW estimates (FHL 2005, weeks; units only need to agree) and the spend model's
# (FHL 2005 "RFM and CLV", 946 repeat customers).
CDNOW = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
CDNOW_SPEND = GammaGammaParams(p=6.25, q=3.74, v=15.44)


@pytest.fixture(scope="module")
def cdnow_like() -> tuple:
    """20,000 customers acquired over 12 weeks, seen to week 39, with 39 weeks of hold-out."""
    ages = np.random.default_rng(5).uniform(27, 39, 20_000)
    return simulate_bgnbd(20_000, CDNOW, ages, seed=5, horizon=39.0)


# --- published figures and closed forms ---------------------------------------------------------


def test_conditional_expectation_matches_the_papers_example():
    # FHL 2005 (and Hardie's spreadsheet): x=2, t_x=30.43, T=38.86, next 39 weeks -> 1.226
    assert expected_purchases(CDNOW, 39, 2, 30.43, 38.86) == pytest.approx(1.226, abs=5e-4)


@pytest.mark.parametrize(
    ("t", "published"),
    [(0.1429, 0.0078), (1.0, 0.0532), (3.0, 0.1506), (31.8571, 1.0405), (32.0, 1.0437),
     (78.0, 1.8576)],
)
def test_unconditional_expectation_matches_hardies_sheet(t, published):
    # The sheet uses the unrounded estimates; the three-decimal ones land within 0.2%.
    assert expected_purchases(CDNOW, t) == pytest.approx(published, rel=2e-3, abs=1e-4)


@pytest.mark.parametrize("z", [0.0, 0.3, 0.9, 0.95, 0.999, 1 - 1e-7])
def test_hyp2f1_against_closed_forms(z):
    log_form = 1.0 if z == 0 else -math.log1p(-z) / z  # 2F1(1, 1; 2; z), c - a - b = 0
    assert hyp2f1(1, 1, 2, z) == pytest.approx(log_form, rel=1e-7)
    assert hyp2f1(0.7, 1.3, 1.3, z) == pytest.approx((1 - z) ** -0.7, rel=1e-10)
    # (1 + z)^(-2a) 2F1 ... the quadratic case 2F1(a, a + 1/2; 3/2; z^2) has no easy form; use
    # arcsin: 2F1(1/2, 1/2; 3/2; z^2) = arcsin(z) / z
    arcsin_form = 1.0 if z == 0 else math.asin(z) / z
    assert hyp2f1(0.5, 0.5, 1.5, z * z) == pytest.approx(arcsin_form, rel=1e-10)


def test_hyp2f1_against_mpmath_near_one():
    mpmath = pytest.importorskip("mpmath")
    cases = [(1.976, -0.207, 3.219, 0.9936, 1e-9), (60.2, -0.2, 70.1, 0.97, 1e-9),
             (1.9, -0.207, 2.2, 1 - 1e-5, 1e-9), (3.8, 1.19, 5.99, 0.917, 1e-9),
             (0.5, 0.2, 0.3, 0.6, 1e-9),  # the plain series
             (2.5, 0.7, 1.2, 0.999, 1e-6)]  # c - a - b = -2: the nudged path
    for a, b, c, z, rel in cases:
        assert hyp2f1(a, b, c, z) == pytest.approx(float(mpmath.hyp2f1(a, b, c, z)), rel=rel)


def test_hyp2f1_refuses_what_it_cannot_sum():
    with pytest.raises(ValueError):
        hyp2f1(1, 1, 2, 1.0)
    with pytest.raises(ValueError):
        hyp2f1(1, 1, -2, 0.5)
    with pytest.raises(ArithmeticError):
        hyp2f1(2.5, 0.7, 1.2, 0.9, max_terms=100)  # needs ~400 terms


# --- P(alive) -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("t_x", "T"), [(0, 0), (0, 1), (0, 39), (0, 1000)])
def test_p_alive_is_one_without_repeat_purchases(t_x, T):
    assert p_alive(CDNOW, 0, t_x, T) == 1.0


@pytest.mark.parametrize("x", [1, 2, 5, 20, 200])
def test_p_alive_rises_with_recency_and_falls_with_age(x):
    by_recency = [p_alive(CDNOW, x, t_x, 52) for t_x in range(1, 53, 3)]
    by_age = [p_alive(CDNOW, x, 10, T) for T in range(10, 200, 10)]
    assert all(0 <= p <= 1 for p in by_recency + by_age)
    assert by_recency == sorted(by_recency) and by_recency[0] < by_recency[-1]
    assert by_age == sorted(by_age, reverse=True) and by_age[0] > by_age[-1]
    assert p_alive(CDNOW, x, 52, 52) > 0.5  # bought just now: more likely active than not


def test_p_alive_is_calibrated_on_simulated_customers(cdnow_like):
    sample = cdnow_like
    predicted = np.array([p_alive(CDNOW, int(x), tx, T)
                          for x, tx, T in zip(sample.x, sample.t_x, sample.T, strict=True)])
    for group in (sample.x == 1, sample.x == 2, (sample.x >= 3) & (sample.x < 7), sample.x >= 7):
        n = group.sum()
        se = math.sqrt(predicted[group].mean() * (1 - predicted[group].mean()) / n)
        assert abs(predicted[group].mean() - sample.alive[group].mean()) < 4 * se + 1e-3


# --- expected purchases -------------------------------------------------------------------------


def test_expected_purchases_match_the_hold_out_of_simulated_customers(cdnow_like):
    """Summed over customers, the conditional expectation equals the purchases they then make
    (the law of total expectation), per frequency group, within 4 standard errors."""
    sample = cdnow_like
    predicted = np.array([expected_purchases(CDNOW, 39.0, int(x), tx, T)
                          for x, tx, T in zip(sample.x, sample.t_x, sample.T, strict=True)])
    groups = {"0": sample.x == 0, "1": sample.x == 1, "2-3": (sample.x >= 2) & (sample.x <= 3),
              "4+": sample.x >= 4}
    for name, group in groups.items():
        actual = sample.future[group]
        se = actual.std() * math.sqrt(group.sum())
        assert abs(predicted[group].sum() - actual.sum()) < 4 * se, name


def test_unconditional_expectation_is_a_new_customers_mean():
    sample = simulate_bgnbd(20_000, CDNOW, 52.0, seed=9)
    se = sample.x.std() / math.sqrt(len(sample.x))
    assert abs(sample.x.mean() - expected_purchases(CDNOW, 52.0)) < 4 * se


@pytest.mark.parametrize(("t", "x", "t_x", "T"), [(0, 3, 5, 9), (-1, 0, 0, 0), (5, 0, 1, 2),
                                                   (5, 1, 3, 2), (5, -1, 0, 0)])
def test_expected_purchases_of_impossible_histories(t, x, t_x, T):
    if t == 0:
        assert expected_purchases(CDNOW, t, x, t_x, T) == 0.0
    else:
        with pytest.raises(ValueError):
            expected_purchases(CDNOW, t, x, t_x, T)


def test_a_equal_to_one_is_continuous():
    near = [expected_purchases(BgNbdParams(0.5, 10, a, 3), 50, 2, 20, 40)
            for a in (1 - 1e-4, 1.0, 1 + 1e-4)]
    assert near[1] == pytest.approx(near[0], rel=1e-3) and near[1] == pytest.approx(near[2],
                                                                                    rel=1e-3)


# --- fitting ------------------------------------------------------------------------------------


def test_bgnbd_parameter_recovery():
    """5,000 customers drawn with the CDNOW estimates. Stated tolerance: each parameter within
    3.5 of the fit's own standard errors (calibrated: over 12 seeds the z-scores have sd ~1),
    which for this size means r within 13%, alpha 22%, a and b within a factor ~1.8 (the
    drop-out Beta is weakly identified from 39 weeks); and the mean drop-out a/(a+b) within 12%."""
    ages = np.random.default_rng(1).uniform(27, 39, 5000)
    sample = simulate_bgnbd(5000, CDNOW, ages, seed=1)
    fit = fit_bgnbd(sample.x, sample.t_x, sample.T)
    assert fit.converged, fit.message
    truth = (CDNOW.r, CDNOW.alpha, CDNOW.a, CDNOW.b)
    got = (fit.params.r, fit.params.alpha, fit.params.a, fit.params.b)
    for name, true, est, se in zip(["r", "alpha", "a", "b"], truth, got, fit.log_se, strict=True):
        assert abs(math.log(est / true)) < 3.5 * se, (name, est, true, se)
    assert fit.log_se[0] < 0.05 and fit.log_se[1] < 0.08  # r, alpha: tight at this size
    mean_dropout = fit.params.a / (fit.params.a + fit.params.b)
    assert mean_dropout == pytest.approx(CDNOW.a / (CDNOW.a + CDNOW.b), rel=0.12)
    # the optimum is at least as likely as the truth
    assert fit.log_likelihood >= bgnbd_log_likelihood(CDNOW, sample.x, sample.t_x,
                                                      sample.T).sum() - 1e-6


def test_weights_count_identical_customers():
    sample = simulate_bgnbd(1500, CDNOW, 30.0, seed=4)
    rows, counts = np.unique(np.c_[sample.x, sample.t_x], axis=0, return_counts=True)
    weighted = fit_bgnbd(rows[:, 0], rows[:, 1], np.full(len(rows), 30.0), weights=counts)
    plain = fit_bgnbd(sample.x, sample.t_x, sample.T)
    assert weighted.log_likelihood == pytest.approx(plain.log_likelihood, rel=1e-6)
    assert weighted.params.r == pytest.approx(plain.params.r, rel=1e-3)


def test_gamma_gamma_recovery_and_shrinkage():
    """Spend of ~8,000 repeat customers drawn with the paper's (p, q, v): each parameter
    within 3.5 standard errors (here p and v within ~50%, q within 20%: p and v trade off),
    the population mean within 5%; and the conditional expectation, which shrinks a customer's
    own mean toward the population's, predicts their true mean better than their own mean."""
    rng = np.random.default_rng(2)
    x = rng.integers(1, 8, 8000)
    spend = simulate_spend(x, CDNOW_SPEND, seed=2)
    fit = fit_gamma_gamma(x, spend.mean_value)
    truth = (CDNOW_SPEND.p, CDNOW_SPEND.q, CDNOW_SPEND.v)
    got = (fit.params.p, fit.params.q, fit.params.v)
    for name, true, est, se in zip(["p", "q", "v"], truth, got, fit.log_se, strict=True):
        assert abs(math.log(est / true)) < 3.5 * se, (name, est, true, se)
    assert fit.params.population_mean == pytest.approx(CDNOW_SPEND.population_mean, rel=0.05)

    shrunk = np.array([expected_order_value(fit.params, int(n), m)
                       for n, m in zip(x, spend.mean_value, strict=True)])
    mse_shrunk = np.mean((shrunk - spend.true_mean) ** 2)
    mse_own = np.mean((spend.mean_value - spend.true_mean) ** 2)
    assert mse_shrunk < 0.9 * mse_own


@pytest.mark.parametrize("m", [5.0, 35.0, 200.0])
def test_shrinkage_moves_toward_the_own_mean_as_orders_grow(m):
    population = CDNOW_SPEND.population_mean
    values = [expected_order_value(CDNOW_SPEND, x, m) for x in (1, 2, 5, 20, 200)]
    gaps = [abs(v - m) for v in values]
    assert gaps == sorted(gaps, reverse=True)
    assert all(min(m, population) - 1e-9 <= v <= max(m, population) + 1e-9 for v in values)
    assert expected_order_value(CDNOW_SPEND, 0, m) == pytest.approx(population)


def test_fit_refuses_impossible_data():
    with pytest.raises(ValueError):
        fit_bgnbd([1, 2], [3, 1], [2, 5])  # t_x > T
    with pytest.raises(ValueError):
        fit_gamma_gamma([0, 2], [10.0, 12.0])  # x = 0 is not a repeat customer


# --- orders to value ----------------------------------------------------------------------------

D0 = 1_767_225_600_000  # 2026-01-01T00:00Z


@pytest.mark.parametrize(
    ("times", "values", "as_of", "expected"),
    [
        ([], [], D0, None),
        ([D0 + DAY_MS], [10.0], D0, None),  # the only order is after the as-of time
        ([D0 + HOUR_MS], [10.0], D0 + 10 * DAY_MS, RFM(0, 0.0, 10.0, 0.0)),
        # same-day orders are one occasion (values summed), the first occasion is not counted
        ([D0, D0 + 3 * DAY_MS, D0 + 3 * DAY_MS + HOUR_MS, D0 + 7 * DAY_MS],
         [99.0, 10.0, 5.0, 25.0], D0 + 30 * DAY_MS, RFM(2, 7.0, 30.0, 20.0)),
        # order of the list does not matter; orders after the as-of time do not count
        ([D0 + 7 * DAY_MS, D0, D0 + 40 * DAY_MS], [25.0, 99.0, 1.0], D0 + 30 * DAY_MS + 5,
         RFM(1, 7.0, 30.0, 25.0)),
    ],
)
def test_rfm_of(times, values, as_of, expected):
    assert rfm_of(times, values, as_of) == expected


def test_value_of_a_user_from_orders():
    model = CustomerValueModel(BgNbdParams(0.243, 4.414 * 7, 0.793, 2.426), CDNOW_SPEND, "v1")
    times = [D0, D0 + 14 * DAY_MS, D0 + 40 * DAY_MS]
    value = model.value_from_orders(times, [30.0, 40.0, 60.0], D0 + 100 * DAY_MS, 90.0)
    direct = model.value_of(2, 40.0, 100.0, 50.0, 90.0)
    assert value == direct
    assert 0 < value.p_alive < 1 and value.expected_orders > 0
    assert value.expected_value == pytest.approx(
        value.expected_orders * expected_order_value(CDNOW_SPEND, 2, 50.0))
    # the longer the silence, the less a customer is worth
    later = model.value_from_orders(times, [30.0, 40.0, 60.0], D0 + 300 * DAY_MS, 90.0)
    assert later.p_alive < value.p_alive and later.expected_value < value.expected_value
    assert model.value_from_orders([], [], D0, 90.0) is None


def test_fit_from_order_lists_and_json_round_trip():
    """Orders drawn per customer (daily times), summarised by rfm_arrays, fitted, saved."""
    rng = np.random.default_rng(3)
    sample = simulate_bgnbd(3000, BgNbdParams(0.3, 30.0, 0.8, 2.5), 270.0, seed=3)
    spend = simulate_spend(sample.x + 1, CDNOW_SPEND, seed=3)
    orders = []
    for x, t_x, mean in zip(sample.x, sample.t_x, spend.mean_value, strict=True):
        days = np.sort(np.r_[0.0, rng.uniform(0, t_x, max(x - 1, 0)), t_x if x else []])
        orders.append(([D0 + int(d * DAY_MS) for d in days], [float(mean)] * len(days)))
    x, t_x, T, m = rfm_arrays(orders, D0 + 270 * DAY_MS)
    model, purchases, spent = fit_customer_value(x, t_x, T, m, version="2026-01-01")
    assert purchases.converged and spent.converged and len(x) == 3000
    assert model.bgnbd.r == pytest.approx(0.3, rel=0.25)

    text = model.to_json()
    assert json.loads(text)["version"] == "2026-01-01"
    assert CustomerValueModel.from_json(text) == model
    assert CustomerValueModel.from_json(text.encode()).value_of(3, 50, 90, 40.0, 30) == \
        model.value_of(3, 50, 90, 40.0, 30)


@pytest.mark.parametrize(
    "change",
    [{"kind": "other"}, {"time_unit": "week"}, {"schema_version": 99},
     {"bgnbd": {"r": -1, "alpha": 1, "a": 1, "b": 1}},
     {"gamma_gamma": {"p": 1, "q": 0.5, "v": 1}}],
)
def test_from_json_refuses_what_it_cannot_serve(change):
    model = CustomerValueModel(CDNOW, CDNOW_SPEND, "v1")
    doc = {**json.loads(model.to_json()), **change}
    with pytest.raises(ValueError):
        CustomerValueModel.from_json(json.dumps(doc))
