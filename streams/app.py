"""The Faust app, its topics and its table. Configured from `Settings`, nothing hard-coded."""

from __future__ import annotations

import faust

from streams.settings import Settings, get_settings
from streams.topics import ensure_topics


class IntentStreamApp(faust.App):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.app_id, **settings.faust_settings())
        self.settings = settings

    async def on_first_start(self) -> None:
        # Source and output topics must exist with the table's partition count before the
        # consumer subscribes (a broker's auto-create would choose its own count).
        await ensure_topics(self.settings)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the leaf
        await super().on_first_start()


settings = get_settings()
app = IntentStreamApp(settings)


def _raw_topic(name: str) -> faust.TopicT:
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
        partitions=settings.partitions,
    )


events_topic = _raw_topic(settings.events_topic)
dlq_topic = _raw_topic(settings.dlq_topic)
scores_topic = _raw_topic(settings.scores_topic)
alert_topics = {
    "intent": _raw_topic(settings.alerts_intent_topic),
    "churn": _raw_topic(settings.alerts_churn_topic),
}

# user_id -> UserState (streams.sessions); in memory, rebuilt from its compacted changelog.
sessions_table = app.Table(
    "sessions",
    default=None,
    partitions=settings.partitions,
    schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
    help="per-user event-time session windows",
)

# str(partition) -> {"next": {topic: offset after the last message processed}}: lets the
# worker notice input Faust skipped during a rebalance and re-read it (streams/offsets.py).
progress_table = app.Table(
    "worker_progress",
    default=None,
    partitions=settings.partitions,
    schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
    help="per-partition input offsets processed",
)

# user_id -> AlertState (streams.alerts): last alert per head, for cooldown and dedup.
alert_state_table = app.Table(
    "alert_state",
    default=None,
    partitions=settings.partitions,
    schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
    help="per-user last alert per head",
)
