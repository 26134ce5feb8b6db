"""`intentstream backtest` (a Kafka topic, by event-time range) and `intentstream replay` (a
file: our events as JSONL/CSV, or the UCI Online Shoppers CSV). Both run the live code path
(`backtest.engine`) against one model version, optionally a baseline version too, and write a
report directory (`backtest.report`). This module only parses the arguments; `backtest.jobs`
runs, imported once they are good, so `--help` loads no scikit-learn, matplotlib or Triton
client.

Exit status: 0 written, 1 failed (Triton or the broker not reachable, training the demo model
failed), 2 bad request (missing model version, file or topic; nothing to score: no valid event
in the file or range, counts by reason on stderr).

    intentstream backtest --from 2026-11-01 --to 2026-11-08 [--model-version N]
                          [--baseline-version M] [--label-until T] [--out DIR]
    intentstream replay FILE [--model-version N] [--baseline-version M] [--out DIR]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from inference.repository import REPOSITORY_TEMPLATE
from streams.core.events import parse_event_time

# --- arguments ----------------------------------------------------------------------------------


def event_time(text: str) -> int:
    """Epoch ms or ISO-8601 (no zone = UTC), as event times are written."""
    try:
        return parse_event_time(int(text) if text.lstrip("-").isdigit() else text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def tick(text: str) -> str:
    """Seconds > 0, or 'all'; checked here, read by `backtest.jobs._tick_s`."""
    if text != "all":
        try:
            ok = float(text) > 0
        except ValueError:
            ok = False
        if not ok:
            raise argparse.ArgumentTypeError("--tick-s must be seconds > 0 or 'all'")
    return text


def _common(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--model-version", type=int,
                       help="intent_bert version to score with (default: the newest built)")
    model.add_argument("--baseline-version", type=int,
                       help="also score with this version and compare (embedded server only)")
    model.add_argument("--model-repo", type=Path, default=REPOSITORY_TEMPLATE,
                       help="model repository the embedded server serves from "
                            "(default: triton_models/)")
    model.add_argument("--triton-url", help="score on this running Triton (host:port, gRPC) "
                       "instead of starting one; also INTENTSTREAM_TRITON_URL")
    model.add_argument("--label", help="the model's name in the report (default: intent_bert vN)")
    model.add_argument("--baseline-label",
                       help="the baseline's name in the report (default: intent_bert vM "
                            "(baseline))")
    run = parser.add_argument_group("run")
    run.add_argument("--tick-s", type=tick,
                     help="event-time micro-batch: a user's events within one tick are scored "
                          "together, as the worker coalesces a batch (default: BATCH_WITHIN_S; "
                          "'all': each session once, at its end)")
    run.add_argument("--out", type=Path, help="report directory (default: var/backtests/…)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")


def backtest_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="intentstream backtest",
        description="Replay a time range of shop.events through the live scoring, alert and "
                    "labelling code against a chosen model version; write a report. Reads "
                    "with no consumer group and writes to no topic.")
    rng = parser.add_argument_group("range (event time: epoch ms or ISO-8601, UTC)")
    rng.add_argument("--from", dest="start", type=event_time, required=True,
                     help="first event time scored")
    rng.add_argument("--to", dest="end", type=event_time, required=True,
                     help="event times scored are before this")
    rng.add_argument("--label-until", type=event_time,
                     help="also read events up to here for labels only (default: --to)")
    kafka = parser.add_argument_group("kafka")
    kafka.add_argument("--topic", help="events topic (default: INTENTSTREAM_EVENTS_TOPIC)")
    kafka.add_argument("--broker-url", help="default: INTENTSTREAM_BROKER_URL")
    kafka.add_argument("--lateness-s", type=float,
                       help="skip records stamped (record timestamp) more than this after the "
                            "range's end; default: read to the topic's end as of now")
    _common(parser)
    return parser


def replay_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="intentstream replay",
        description="Replay a file of events (JSONL, or CSV with item.* columns) or the UCI "
                    "Online Shoppers CSV through the live scoring, alert and labelling code; "
                    "write a report. No broker needed.")
    parser.add_argument("file", type=Path, help="events .jsonl / .csv, or the UCI CSV")
    parser.add_argument("--from", dest="start", type=event_time, help="first event time scored")
    parser.add_argument("--to", dest="end", type=event_time, help="scored event times are before")
    parser.add_argument("--limit-rows", type=int, help="only the file's first N records or rows")
    _common(parser)
    return parser


# --- entry points -------------------------------------------------------------------------------


def replay_main(argv: Sequence[str] | None = None) -> int:
    args = replay_parser().parse_args(argv)
    from backtest import jobs

    return jobs.guarded(lambda: jobs.run_replay(args))


def backtest_main(argv: Sequence[str] | None = None) -> int:
    parser = backtest_parser()
    args = parser.parse_args(argv)
    if args.end <= args.start:
        parser.error("--to must be after --from")
    label_until = args.label_until if args.label_until is not None else args.end
    if label_until < args.end:
        parser.error("--label-until must not be before --to")
    from backtest import jobs

    return jobs.guarded(lambda: jobs.run_backtest(args, label_until))
