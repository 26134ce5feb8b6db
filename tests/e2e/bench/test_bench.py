"""`intentstream bench` end to end on the tiny model: the four ratios printed, the figures file."""

from __future__ import annotations

import json
import re

import pytest

from bench.cli import main


@pytest.mark.e2e
def test_a_small_run_prints_the_four_ratios(tmp_path, capsys):
    out = tmp_path / "figures.json"
    status = main(["--model", "tiny", "--events", "1500", "--users", "300",
                   "--naive-events", "60", "--paced-seconds", "4", "--backlog-scales", "1,2",
                   "--workdir", str(tmp_path / "work"), "--json", str(out)])
    assert status == 0
    printed = capsys.readouterr().out.strip().splitlines()
    found = re.fullmatch(r"ratios: pipeline/model=([\d.]+) naive=([\d.]+)x "
                         r"bare_faust=([\d.]+) p99/batch=([\d.]+) cascade=([\d.]+) "
                         r"network_share=([\d.]+) runtime=([a-z0-9-]+)", printed[-1])
    assert found, printed[-1]
    assert all(float(v) > 0 for v in found.groups()[:5])
    figures = json.loads(out.read_text())
    assert figures["events"] == 1500 and figures["worker_scores"] > 0
    assert figures["over_naive"] == pytest.approx(
        figures["worker_events_per_s"] / figures["naive_events_per_s"])
    # (1) is taken against the fastest runtime of the table printed before the ratios.
    speeds = figures["runtimes_texts_per_s"]
    assert {"torch", "onnxruntime-fp32", "onnxruntime-int8"} <= set(speeds)
    assert figures["fastest_runtime"] == max(speeds, key=speeds.get)
    assert figures["pipeline_over_model"] == pytest.approx(
        figures["pipeline_scores_per_s"] / max(speeds.values()))
    assert found.group(7) == figures["runtime"]
    # the cascade: both drains measured, and the routes taken add up to the drain's scorings
    assert figures["cascade"] == pytest.approx(
        figures["worker_events_per_s"] / figures["all_network_events_per_s"])
    routes = figures["cascade_routes"]
    assert "network" in routes and 0 < figures["network_share"] < 1, routes
    table = next(i for i, line in enumerate(printed) if line.startswith("in-process runtimes"))
    assert table < next(i for i, line in enumerate(printed) if line.startswith("(1)"))
    assert set(figures["backlog_events_per_text"]) == {"1", "2"}
    assert all(v >= 1 for v in figures["backlog_events_per_text"].values())
    # A session needs one score at least: events per text never passes events per session.
    assert all(figures["backlog_events_per_text"][k] <= v
               for k, v in figures["backlog_events_per_session"].items())
