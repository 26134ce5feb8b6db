"""An orders-only history (purchases, no browsing) of 9 months trains 90- and 180-day churn
models, each at an earlier cut, and says why: the 180-day horizon cannot settle labels on both
sides of a time split, and the 90-day one's labelled windows would all end in the history's
first half (by day 38), far younger than the customers scored at its end. Heads without labels
(intent type: every window is a purchase) are skipped and named; BG/NBD and recency stand
beside the served churn head. On the same log's next 9 months (`python -m training.order_log
--run`), each version's churn score at the calibration end ranks churn at its horizon at least
as well as days since the last order, and level with BG/NBD expected orders (within 0.005: on
a log drawn from BG/NBD nothing can be clearly better); the run's card records it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.core.timeunits import DAY_MS
from training.cli import main
from training.data.order_log import START_MS, OrderLogConfig, simulate_orders, split_at, write_jsonl
from training.order_log import main as order_log_main

CALIBRATION_END = START_MS + 274 * DAY_MS  # 9 months of orders to train on, 9 more to judge
TIE = 0.005  # ROC-AUC: level with the best ranking on a log drawn from BG/NBD (see below)


@pytest.fixture(scope="module")
def order_log(tmp_path_factory) -> Path:
    events = simulate_orders(OrderLogConfig(customers=500, days=548, seed=2))
    return write_jsonl(events, tmp_path_factory.mktemp("orders") / "orders.jsonl")


@pytest.fixture(scope="module")
def nine_months(order_log: Path) -> Path:
    events = [json.loads(line) for line in order_log.read_text(encoding="utf-8").splitlines()]
    calibration, _ = split_at(events, CALIBRATION_END)
    return write_jsonl(calibration, order_log.with_name("calibration.jsonl"))


@pytest.mark.parametrize(("churn_days", "why_cut"), [(90, "in the first half"),
                                                     (180, "no settled window")])
def test_an_order_log_trains_churn_from_nine_months(nine_months: Path, order_log: Path,
                                                    repo: Path, tmp_path: Path, churn_days: int,
                                                    why_cut: str, capsys) -> None:
    out = tmp_path / "run"
    code = main(["--tiny", "--events", str(nine_months), "--churn-days", str(churn_days),
                 "--max-steps", "5", "--no-uci", "--progress", "false", "--runtime", "torch",
                 "--out", str(out), "--repo", str(repo)])
    assert code == 0
    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    history = card["data"]["history"]
    assert why_cut in history["earlier_cut"]["why"]
    assert set(card["data"]["heads_skipped"]) == {"intent_type"}
    assert history["triggers"]["silence"] > 0  # "silent for X days" windows were learned from
    stacking = card["stacking"]
    assert "bgnbd" in stacking["customer_value"]
    peers = stacking["served_vs_peers"]["churn"]
    assert {"bgnbd_p_alive", "days_since_last_order"} <= set(peers)
    assert all("roc_auc_delta_ci95" in peers[p] for p in ("bgnbd_p_alive",
                                                          "days_since_last_order"))
    assert (repo / "stacker" / "heads" / "1" / "customer_value.json").is_file()
    markdown = (out / "model_card.md").read_text(encoding="utf-8")
    assert "BG/NBD" in markdown and "days since the last order" in markdown

    capsys.readouterr()
    assert order_log_main(["--events", str(order_log), "--calibration-end",
                           str(CALIBRATION_END), "--run", str(out)]) == 0
    printed = capsys.readouterr()
    (judged,) = json.loads(printed.out)
    assert judged["label_days"] == churn_days and judged["customers"] > 300
    served = judged["served"]["roc_auc"]
    assert served >= judged["days_since_last_order"]["roc_auc"], judged
    # The log is drawn from BG/NBD, so BG/NBD's own P(no order) is the best ranking there is
    # and its expected orders ranks within a few thousandths of it (on 500 customers it even
    # leads it by chance: 0.7633 against 0.7629 at 90 days). A served head that learned the
    # right thing is level with it, not clear of it: within 0.005.
    assert served >= judged["bgnbd_expected_orders"]["roc_auc"] - TIE, judged
    assert "served churn head" in printed.err and f"{churn_days}d" in printed.err
    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    assert card["order_log"]["served"]["roc_auc"] == served
    assert "Churn at the end of the calibration period" in (
        out / "model_card.md").read_text(encoding="utf-8")
