"""The Faust app the bench's baseline agents run in (`bench/naive_agent.py`,
`bench/bare_agent.py`): our settings and consumer, raw input and output topics. Each agent
module is its own process, so one app object carries one agent."""

from __future__ import annotations

from streams.runtime.faust_base import IntentstreamFaustApp
from streams.settings import get_settings

settings = get_settings()
app = IntentstreamFaustApp(settings.app_id, **settings.faust_settings())
_RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
        "value_serializer": "raw", "partitions": settings.partitions}
events_topic = app.topic(settings.events_topic, **_RAW)
out_topic = app.topic(settings.scores_topic, **_RAW)
