"""Customer value at train time and in the served stacker: the fit on an order history, the
saved model's round trip through the model repository, and the stacker computing, from a
FEATURES row, exactly what streams/core/customer_value computes for the same customer."""

from __future__ import annotations

import ast
import importlib.util
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from inference.model.stacking import VALUE_CODE_FILE, VALUE_FILE, write_heads
from streams.core.customer_value import CustomerValueModel, expected_purchases, p_alive
from streams.core.features import FEATURE_NAMES, N_FEATURES
from streams.core.sessions import absorb, empty_state
from training.data.order_log import OrderLogConfig, simulate_orders
from training.data.windows import validated
from training.fit import served_value
from training.fit.served_value import fit_value_model, orders_of, rfm_from_row, value_matrix
from training.served import candidate_value

from ..conftest import TEMPLATE_REPO, WORKER_POLICY

STACKER = TEMPLATE_REPO / "stacker" / "model.py"
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def stacker_step() -> types.ModuleType:
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("pb_utils"))
    spec = importlib.util.spec_from_file_location("stacker_model_value", STACKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def order_log() -> tuple[list[dict], int]:
    config = OrderLogConfig(customers=600, days=274, seed=5)
    return simulate_orders(config), config.start_ms + 274 * DAY_MS


@pytest.fixture(scope="module")
def value_fit(order_log):
    events, end = order_log
    by_user: dict[str, list[dict]] = {}
    for e in events:
        by_user.setdefault(e["user_id"], []).append(e)
    return fit_value_model(orders_of(by_user.values(), end), end, 90.0, "test"), by_user, end


def feature_rows(by_user: dict[str, list[dict]], as_of: int, n: int) -> np.ndarray:
    """FEATURES rows as the worker builds them (profile from absorbed events), as of a time
    after each user's last order: the silence score's row."""
    from streams.core.features import feature_vector

    rows = []
    for events in list(by_user.values())[:n]:
        state = empty_state()
        for doc in events:
            absorb(state, validated(doc, WORKER_POLICY), WORKER_POLICY)
        session = state["current"] or state["pending"][-1]
        rows.append(feature_vector(session, state["profile"], as_of=as_of))
    return np.asarray(rows, dtype=np.float64)


def test_the_fit_recovers_the_population_it_was_drawn_from(value_fit) -> None:
    fit, _, _ = value_fit
    assert fit.model is not None and fit.card["converged"]
    # CDNOW's r 0.243, alpha 30.9 days, p 6.25 / q 3.74 / v 15.44 → mean order 35.0
    assert 0.12 < fit.model.bgnbd.r < 0.5
    assert 15 < fit.model.bgnbd.alpha < 65
    assert 20 < fit.model.spend.population_mean < 55


def test_too_few_customers_skip_the_fit_and_say_why() -> None:
    fit = fit_value_model([([0], [10.0])] * 5, DAY_MS, 90.0, "tiny")
    assert fit.model is None and "5 customers" in fit.card["skipped"]
    assert value_matrix(fit, np.zeros((3, N_FEATURES))) is None
    assert served_value.served_payload(fit) is None


def test_saved_model_round_trips_and_the_stacker_computes_the_same_value(
        value_fit, stacker_step, tmp_path: Path) -> None:
    fit, by_user, end = value_fit
    payload = served_value.served_payload(fit)
    write_heads(tmp_path, 3, {"n_features": N_FEATURES, "feature_schema": 2,
                              "customer_value": payload})
    folder = tmp_path / "stacker" / "heads" / "3"
    assert (folder / VALUE_FILE).is_file() and (folder / VALUE_CODE_FILE).is_file()
    served = stacker_step.load_value(folder)
    assert served["model"].to_json() == fit.model.to_json()  # the version's own code built it
    assert CustomerValueModel.from_json(payload["model"]) == fit.model
    rows = feature_rows(by_user, end + 20 * DAY_MS, 120)
    got = stacker_step.value_rows(served, rows.astype(np.float32))
    assert np.allclose(got, value_matrix(fit, rows), rtol=1e-5)
    assert np.allclose(got, stacker_step.value_rows(candidate_value(payload),
                                                    rows.astype(np.float32)), rtol=1e-6)
    columns = served_value.row_columns()
    checked = 0
    for row, (alive, orders, _) in zip(rows.astype(np.float32), got, strict=True):
        rfm = rfm_from_row(row, columns)
        assert rfm is not None  # every simulated customer has ordered
        x, t_x, T, _ = rfm
        assert alive == pytest.approx(p_alive(fit.model.bgnbd, x, t_x, T), rel=1e-6)
        assert orders == pytest.approx(expected_purchases(fit.model.bgnbd, 90.0, x, t_x, T),
                                       rel=1e-5)
        checked += x > 0
    assert checked > 10  # repeat buyers, where P(alive) is below 1, are among them


def test_a_user_without_an_order_gets_no_value(value_fit, stacker_step) -> None:
    fit, _, _ = value_fit
    row = np.zeros((1, N_FEATURES), dtype=np.float32)
    row[0, FEATURE_NAMES.index("profile_days_since_last_order")] = -1
    assert value_matrix(fit, row).tolist() == [[-1.0, -1.0, -1.0]]
    served = candidate_value(served_value.served_payload(fit))
    assert stacker_step.value_rows(served, row).tolist() == [[-1.0, -1.0, -1.0]]


def test_the_two_copies_of_rfm_from_row_agree(stacker_step) -> None:
    rng = random.Random(0)
    columns = served_value.row_columns()
    for _ in range(500):
        row = np.zeros(N_FEATURES, dtype=np.float32)
        row[columns["profile_orders"]] = rng.choice([0, 1, 2, 3, 7])
        row[columns["profile_days_since_last_order"]] = rng.choice([-1, 0, 0.5, 30, 200])
        row[columns["profile_mean_days_between_orders"]] = rng.choice([-1, 0, 3.5, 40])
        row[columns["profile_mean_order"]] = rng.choice([0, 12.5, 80])
        assert stacker_step.rfm_from_row(row, columns) == rfm_from_row(row, columns)


def test_the_shipped_code_needs_only_the_standard_library() -> None:
    tree = ast.parse(served_value.self_contained_source())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
