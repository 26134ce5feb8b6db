"""Baseline for `intentstream bench`: the floor of Faust itself on this broker.

One table update and one output per event, no parsing beyond the bytes, no model. Run by the
bench as `python -m bench.bare_agent worker`, configured by the same INTENTSTREAM_* settings.
"""

from __future__ import annotations

import faust
from faust.types import StreamT

from bench.baseline_app import app, events_topic, out_topic, settings

last_seen = app.Table("last_seen", default=None, partitions=settings.partitions,
                      schema=faust.Schema(key_type=bytes, value_type=bytes,
                                          key_serializer="raw", value_serializer="raw"))


@app.agent(events_topic)
async def forward_each_event(stream: StreamT) -> None:
    async for event in stream.events():
        last_seen[event.key] = event.value
        await out_topic.send(key=event.key, value=event.value)


if __name__ == "__main__":
    app.main()
