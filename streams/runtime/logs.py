"""structlog setup: JSON lines on stderr, one call at process start; Faust's worker without its
terminal spinner (`QuietWorker`)."""

from __future__ import annotations

import logging
import sys

import faust
import structlog
import structlog.tracebacks


def configure_logging(level: str = "info") -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # No locals in tracebacks: they would copy events (and any PII) into the logs.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


class QuietWorker(faust.Worker):
    """Faust's worker without the terminal spinner.

    At `-l warn` and above Faust attaches a spinner handler and lowers the root logger to DEBUG
    so the spinner sees every record: each debug line of aiokafka and Faust (several per
    produce request) then builds a LogRecord only to drop it, 4.6% of the worker's busy samples
    in the bench's tiny drain. The spinner only draws on a terminal; our processes log to
    files. Set as the apps' `Worker` (Settings.faust_settings)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.spinner = None
