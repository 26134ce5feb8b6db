"""Fixtures shared with the training tests: a small simulated population."""

from tests.training.conftest import histories  # noqa: F401 (a fixture)
