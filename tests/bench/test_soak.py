"""`intentstream bench soak`: arguments and the summary (pure). The soak itself runs Apache
Kafka, three workers and Triton for minutes: a measurement (docs/benchmarks.md), not a test."""

from __future__ import annotations

import pytest

from bench.cli import main as bench_main
from bench.soak import Minute, Soak, minute_line, summary


@pytest.mark.parametrize("argv", [
    ["--minutes", "0"], ["--load", "0"], ["--load", "1.5"], ["--backlog", "0"],
    ["--minutes", "5", "--settle-minutes", "5"],
])
def test_bad_arguments_exit_2_before_anything_starts(argv, capsys) -> None:
    assert bench_main(["soak", *argv]) == 2
    assert "intentstream bench soak:" in capsys.readouterr().err


def minute(rss: list[float], lag: int, p99: float) -> Minute:
    return Minute(rss, lag, p50_ms=50.0, p99_ms=p99, events=600, triton_busy=0.5)


def test_the_summary_measures_rss_growth_from_the_end_of_the_settling_minutes() -> None:
    soak = Soak(drain_texts_per_s=20.0, rate=14.0, minutes=[
        minute([100, 100], 3, 300), minute([200, 150], 0, 500), minute([210, 180], 7, 400)])
    line = summary(soak, settle=2, exact="exact")
    # From minute 2: +5% and +20%; the largest worker's is reported.
    assert "RSS growth after minute 2: +20.0% (largest worker)" in line
    assert "lag max 7, last 7" in line and "p99 median 400 ms, max 500 ms" in line
    assert "70% of the drain's 20.0 texts/s" in line and line.endswith("outputs: exact")
    assert "RSS growth after minute 0: +110.0%" in summary(soak, settle=0, exact="exact")


def test_a_minute_line_names_every_worker_and_the_lag() -> None:
    line = minute_line(4, minute([139.4, 150.6], 12, 471))
    assert line.startswith("minute   4: RSS MB [139 151]") and "lag    12" in line
    assert "p99    471 ms" in line and "Triton busy  50%" in line
