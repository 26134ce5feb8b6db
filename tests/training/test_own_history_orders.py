"""An orders-only history (purchases, no browsing) of 9 months trains 90- and 180-day churn
models: the 180-day horizon cannot settle labels on both sides of a time split, so the run
trains at an earlier cut and says so; heads without labels (intent type: every window is a
purchase) are skipped and named; BG/NBD and recency stand beside the served churn head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cli import main
from training.data.order_log import OrderLogConfig, simulate_orders, write_jsonl


@pytest.fixture(scope="module")
def nine_months(tmp_path_factory) -> Path:
    events = simulate_orders(OrderLogConfig(customers=500, days=274, seed=2))
    return write_jsonl(events, tmp_path_factory.mktemp("orders") / "calibration.jsonl")


@pytest.mark.parametrize(("churn_days", "earlier_cut"), [(90, False), (180, True)])
def test_an_order_log_trains_churn_from_nine_months(nine_months: Path, repo: Path,
                                                    tmp_path: Path, churn_days: int,
                                                    earlier_cut: bool) -> None:
    out = tmp_path / "run"
    code = main(["--tiny", "--events", str(nine_months), "--churn-days", str(churn_days),
                 "--max-steps", "5", "--no-uci", "--progress", "false", "--runtime", "torch",
                 "--out", str(out), "--repo", str(repo)])
    assert code == 0
    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    history = card["data"]["history"]
    assert ("earlier_cut" in history) is earlier_cut
    if earlier_cut:
        assert "no settled window" in history["earlier_cut"]["why"]
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
