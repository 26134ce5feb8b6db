"""Replay and backtests: historic events through the live scoring, alert and labelling code.

- `backtest.sources`: files (JSONL/CSV of our events, the UCI CSV) and Kafka by time range;
- `backtest.engine`: ordered micro-batches through the worker's own functions, deterministic;
- `backtest.labels`: labels by the feedback sidecar's own batch function;
- `backtest.evaluate`, `backtest.uci_eval`: metrics, alert sweeps, the UCI evaluation and peer;
- `backtest.report`: metrics.json, PNG plots, report.html;
- `backtest.predictions`: every prediction, predictions.jsonl and predictions.parquet;
- `backtest.models`: the model version to replay, served by an embedded tritonserver;
- `backtest.cli`: `intentstream backtest` and `intentstream replay` (argument parsing only);
- `backtest.jobs`: running them once the arguments are good.

Flow: backtest imports streams, inference and training; nothing imports backtest.
"""

__all__ = ["cli", "engine", "evaluate", "jobs", "labels", "models", "predictions", "report",
           "sources", "uci_eval"]
