"""The one configuration object. Only this module reads the environment (the model code that
runs inside Triton, triton_models/ and what export copies beside it, reads its own).

Every knob is an env var `INTENTSTREAM_<NAME>` (or a CLI option that overrides it). Broker
differences live in `broker_profile`: `kafka` (production, Apache Kafka) or `embedded` (the
Tansu broker used for the demo and the tests). Nothing else in the code knows which broker it
talks to; `faust_settings()` is the only place the profile turns into behaviour.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.core.alerts import AlertPolicy
from streams.core.clock import ClockPolicy, SilenceSchedule
from streams.core.labelling import LabelPolicy
from streams.core.privacy import PrivacyPolicy
from streams.core.sessions import SessionPolicy
from streams.core.silence import TimerPolicy
from streams.core.timeunits import DAY_MS, HOUR_MS

if TYPE_CHECKING:  # faust is the serving extra's; settings work without it (train, replay)
    from faust.types.auth import CredentialsT

BrokerProfile = Literal["kafka", "embedded"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
TableStore = Literal["memory://", "rocksdb://"]

# Why each embedded adjustment exists: docs/broker.md.
EMBEDDED_BROKER_OVERRIDES: dict[str, Any] = {
    # Tansu answers ListOffsets "latest" with the start of the last batch + 1; one record per
    # batch makes end offsets right, so changelog recovery does not stop early.
    "producer_max_batch_size": 1,
    # Tansu holds a new group generation for half the session timeout: keep joins short.
    "broker_session_timeout": 10,
    "broker_heartbeat_interval": 1,
    # Tansu holds a waiting fetch for its full max wait even when data arrives (Faust's is a
    # hard-coded 1.5 s): short waits keep event-to-score latency the pipeline's own. Taken by
    # streams/runtime/faust_base.py, not by Faust.
    "fetch_max_wait_ms": 20,
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTENTSTREAM_", frozen=True, extra="ignore")

    # --- broker and topics -------------------------------------------------------------------
    app_id: str = "intentstream"
    broker_url: str = Field("kafka://127.0.0.1:9092", description="faust broker URL(s)")
    broker_profile: BrokerProfile = "kafka"
    partitions: int = Field(4, ge=1, description="partitions of source, output and table topics")
    replication_factor: int = Field(1, ge=1)
    # Faust's defaults. A SIGKILLed worker keeps its partitions until its session times out;
    # shorter finds it sooner, at more heartbeats (the embedded profile sets 10 s / 1 s).
    broker_session_timeout_s: float = Field(
        60.0, gt=0, description="consumer group session timeout (Kafka profile)")
    broker_heartbeat_interval_s: float = Field(3.0, gt=0)
    events_topic: str = "shop.events"
    dlq_topic: str = "shop.events.dlq"
    scores_topic: str = "intent.scores"
    alerts_intent_topic: str = "alerts.intent"
    alerts_churn_topic: str = "alerts.churn"
    # Compacted: the latest score per user, for consumers who build their own view
    # (streams/worker/lookup.py writes it). Unset: named after the scores topic, its last
    # part `latest` (intent.scores -> intent.latest), so apps with their own topics get
    # their own (streams.runtime.topics.latest_topic).
    latest_topic: str | None = None
    # The outputs have their own producer (streams/runtime/outputs.py): a micro-batch's scores
    # leave in a few requests, whatever limit the broker profile puts on Faust's producer.
    output_batch_bytes: int = Field(
        262_144, ge=1, description="bytes per output partition per produce request")

    # --- input contract ----------------------------------------------------------------------
    max_event_bytes: int = Field(16_384, ge=256, description="larger raw events go to the DLQ")

    # --- per-user sessions (event time) ------------------------------------------------------
    session_gap_s: float = Field(1800, gt=0, description="inactivity gap that closes a session")
    session_max_span_s: float = Field(4 * 3600, gt=0, description="longest session before a split")
    session_max_events: int = Field(64, ge=1, description="events kept per session (newest)")
    session_max_chars: int = Field(1200, ge=64, description="rendered text length (newest kept)")
    max_future_skew_s: float = Field(
        3600, ge=0, description="event time this far past the message timestamp goes to the DLQ"
    )
    min_event_time: str = Field(
        "2000-01-01", description="earliest plausible event time (ISO-8601); before: DLQ")
    max_event_time: str = Field(
        "2100-01-01", description="latest plausible event time (ISO-8601, exclusive)")
    dedup_event_ids: int = Field(
        128, ge=1, description="event ids remembered per user to spot producer re-sends"
    )

    # --- micro-batching and scoring ----------------------------------------------------------
    batch_max_events: int = Field(1000, ge=1, description="events taken per micro-batch")
    # Short: while a batch is scored the next one gathers in the consumer's queue, so batches
    # grow with load anyway, and Faust's `take` waits this long after every batch (a longer
    # cycle gathers more texts, which take longer to score). Not shorter: refilling a full batch
    # from Faust's queue takes longer, and a batch that times out unfilled is never merged.
    # The runs behind 20 ms: docs/benchmarks.md.
    batch_within_s: float = Field(0.02, gt=0, description="longest wait to fill a micro-batch")
    # Under backlog a user's events should collapse into one score however deep the backlog:
    # full micro-batches are merged while they hold few users (texts stay bounded, see
    # streams.runtime.agent_io.catching_up); 1 turns it off.
    batch_catch_up: int = Field(
        8, ge=1, description="under backlog, micro-batches grow to this many × batch_max_events")
    # Longer than BATCH_WITHIN_S: refilling a full batch from the consumer's queue takes Faust
    # tens of ms, and a merge given up early costs coalescing under backlog.
    batch_catch_up_wait_s: float = Field(
        0.05, gt=0, description="under backlog, how long a merge waits for the next full batch")
    # host:port, or host1:port,host2:port; a name resolving to several addresses (a headless
    # Service) is several replicas, requests going round robin (inference/replicas.py).
    triton_url: str = "127.0.0.1:8001"
    triton_refresh_s: float = Field(
        30.0, ge=0, description="seconds between resolutions of TRITON_URL to replicas; 0: once")
    triton_model: str = "intent"
    score_max_batch: int = Field(32, ge=1, description="texts per Triton request")
    # Requests a micro-batch is split into at least, sent at once: on CPU, instances with a
    # core each scoring a part beat one instance on all cores (its threads wait on each other
    # whenever another process takes a core). 0 asks Triton how many instances it serves.
    score_concurrency: int = Field(
        0, ge=0, description="Triton requests per micro-batch at least; 0: served instances")
    score_timeout_s: float = Field(60.0, gt=0)
    # Short: a retry is one cheap request, and a long cap leaves a recovered Triton idle.
    score_retry_max_s: float = Field(5.0, gt=0, description="cap of the retry backoff")
    score_max_attempts: int = Field(
        3, ge=1, description="tries of a text Triton rejects before it is dead-lettered"
    )
    # The cascade (streams/core/cascade.py): the text network runs only where the session holds
    # free text it has not read, or the served version's policy asks for it; off, every event
    # and final score runs it (silence re-scores of an unchanged text still skip it).
    score_cascade: bool = Field(
        True, description="run the text network only where the text can change the answer")

    # --- alerts (streams/core/alerts.py) ----------------------------------------------------------
    alert_intent_threshold: float = Field(0.6, ge=0, le=1, description="p(strong) to alert")
    alert_churn_threshold: float = Field(0.6, ge=0, le=1, description="p(churn) to alert")
    alert_cooldown_s: float = Field(6 * 3600, ge=0, description="per user and head, event time")
    alert_explore_rate: float = Field(0.05, ge=0, le=0.5, description="near-threshold flips")
    alert_explore_band: float = Field(0.1, ge=0, le=0.5)
    alert_cart_past_cooldown: bool = Field(
        False, description="an abandoned cart (a session closed with items in its cart, no "
        "purchase) alerts once per session even within the intent cooldown; off: it is the "
        "session's final intent alert when the usual rules send one (docs/silence.md)")
    alert_seed: str = "intentstream"

    # --- feedback sidecar (a second Faust app) ----------------------------------------------
    feedback_app_id: str = "intentstream-feedback"
    alert_responses_topic: str = "alerts.responses"
    feedback_topic: str = "feedback.examples"
    feedback_db: Path = Field(Path("var/feedback.sqlite"), description="labelled examples store")
    label_horizon_h: float = Field(24.0, gt=0, description="purchase within this after window")
    churn_days: float = Field(7.0, gt=0, description="silence this long after window = churn")
    watermark_lateness_s: float = Field(60.0, ge=0, description="event-time slack for timers")
    # --- event-time timers: on-time session close, silence (streams/core/silence.py) --------
    watermark_idle_s: float | None = Field(
        30.0, ge=0, description="wall seconds an input partition must be quiet (no record, no "
        "lag) before its event-time clock runs at wall speed, so a quiet shop still closes "
        "sessions and reaches silence milestones; unset (null): only events move the clock")
    silence_milestone_days: tuple[float, ...] = Field(
        (1, 3, 7, 14, 30, 60, 90, 120, 180, 270, 365), description="days after a user's last "
        "activity at which the user's last session is scored again, FEATURES as of the "
        "milestone (JSON list, increasing; fractions allowed); a clock that jumps past several "
        "scores the latest. Past 90 days too: a churn score ranks customers silent for months "
        "by how long, as 'days since the last order' does")
    timer_tick_s: float = Field(
        1.0, gt=0, description="how often the worker advances idle partitions' clocks and "
        "fires due timers between batches (each batch fires its own partitions' timers too)")

    # --- privacy (streams/core/privacy.py) --------------------------------------------------------
    scrub_pii: bool = Field(True, description="mask e-mails, phones, cards, addresses in text")
    pseudonym_key: SecretStr | None = Field(
        None, description="when set, user ids in state and outputs are keyed hashes (HMAC)"
    )

    # --- transport security --------------------------------------------------------------------
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle; default: system CAs")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (mTLS)")
    kafka_ssl_keyfile: Path | None = None
    triton_ssl: bool = Field(False, description="gRPC over TLS to Triton")
    triton_ssl_root_certs: Path | None = None
    triton_ssl_private_key: Path | None = Field(None, description="client key (mTLS)")
    triton_ssl_cert_chain: Path | None = Field(None, description="client certificate (mTLS)")

    # --- observability -------------------------------------------------------------------------
    metrics_port: int = Field(9108, ge=0, le=65535, description="worker's /metrics; 0: off")
    feedback_metrics_port: int = Field(9109, ge=0, le=65535, description="sidecar's; 0: off")
    stall_s: float = Field(
        120.0, gt=0, description="unhealthy: lag > 0 and no batch completed for this long"
    )
    # --- per-user lookups (GET /users/{id} on METRICS_PORT, streams/worker/lookup.py) ---------
    lookup_host: str = Field(
        "127.0.0.1", description="host the other workers reach this worker's METRICS_PORT on "
        "to forward a lookup (in Kubernetes: the pod's name in the headless Service)")
    lookup_timeout_s: float = Field(5.0, gt=0, description="a lookup's answer or forward")
    lookup_latest: bool = Field(
        True, description="keep each user's latest score (the `latest` table read by GET "
        "/users/{id}, and the compacted intent.latest topic), written by the scoring agent "
        "with each batch's scores; false: lookups answer without scores, intent.latest stays "
        "empty, and a batch writes one table entry and one record less per score")

    # --- local state ---------------------------------------------------------------------------
    data_dir: Path = Path("var")
    # A process keeps its tables in DATA_DIR/<app id>[/WORKER_ID]. RocksDB locks its directory:
    # without a WORKER_ID a RocksDB worker takes the first free slot-N there (a lock held for
    # its life: streams/worker/app.py); a sidecar beside another needs its own WORKER_ID.
    worker_id: str = Field("", pattern=r"^[A-Za-z0-9._-]*$",
                           description="this process's sub-directory of the app's data dir")
    # memory: every start, and every partition a rebalance moves, replays the table's whole
    # changelog. rocksdb: tables on disk with the changelog offset they hold, so a restarted
    # process replays only the tail (docs/benchmarks.md, "State store").
    table_store: TableStore = Field("rocksdb://", description="memory:// or rocksdb://")
    table_standby_replicas: int = Field(
        1, ge=0, description="other workers keeping a warm copy of each table partition")
    # Each partition of each table is its own RocksDB database; Faust's defaults (a 2 GiB block
    # cache and 3 x 64 MB write buffers each) would let memory grow with the state.
    rocksdb_block_cache_mb: int = Field(16, ge=1, description="block cache per table partition")
    rocksdb_write_buffer_mb: int = Field(8, ge=1, description="write buffer per table partition")
    log_level: str = "info"

    @model_validator(mode="after")
    def _event_time_bounds_parse(self) -> Settings:
        lo, hi = self.event_time_bounds()
        if lo >= hi:
            raise ValueError("min_event_time must be before max_event_time")
        return self

    @model_validator(mode="after")
    def _span_covers_gap(self) -> Settings:
        if self.session_max_span_s < self.session_gap_s:
            raise ValueError("session_max_span_s must be >= session_gap_s")
        return self

    @model_validator(mode="after")
    def _sasl_has_credentials(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError("SASL needs kafka_sasl_username and kafka_sasl_password")
        return self

    @property
    def gap_ms(self) -> int:
        return int(self.session_gap_s * 1000)

    @property
    def max_span_ms(self) -> int:
        return int(self.session_max_span_s * 1000)

    def session_policy(self) -> SessionPolicy:
        return SessionPolicy(
            gap_ms=self.gap_ms,
            max_span_ms=self.max_span_ms,
            max_events=self.session_max_events,
            max_chars=self.session_max_chars,
            max_future_ms=int(self.max_future_skew_s * 1000),
            remembered_ids=self.dedup_event_ids,
            ts_bounds=self.event_time_bounds(),
        )

    def event_time_bounds(self) -> tuple[int, int]:
        """[lo, hi) epoch ms from MIN_EVENT_TIME / MAX_EVENT_TIME (UTC when no zone)."""
        return (_iso_ms(self.min_event_time), _iso_ms(self.max_event_time))

    def clock_policy(self) -> ClockPolicy:
        idle = self.watermark_idle_s
        return ClockPolicy(lateness_ms=int(self.watermark_lateness_s * 1000),
                           idle_after_ms=None if idle is None else int(idle * 1000))

    def timer_policy(self) -> TimerPolicy:
        return TimerPolicy.of(self.session_policy(), SilenceSchedule(self.silence_milestone_days))

    def label_policy(self) -> LabelPolicy:
        return LabelPolicy(
            horizon_ms=int(self.label_horizon_h * HOUR_MS),
            churn_after_ms=int(self.churn_days * DAY_MS),
        )

    def alert_policy(self) -> AlertPolicy:
        return AlertPolicy(
            intent_threshold=self.alert_intent_threshold,
            churn_threshold=self.alert_churn_threshold,
            cooldown_ms=int(self.alert_cooldown_s * 1000),
            explore_rate=self.alert_explore_rate,
            explore_band=self.alert_explore_band,
            cart_past_cooldown=self.alert_cart_past_cooldown,
            seed=self.alert_seed,
        )

    def privacy_policy(self) -> PrivacyPolicy:
        key = self.pseudonym_key
        return PrivacyPolicy(
            scrub_pii=self.scrub_pii,
            # An empty value (e.g. an unset compose variable) means no pseudonyms.
            pseudonym_key=key.get_secret_value().encode("utf-8") if key else None,
        )

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        if not self.kafka_security_protocol.endswith("SSL"):
            return None
        context = ssl.create_default_context(
            cafile=None if self.kafka_ssl_cafile is None else str(self.kafka_ssl_cafile)
        )
        if self.kafka_ssl_certfile is not None:
            context.load_cert_chain(
                str(self.kafka_ssl_certfile),
                None if self.kafka_ssl_keyfile is None else str(self.kafka_ssl_keyfile),
            )
        return context

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Security keyword arguments for aiokafka's consumer, producer and admin client."""
        kwargs: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.endswith("SSL"):
            kwargs["ssl_context"] = self.kafka_ssl_context()
        if self.kafka_security_protocol.startswith("SASL_"):
            assert self.kafka_sasl_password is not None  # checked by the validator
            kwargs.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=self.kafka_sasl_password.get_secret_value(),
            )
        return kwargs

    def faust_credentials(self) -> CredentialsT | None:
        import faust  # the serving extra: only its apps ask for credentials

        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return None
        if protocol == "SSL":
            return faust.SSLCredentials(self.kafka_ssl_context())
        assert self.kafka_sasl_password is not None  # checked by the validator
        return faust.SASLCredentials(
            username=self.kafka_sasl_username,
            password=self.kafka_sasl_password.get_secret_value(),
            mechanism=self.kafka_sasl_mechanism,
            ssl_context=self.kafka_ssl_context(),  # None for SASL_PLAINTEXT
        )

    def triton_client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for tritonclient's gRPC client (TLS when configured)."""
        if not self.triton_ssl:
            return {}

        def read(path: Path | None) -> bytes | None:
            return None if path is None else path.read_bytes()

        return {
            "ssl": True,
            "root_certificates": read(self.triton_ssl_root_certs),
            "private_key": read(self.triton_ssl_private_key),
            "certificate_chain": read(self.triton_ssl_cert_chain),
        }

    def app_data_dir(self, app_id: str) -> Path:
        """Where this process of `app_id` keeps its tables (Faust's datadir)."""
        return self.data_dir / app_id / self.worker_id if self.worker_id else self.data_dir / app_id

    def table_options(self) -> dict[str, Any]:
        """Options for each table's store: RocksDB's memory caps (none for memory://)."""
        if self.table_store != "rocksdb://":
            return {}
        mb = 1024 * 1024
        return {"block_cache_size": self.rocksdb_block_cache_mb * mb,
                "write_buffer_size": self.rocksdb_write_buffer_mb * mb,
                "max_write_buffer_number": 2}

    def faust_settings(self) -> dict[str, Any]:
        """Keyword arguments for `IntentstreamFaustApp` (streams/runtime/faust_base.py),
        derived from these settings and the profile."""
        conf: dict[str, Any] = {
            "broker": self.broker_url,
            "store": self.table_store,
            "table_standby_replicas": self.table_standby_replicas,
            "topic_partitions": self.partitions,
            "topic_replication_factor": self.replication_factor,
            "datadir": str(self.app_data_dir(self.app_id)),
            "processing_guarantee": "at_least_once",
            "consumer_auto_offset_reset": "earliest",
            "broker_session_timeout": self.broker_session_timeout_s,
            "broker_heartbeat_interval": self.broker_heartbeat_interval_s,
            "web_enabled": False,
            "Worker": "streams.runtime.logs:QuietWorker",  # root logger kept at its level
        }
        credentials = self.faust_credentials()
        if credentials is not None:
            conf["broker_credentials"] = credentials
        if self.broker_profile == "embedded":
            conf.update(EMBEDDED_BROKER_OVERRIDES)
        return conf


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def _iso_ms(text: str) -> int:
    """Epoch ms of an ISO-8601 date or time; a value without a zone is read as UTC."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)
