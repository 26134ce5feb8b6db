"""The input envelope: one Kafka record as the pure pipeline sees it, whatever delivered it.

Faust's stream, the gap re-read, replay files and backtests all hand the core this shape, so
the core never imports a Kafka client.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RawMessage:
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
