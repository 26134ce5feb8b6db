"""One percentile for every report: nearest rank, q in [0, 1]."""

from __future__ import annotations

import pytest

from streams.core.quantiles import percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7
    assert percentile([1.0, 2.0, 3.0], 0.5) == 2


def test_percentile_of_nothing_is_none_and_bad_q_is_an_error() -> None:
    assert percentile([], 0.5) is None
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 1.01)
