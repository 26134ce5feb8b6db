"""Topics of raw bytes, as every app here declares its topics.

Keys and values pass through Faust undecoded: the app's own code parses and validates each
record, so a malformed one becomes a dead letter instead of a Faust deserialisation error, and
outputs are written exactly as the record models serialised them.
"""

from __future__ import annotations

import faust


def raw_topic(app: faust.App, *names: str, partitions: int) -> faust.TopicT:
    """One Faust topic over `names` (several: one subscription), bytes in and out."""
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=partitions)
