"""Faust's worker at `-l warn` must not lower the root logger to DEBUG (its terminal spinner
did, so every aiokafka debug line built a LogRecord only to drop it)."""

from __future__ import annotations

import logging

import faust
import pytest

from streams.runtime.logs import QuietWorker
from streams.settings import Settings


@pytest.fixture()
def root() -> logging.Logger:
    logger = logging.getLogger()
    level, handlers = logger.level, list(logger.handlers)
    logger.setLevel(logging.WARNING)
    logger.handlers = [logging.NullHandler()]
    yield logger
    logger.setLevel(level)
    logger.handlers = handlers


def test_the_apps_start_the_quiet_worker() -> None:
    app = faust.App("quiet-worker-test", **Settings().faust_settings())
    assert app.conf.Worker is QuietWorker


def test_a_warn_level_worker_keeps_the_root_logger_at_warn(root: logging.Logger) -> None:
    app = faust.App("quiet-worker-test")
    QuietWorker(app, loglevel="warn").on_setup_root_logger(root, logging.WARNING)
    assert root.level == logging.WARNING
    assert not logging.getLogger("aiokafka.conn").isEnabledFor(logging.DEBUG)


def test_fausts_own_worker_lowers_it(root: logging.Logger) -> None:
    # What QuietWorker is for: if Faust stops doing this, the class can go.
    app = faust.App("quiet-worker-test")
    faust.Worker(app, loglevel="warn").on_setup_root_logger(root, logging.WARNING)
    assert root.level == logging.DEBUG
