"""The Faust app, its topics and its table. Configured from `Settings`, nothing hard-coded."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import TextIO

import faust
import structlog

from streams.runtime.faust_base import IntentstreamFaustApp
from streams.runtime.metrics import WORKER_REGISTRY, serve_metrics
from streams.runtime.outputs import OutputProducer
from streams.runtime.raw_topics import raw_topic
from streams.runtime.topics import bootstrap_servers, ensure_topics
from streams.settings import Settings, get_settings

log = structlog.get_logger("intentstream.app")


class IntentStreamApp(IntentstreamFaustApp):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.app_id, **settings.faust_settings())
        self.settings = settings
        self.slot_lock: TextIO | None = None  # held while this worker uses its data dir

    async def on_first_start(self) -> None:
        # Only a worker starts the app (commands don't), once per process. First, so a taken
        # port stops the worker before it joins the group.
        if serve_metrics(self.settings.metrics_port, WORKER_REGISTRY,
                         "INTENTSTREAM_METRICS_PORT") is not None:
            log.info("metrics.serving", port=self.settings.metrics_port)
        # Source and output topics must exist with the table's partition count before the
        # consumer subscribes (a broker's auto-create would choose its own count).
        await ensure_topics(self.settings)
        await self.declare_changelogs()
        self.take_data_dir()
        await super().on_first_start()

    def take_data_dir(self) -> None:
        """RocksDB locks its directory. Without a WORKER_ID this worker takes the first
        `slot-N` under the app's data dir that no live process holds, so replicas sharing one
        volume, or two workers on one host, each reopen a directory of their own across
        restarts. Here, once a worker starts: commands (`intentstream health`) take none."""
        if self.settings.table_store == "rocksdb://" and not self.settings.worker_id:
            self.conf.datadir, self.slot_lock = claim_slot(self.conf.datadir)
        self.conf.datadir.mkdir(parents=True, exist_ok=True)  # Faust makes only the leaf

    async def declare_changelogs(self) -> None:
        """Create the tables' changelog topics (Faust's own declaration: compacted, the
        table's partitions) before the consumer subscribes to them. Left to the tables' own
        start, a fresh app on Apache Kafka could subscribe first; the consumer's metadata then
        kept the changelog with no partitions and the first write to that table stopped the
        worker (PartitionsMismatch "... changelog topic ... has 0 partitions"), seen in 3 of
        6 e2e starts on a busy machine. Declaring is idempotent (it exists: nothing to do)."""
        for table in self.tables.values():
            await table.changelog_topic.maybe_declare()


def claim_slot(base: Path, limit: int = 256) -> tuple[Path, TextIO]:
    """`base/slot-N` for the lowest N whose lock file this process could lock, and that open
    file: the exclusive flock lasts while it stays open, and the kernel drops it when the
    process dies, SIGKILL included, so a slot is never taken by two live processes."""
    base.mkdir(parents=True, exist_ok=True)
    for n in range(limit):
        lock = (base / f"slot-{n}.lock").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return base / f"slot-{n}", lock
    raise RuntimeError(f"all {limit} slots under {base} are held by live processes")


settings = get_settings()
app = IntentStreamApp(settings)


# Bytes in: the agent parses and validates every record itself (dead letters).
events_topic = raw_topic(app, settings.events_topic, partitions=settings.partitions)
# Bytes out, through their own producer; the scoring agent starts and stops it.
outputs = OutputProducer(bootstrap_servers(settings.broker_url),
                         max_batch_bytes=settings.output_batch_bytes,
                         client_kwargs=settings.kafka_client_kwargs())
dlq_topic = outputs.topic(settings.dlq_topic)
scores_topic = outputs.topic(settings.scores_topic)
alert_topics = {
    "intent": outputs.topic(settings.alerts_intent_topic),
    "churn": outputs.topic(settings.alerts_churn_topic),
}


def _json_table(name: str, help: str) -> faust.types.TableT:
    """In TABLE_STORE (memory or RocksDB), backed by its compacted changelog; co-partitioned
    with the source."""
    return app.Table(
        name,
        default=None,
        partitions=settings.partitions,
        schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
        options=settings.table_options(),
        help=help,
    )


# user_id -> UserState (streams.core.sessions)
sessions_table = _json_table("sessions", "per-user event-time session windows")
# str(partition) -> {"next": {topic: offset after the last message processed}}: lets the
# worker notice input Faust skipped during a rebalance and re-read it (streams/core/offsets.py).
progress_table = _json_table("worker_progress", "per-partition input offsets processed")
# user_id -> AlertState (streams.core.alerts): last alert per head, for cooldown and dedup.
alert_state_table = _json_table("alert_state", "per-user last alert per head")
