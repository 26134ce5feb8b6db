"""Fixtures the core tests share with the training tests: a small simulated population."""

from tests.training.conftest import histories  # noqa: F401 (a fixture)
