"""The Faust app the bench's baseline agents run in (`bench/naive_agent.py`,
`bench/bare_agent.py`): our settings and consumer, raw input and output topics. Each agent
module is its own process, so one app object carries one agent."""

from __future__ import annotations

from streams.runtime.faust_base import IntentstreamFaustApp
from streams.runtime.raw_topics import raw_topic
from streams.settings import get_settings

settings = get_settings()
app = IntentstreamFaustApp(settings.app_id, **settings.faust_settings())
events_topic = raw_topic(app, settings.events_topic, partitions=settings.partitions)
out_topic = raw_topic(app, settings.scores_topic, partitions=settings.partitions)
