"""`intentstream replay` on files, scored by the real tritonserver (tiny model)."""

from __future__ import annotations

import asyncio
import random

import orjson
import pyarrow.parquet as pq
import pytest

from backtest.cli import replay_main
from backtest.engine import OrderedScorer, Run, replay
from backtest.jobs import engine_config
from backtest.predictions import COLUMN_NAMES
from backtest.sources import read_file
from backtest.uci_eval import final_scores
from inference.heads import STRENGTH_LABELS
from inference.repository import single_version_repo
from streams.core.features import FEATURE_SCHEMA_VERSION
from streams.settings import Settings
from tests.backtest.fixtures import UCI_CSV, metrics, only_run, write_jsonl
from training.data import uci
from training.data.simulator import known_labels

pytestmark = pytest.mark.e2e


def replay_file(path, url: str, tick_s: float | None, label: bool = True,
                alert_threshold: float = 0.6) -> Run:
    """The engine on a file, in process (what the CLI runs), to inspect every record."""
    settings = Settings(alert_intent_threshold=alert_threshold,
                        alert_churn_threshold=alert_threshold)
    config = engine_config(settings, tick_s, start=None, end=None, label_until=None, label=label)

    async def go() -> Run:
        scorer = OrderedScorer(url, model_name=settings.triton_model,
                               max_batch=settings.score_max_batch, timeout_s=30)
        try:
            return await replay(read_file(path).messages, scorer, config)
        finally:
            await scorer.close()

    return asyncio.run(go())


def test_replay_writes_the_report(tmp_path, sim_events, triton):
    path = write_jsonl(tmp_path / "events.jsonl", sim_events, (b"{not json",))
    out = tmp_path / "report"
    code = replay_main([str(path), "--triton-url", triton.grpc_url, "--out", str(out),
                        "--tick-s", "60", "--no-progress"])
    assert code == 0
    assert (out / "report.html").is_file()
    for png in ("roc_pr_strength.png", "roc_pr_churn.png", "calibration.png",
                "alert_threshold.png"):
        assert (out / png).stat().st_size > 1000
    run = only_run(metrics(out))
    assert run["dead_letters"] == {"not_json": 1}
    assert run["counts"]["events_in_range"] == len(sim_events)
    assert run["heads"]["strength"]["n"] > 100 and run["heads"]["churn"]["n"] > 50
    assert run["alert_sweep"]["intent"][0]["threshold"] == 0.05
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "roc_pr_strength.png" in html
    # Every prediction beside metrics.json, in JSONL and Parquet, the same rows.
    rows = [orjson.loads(line) for line in (out / "predictions.jsonl").read_bytes().splitlines()]
    assert len(rows) == run["counts"]["predictions"]
    assert len({r["prediction_id"] for r in rows}) == len(rows)
    table = pq.read_table(out / "predictions.parquet")
    assert table.column_names == list(COLUMN_NAMES) and table.to_pylist() == rows
    first = rows[0]
    assert first["feature_schema_version"] == FEATURE_SCHEMA_VERSION
    assert first["feature_n_events"] == first["window_n_events"] >= 1
    assert sum(first[f"p_strength_{label}"] for label in STRENGTH_LABELS) == pytest.approx(1)
    labelled = [r for r in rows if r["label_strength"] is not None]
    assert len(labelled) == run["heads"]["strength"]["n"]  # the labeller's, joined by id
    assert {r["label_strength"] for r in labelled} <= set(STRENGTH_LABELS)
    assert any(r["label_churn"] is None for r in rows)  # the newest: D has not passed yet


def test_input_order_changes_nothing(tmp_path, sim_events, triton):
    ordered = sim_events[:500]
    shuffled = list(ordered)
    random.Random(5).shuffle(shuffled)
    reports = []
    for name, events in (("ordered", ordered), ("shuffled", shuffled)):
        out = tmp_path / name
        path = write_jsonl(tmp_path / f"{name}.jsonl", events)
        assert replay_main([str(path), "--triton-url", triton.grpc_url, "--out", str(out),
                            "--tick-s", "60", "--no-progress"]) == 0
        reports.append(metrics(out))
    assert reports[0]["source"]["sha256"] != reports[1]["source"]["sha256"]
    assert reports[0]["runs"] == reports[1]["runs"]
    assert (tmp_path / "ordered" / "predictions.jsonl").read_bytes() == (
        tmp_path / "shuffled" / "predictions.jsonl").read_bytes()


def test_labels_are_the_simulators_ground_truth(tmp_path, sim_events, histories, triton):
    """Settled predictions carry exactly the labels the simulation knows from its future."""
    path = write_jsonl(tmp_path / "events.jsonl", sim_events)
    run = replay_file(path, triton.grpc_url, tick_s=60, alert_threshold=0.25)
    assert run.labelling is not None
    by_user = {h.user_id: h for h in histories}
    settled = [p for p in run.labelling.predictions if p.settled]
    assert len(settled) > 100
    for p in settled:
        truth = known_labels(by_user[p.user_id], p.window_end)
        assert (p.label_strength, p.label_intent_type, p.label_churn) == (
            truth.strength, truth.intent_type, truth.churn), p
    # Labelled on strength only (D not yet passed): the same strength as the simulation's.
    partial = [p for p in run.labelling.predictions if not p.settled and p.label_strength]
    assert partial
    assert all(p.label_strength == known_labels(by_user[p.user_id], p.window_end).strength
               for p in partial)
    # The sidecar's replica of the alert decisions agrees with the worker's decide_alerts.
    raised = {(a.prediction_id, a.head) for a in run.alerts}
    assert raised, "no alerts at threshold 0.25: the check below would be empty"
    assert raised == {(p.prediction_id, head) for p in run.labelling.predictions
                      for head, alerted in p.alerted.items() if alerted}


@pytest.mark.skipif(not UCI_CSV.is_file(), reason="UCI CSV not beside the checkout")
def test_uci_replay_scores_each_session_once_as_training_renders_it(tmp_path, triton):
    subset = tmp_path / uci.CSV_NAME
    lines = UCI_CSV.read_text(encoding="utf-8").splitlines()
    subset.write_text("\n".join(lines[:401]) + "\n", encoding="utf-8")  # header + 400 rows
    out = tmp_path / "uci"
    assert replay_main([str(subset), "--triton-url", triton.grpc_url, "--out", str(out),
                        "--no-progress"]) == 0
    report = metrics(out)
    assert report["kind"] == "uci" and report["uci"]["test_rows"] == 120
    assert report["uci"]["peer_metrics"]["roc_auc"] > 0.8  # the tabular peer learns something
    assert only_run(report)["heads"]["revenue"]["n"] == 120
    assert (out / "roc_pr_revenue.png").is_file()
    levels = only_run(report)["levels"]
    assert set(levels.pop("text_model_alone")) == {"train_part", "test"}
    assert list(levels) == [level.name for level in uci.LEVELS]
    for row in levels.values():  # the peer and ours on the same test rows, side by side
        assert 0 <= row["peer"]["roc_auc"] <= 1 and 0 <= row["ours"]["roc_auc"] <= 1
    assert levels["plus_analytics"]["ours"]["roc_auc"] > 0.8  # the live features carry them
    rows = [orjson.loads(line) for line in (out / "predictions.jsonl").read_bytes().splitlines()]
    by_user = {r["user_id"]: r for r in rows}
    assert len(rows) == len(by_user) == 400  # one final score per session
    assert {user: r["label_revenue"] for user, r in by_user.items()} == {
        s.events[0]["user_id"]: s.revenue for s in uci.load_sessions(subset)}
    assert sum(r["uci_split"] == "test" for r in rows) == 120
    page_value = float(lines[1].split(",")[8])  # the first row's PageValues
    assert by_user["uci-00000"]["feature_page_value"] == pytest.approx(page_value)

    run = replay_file(subset, triton.grpc_url, tick_s=None, label=False)
    sessions = uci.load_sessions(subset)
    finals = final_scores(run.records)
    assert len(run.records) == len({r.prediction_id for r in run.records})  # once each
    policy = Settings().session_policy()
    assert [finals[s.events[0]["user_id"]].text for s in sessions] == [
        uci.session_text(s, policy, with_analytics=False) for s in sessions]


def test_a_file_of_nothing_valid_is_a_bad_request_with_the_reasons(tmp_path, triton, capsys):
    # Issue 13: was exit 0 with an empty report; nothing to score is now exit 2, no report.
    path = write_jsonl(tmp_path / "bad.jsonl", [], (b"{not json", b'{"user_id": "u"}'))
    out = tmp_path / "report"
    assert replay_main([str(path), "--triton-url", triton.grpc_url, "--out", str(out),
                        "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no valid event" in err and "not_json 1" in err and "missing_field 1" in err
    assert not out.exists()


def test_dead_letters_are_counted_beside_valid_events(tmp_path, triton, sim_events):
    path = write_jsonl(tmp_path / "mixed.jsonl", sim_events[:20],
                       (b"{not json", b'{"user_id": "u"}'))
    out = tmp_path / "report"
    assert replay_main([str(path), "--triton-url", triton.grpc_url, "--out", str(out),
                        "--no-progress"]) == 0
    assert only_run(metrics(out))["dead_letters"] == {"missing_field": 1, "not_json": 1}


def test_a_missing_model_version_is_a_clear_error(tmp_path, sim_events, capsys):
    path = write_jsonl(tmp_path / "events.jsonl", sim_events[:10])
    assert replay_main([str(path), "--model-version", "987", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "intent_bert version 987 is not in" in err and "built versions" in err


def test_a_baseline_version_is_served_and_compared(tmp_path, sim_events, triton):
    """No --triton-url: each version gets an embedded server of its own, one after the other.
    The same version on two fresh servers must score identically."""
    repo = single_version_repo(triton.repo, 1, tmp_path / "repo")
    path = write_jsonl(tmp_path / "events.jsonl", sim_events[:200])
    out = tmp_path / "report"
    assert replay_main([str(path), "--model-repo", str(repo), "--model-version", "1",
                        "--baseline-version", "1", "--tick-s", "60", "--out", str(out),
                        "--no-progress"]) == 0
    report = metrics(out)
    runs = report["runs"]
    assert {name: run["role"] for name, run in runs.items()} == {
        "intent_bert v1": "model", "intent_bert v1 (baseline)": "baseline"}
    model, baseline = runs.values()
    assert model["scores_sha256"] == baseline["scores_sha256"]
    deltas = report["comparison"]["model_minus_baseline"]
    assert set(deltas) == {"strength", "intent_type", "churn"}
    assert all(v == 0 for head in deltas.values() for v in head.values())
