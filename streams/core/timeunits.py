"""Event-time units: event times, windows, horizons and cooldowns are epoch milliseconds."""

from __future__ import annotations

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


def iso(ms: int) -> str:
    """An event time as ISO-8601 UTC with a `Z` (what reports and cards print)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
