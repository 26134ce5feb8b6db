"""Event-time units: event times, windows, horizons and cooldowns are epoch milliseconds."""

from __future__ import annotations

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
