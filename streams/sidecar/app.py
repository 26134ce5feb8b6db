"""The feedback sidecar: a second Faust app, its own consumer group, tables and store.

```
shop.events ──────┐ (all keyed by user, same partition count: one agent reads the three)
intent.scores ────┼─▶ label_predictions: micro-batch ─▶ streams.core.feedback.plan_feedback
alerts.responses ─┘        ├─▶ feedback.examples (key = user)      new examples only
                           ├─▶ SQLite store (examples, responses)   INSERT OR IGNORE, fsync
                           └─▶ tables: per-user state, per-partition max event time ─▶ ack
```

At-least-once like the worker: a batch is acked only after its examples are on the topic and
in the store and its table updates are sent; table state is written after the outputs, so a
crash in between re-resolves the same predictions (same ids) instead of forgetting them. Run
it with `intentstream feedback` (docs/feedback.md).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import faust
import orjson
import structlog
from faust.cli import option
from faust.types import EventT, StreamT

from streams.core.feedback import (
    FeedbackBatch,
    FeedbackExample,
    FeedbackPolicy,
    InputTopics,
    TimerIndex,
    due_at,
    plan_feedback,
    with_responses,
)
from streams.core.raw_message import RawMessage
from streams.core.records import encode
from streams.runtime.agent_io import (
    TAIL_CHECK_S,
    SkippedInput,
    as_current,
    partition_anchors,
    produce_all,
    redeliver_dropped_tails,
    report_lag,
    run_acked_batches,
    save_progress,
)
from streams.runtime.faust_base import IntentstreamFaustApp
from streams.runtime.metrics import (
    FEEDBACK,
    FEEDBACK_EXAMPLES,
    FEEDBACK_INVALID,
    FEEDBACK_OUTCOMES,
    FEEDBACK_PENDING_USERS,
    FEEDBACK_REGISTRY,
    FEEDBACK_RESPONSES,
    LAG_REFRESH_S,
    serve_metrics,
    split_invalid,
    tally,
)
from streams.runtime.raw_topics import raw_topic
from streams.runtime.topics import bootstrap_servers, ensure_topics
from streams.settings import Settings, get_settings
from streams.sidecar.store import FeedbackStore, StoreThread

log = structlog.get_logger("intentstream.feedback")


def sidecar_topics(settings: Settings) -> list[str]:
    return [settings.events_topic, settings.scores_topic, settings.alert_responses_topic,
            settings.feedback_topic]


class FeedbackApp(IntentstreamFaustApp):
    def __init__(self, settings: Settings) -> None:
        conf = settings.faust_settings()
        conf["datadir"] = str(settings.app_data_dir(settings.feedback_app_id))
        super().__init__(settings.feedback_app_id, **conf)
        self.settings = settings
        # Derived from the user table (which users are due when); rebuilt after every
        # assignment, once the tables are recovered, by the first batch that follows.
        self.timers = TimerIndex()
        self.timers_stale = True

    async def on_first_start(self) -> None:
        # Once per process, before joining the group: a taken port is a config error.
        if serve_metrics(self.settings.feedback_metrics_port, FEEDBACK_REGISTRY,
                         "INTENTSTREAM_FEEDBACK_METRICS_PORT",
                         stall_s=self.settings.stall_s) is not None:
            log.info("metrics.serving", port=self.settings.feedback_metrics_port)
        # The inputs must exist with the tables' partition count before the consumer subscribes.
        await ensure_topics(self.settings, names=sidecar_topics(self.settings))
        self.conf.datadir.mkdir(parents=True, exist_ok=True)  # Faust makes only the leaf
        await super().on_first_start()


settings = get_settings()
app = FeedbackApp(settings)
POLICY = FeedbackPolicy(
    label=settings.label_policy(),
    alert=settings.alert_policy(),  # must equal the worker's: its decisions are replayed
    lateness_ms=int(settings.watermark_lateness_s * 1000),
    max_event_bytes=settings.max_event_bytes,
    max_future_ms=settings.session_policy().max_future_ms,  # the worker's, so both reject alike
    ts_bounds=settings.event_time_bounds(),
    privacy=settings.privacy_policy(),
)
TOPICS = InputTopics(
    events=settings.events_topic,
    scores=settings.scores_topic,
    responses=settings.alert_responses_topic,
)
inputs = raw_topic(app, TOPICS.events, TOPICS.scores, TOPICS.responses,
                   partitions=settings.partitions)
examples_topic = raw_topic(app, settings.feedback_topic, partitions=settings.partitions)

_JSON = faust.Schema(key_type=str, key_serializer="json", value_serializer="json")
# user_id -> UserFeedback (streams.core.feedback); in TABLE_STORE, backed by its changelog.
users_table = app.Table("feedback_users", default=None, partitions=settings.partitions,
                        schema=_JSON, options=settings.table_options(),
                        help="per-user pending predictions and recent events")
# str(partition) -> {"max_ts": max event time seen there (the event-time clock),
#                     "next": {topic: offset after the last message processed there}}
progress_table = app.Table("feedback_progress", default=None, partitions=settings.partitions,
                           schema=_JSON, options=settings.table_options(),
                           help="per-partition max event time and input offsets")


@app.on_partitions_assigned.connect
async def _timers_stale_after_assignment(sender: faust.App, assigned: object, **_: object) -> None:
    app.timers_stale = True


def rebuild_timers() -> None:
    app.timers = TimerIndex()
    for user_id, state in users_table.items():
        if state:
            app.timers.set(user_id, state["partition"], due_at(state, POLICY.label))
    app.timers_stale = False
    log.info("timers.rebuilt", pending_users=len(app.timers))


def progress(partition: int) -> dict:
    return progress_table.get(str(partition)) or {"max_ts": None, "next": {}}


def next_offset(topic: str, partition: int) -> int | None:
    return progress(partition)["next"].get(topic)


def report_batch(batch: FeedbackBatch, fresh: Sequence[FeedbackExample]) -> None:
    FEEDBACK_EXAMPLES.inc(len(fresh))
    for (source, reason), n in split_invalid(batch.invalid).items():
        FEEDBACK_INVALID.labels(source, reason).inc(n)
    for status, n in tally(r.status for r in batch.responses).items():
        FEEDBACK_RESPONSES.labels(status).inc(n)
    for outcome, n in batch.counts.items():
        if outcome not in ("examples", "stored"):  # examples: FEEDBACK_EXAMPLES
            FEEDBACK_OUTCOMES.labels(outcome).inc(n)
    FEEDBACK_PENDING_USERS.set(len(app.timers))
    for e in fresh:  # a labelled example is what a prediction becomes: same id
        log.debug("feedback.example", user_id=e.user_id, prediction_id=e.example_id,
                  session_id=e.session_id, model_version=e.model_version)


async def process_batch(
    store: StoreThread, events: Sequence[EventT], messages: Sequence[RawMessage]
) -> FeedbackBatch:
    if app.timers_stale:
        rebuild_timers()
    batch = plan_feedback(messages, TOPICS, users_table.get,
                          lambda partition: progress(partition)["max_ts"], app.timers, POLICY)
    if batch.responses:  # first (idempotent), so examples resolved now already carry them
        await store.add([], batch.responses)
    already = await store.stored(e.example_id for e in batch.examples)
    fresh = [e for e in batch.examples if e.example_id not in already]
    statuses = await store.statuses(
        h.alert_id for e in fresh for h in e.heads.values() if h.alert_id)
    fresh = [with_responses(e, statuses) for e in fresh]
    await produce_all(
        [examples_topic.send(key=e.user_id.encode(), value=encode(e)) for e in fresh])
    if fresh:
        batch.counts["stored"] = await store.add(fresh)
    # State last: if we crash before this, the redelivered batch resolves the same predictions.
    # A table write goes to the changelog partition of the event it is tied to: any of the
    # batch's events from the same partition number (the inputs are co-partitioned).
    anchor = partition_anchors(events)
    for user_id, state in batch.states.items():
        with as_current(anchor[messages[batch.last_for_user[user_id]].partition]):
            users_table[user_id] = state
    save_progress(progress_table, messages, events, extra=lambda partition, after: {
        **after, "max_ts": batch.max_ts.get(partition, after.get("max_ts"))})
    report_batch(batch, fresh)
    if batch.invalid:
        log.warning("feedback.invalid_input", **batch.invalid)
    log.info("feedback.batch", messages=len(events), responses=len(batch.responses),
             pending_users=len(app.timers), **batch.counts)
    return batch


@app.agent(inputs)
async def label_predictions(stream: StreamT) -> None:
    store = StoreThread(settings.feedback_db)  # SQLite's fsync off the event loop
    try:
        await run_acked_batches(
            app, stream, settings.batch_max_events, settings.batch_within_s,
            SkippedInput(next_offset, bootstrap_servers(settings.broker_url),
                         settings.kafka_client_kwargs()),
            lambda events, messages: process_batch(store, events, messages),
            failure="feedback.batch_failed", metrics=FEEDBACK, tail_watch=app.tail_watch,
        )
    finally:
        store.close()


@app.timer(interval=LAG_REFRESH_S)
async def report_consumer_lag() -> None:
    await report_lag(app, {TOPICS.events, TOPICS.scores, TOPICS.responses}, next_offset,
                     FEEDBACK)


@app.timer(interval=TAIL_CHECK_S)
async def redeliver_tails() -> None:
    await redeliver_dropped_tails(app, app.tail_watch,
                                  {TOPICS.events, TOPICS.scores, TOPICS.responses}, next_offset)


@app.command(
    option("--since", type=int, default=None, help="resolved at or after (event time, ms)"),
    option("--model-version", type=int, default=None, help="only this model version"),
)
async def export(self: object, since: int | None, model_version: int | None) -> None:
    """Print the stored examples as JSON lines (with every response known now)."""
    with FeedbackStore(settings.feedback_db) as store:
        for example in store.examples(since=since, model_version=model_version):
            print(orjson.dumps(example.model_dump(mode="json")).decode())


def main(argv: list[str]) -> None:
    """`intentstream feedback [faust args]`; no args: run the sidecar worker."""
    args = argv or ["worker", "-l", settings.log_level]
    if args[0] == "worker" and not any(a.startswith(("--with", "--web")) for a in args):
        # Faust's worker command turns the web server on whatever the app's settings say; with
        # the scoring worker on the same host both would bind port 6066.
        args = ["worker", "--without-web", *args[1:]]
    sys.argv = [f"{sys.argv[0]} feedback", *args]
    app.main()
