"""Per-user lookups: `GET /users/{user_id}` on every worker's HTTP port (METRICS_PORT), and the
compacted `intent.latest` topic (issue #26 item 4; docker/OPS.md "Per-user lookup").

The answer (`UserView`, schema `streams/runtime/schemas/user_view.v1.json`) is the user's
latest open and closed score records as on `intent.scores`, the open session's summary, the
lifetime profile and the customer value of the latest score. Only the worker that owns the
user's input partition answers from its tables; any other forwards the request to it once.

- Where a user lives: the input is keyed by the raw user id with the producer's default
  partitioner (murmur2), so the partition is that hash of the id asked for, not of the table
  key (the tables serialise keys as JSON, and with PSEUDONYM_KEY they hold the pseudonym).
- Who owns it: every member learns the owner of each input partition from Faust's assignor
  (`external_topics_metadata`, keyed by each member's canonical URL, which this module sets
  to `http://LOOKUP_HOST:METRICS_PORT`).
- Never a wrong answer: while a rebalance is under way or tables recover, or when the
  partition is not (or no longer) this worker's, the answer is 503 with Retry-After; a
  forwarded request is answered or refused, never forwarded again.
- The latest score is kept where the record is in hand: the scoring agent, right after a
  batch's (or a timer round's) scores are produced, calls `remember_latest`, which writes each
  record into the changelog-backed `latest` table (the changelog partition of the user's
  input) and onto `intent.latest` (same key, same partition number as on `intent.scores`),
  where compaction keeps the newest per user; both are acked before the batch is. (It was a
  second agent reading `intent.scores` back, which cost about 30% of the drain.)

The pure parts (partition, key, view, routing decision) come first, then the Faust wiring.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import faust
import orjson
import structlog
from aiokafka.partitioner import murmur2
from pydantic import BaseModel, ConfigDict, Field

from streams.core.privacy import PrivacyPolicy, pseudonymise
from streams.core.records import IntentScore
from streams.core.sessions import UserState
from streams.runtime import metrics
from streams.runtime.agent_io import as_current, produce_all
from streams.runtime.topics import latest_topic
from streams.worker.app import app, outputs, sessions_table, settings

log = structlog.get_logger("intentstream.lookup")

USERS_PATH = "/users/"
FORWARDED_HEADER = "X-Intentstream-Forwarded"  # set on a forwarded lookup: answer, never pass on
USER_VIEW_SCHEMA_VERSION = 1


# --- the answer ---------------------------------------------------------------------------------
class SessionSummary(BaseModel):
    """The user's open session, without its events or text."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    start: int = Field(description="event time of the session's earliest event, epoch ms")
    end: int = Field(description="event time of its latest event, epoch ms")
    n_events: int = Field(description="events absorbed so far")
    last_event_id: str
    kinds: dict[str, int] = Field(default_factory=dict, description="events by type")
    cart_value: float = Field(0.0, description="added minus removed, at the items' prices")
    checkout: bool = Field(False, description="a cart/checkout page or a purchase was reached")


class ProfileView(BaseModel):
    """Lifetime aggregates of the user (streams/core/features.py `Profile`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    first_seen: int
    last_seen: int
    sessions: int
    orders: int
    spend: float
    first_order: int | None = None
    last_order: int | None = None
    cart_adds: int = 0
    abandoned_carts: int = 0
    complaints: int = 0


class LatestScores(BaseModel):
    model_config = ConfigDict(frozen=True)

    open: IntentScore | None = Field(None, description="the last score of an open session")
    closed: IntentScore | None = Field(
        None, description="the last score of a closed session (its final or a silence score)")


class CustomerValue(BaseModel):
    """BG/NBD and Gamma-Gamma, as served with the latest score (docs/customer_value.md)."""

    model_config = ConfigDict(frozen=True)

    p_alive: float | None = None
    expected_orders: float | None = None
    expected_value: float | None = None
    prediction_id: str = Field(description="the score these values came with")
    as_of: int | None = Field(None, description="event time they are as of, epoch ms")


class UserView(BaseModel):
    """`GET /users/{user_id}`: what the owning worker holds about one user."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = USER_VIEW_SCHEMA_VERSION
    user_id: str = Field(description="the id as the outputs carry it (the pseudonym when user "
                                     "ids are pseudonymised)")
    partition: int = Field(description="the user's input partition")
    served_by: str = Field(description="the owning worker's URL")
    latest: LatestScores
    session: SessionSummary | None = Field(None, description="the open session, if any")
    pending_sessions: int = Field(0, description="closed sessions whose final score is not "
                                                 "on the topic yet")
    profile: ProfileView | None = None
    customer_value: CustomerValue | None = Field(
        None, description="from the latest score, when the served model has values")


# --- pure parts ---------------------------------------------------------------------------------
def input_partition(user_id: str, partitions: int) -> int:
    """The partition the producer's default partitioner (Kafka's and aiokafka's: murmur2 of
    the key, positive, modulo the partition count) puts a record keyed by `user_id` on."""
    return (murmur2(user_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


def stored_key(user_id: str, privacy: PrivacyPolicy) -> str:
    """The key the tables and outputs hold the user under: the pseudonym when configured."""
    key = privacy.pseudonym_key
    return user_id if key is None else pseudonymise(user_id, key)


def with_score(latest: Mapping[str, Any] | None, record: Mapping[str, Any]) -> dict[str, Any]:
    """The `latest` table's value after one more score record: the last open and the last
    closed record, and which of them came last, in topic order (a user's scores share one
    partition, so its order is the order they were produced in)."""
    slot = "closed" if record.get("closed") else "open"
    return {"open": None, "closed": None, **(latest or {}), slot: dict(record), "last": slot}


def newest(latest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record that came last on the topic."""
    return latest.get(latest.get("last") or "open")


def session_summary(session: Mapping[str, Any] | None) -> SessionSummary | None:
    if not session:
        return None
    stats = session.get("stats") or {}
    return SessionSummary(
        session_id=session["session_id"], start=session["start"], end=session["end"],
        n_events=session["n_events"], last_event_id=session["last_event_id"],
        kinds=dict(stats.get("kinds", {})), cart_value=float(stats.get("cart_value", 0.0)),
        checkout=bool(stats.get("checkout", False)))


def customer_value_of(record: Mapping[str, Any] | None) -> CustomerValue | None:
    if not record or all(record.get(name) is None
                         for name in ("p_alive", "expected_orders", "expected_value")):
        return None
    return CustomerValue(p_alive=record.get("p_alive"),
                         expected_orders=record.get("expected_orders"),
                         expected_value=record.get("expected_value"),
                         prediction_id=record["prediction_id"], as_of=record.get("as_of"))


def user_view(key: str, partition: int, served_by: str, state: UserState | None,
              latest: Mapping[str, Any] | None) -> UserView | None:
    """What the owner answers; None for a user it holds nothing about (404)."""
    if state is None and latest is None:
        return None
    state = state or {"current": None, "pending": []}
    latest = latest or {}
    profile = state.get("profile")
    return UserView(
        user_id=key, partition=partition, served_by=served_by,
        latest=LatestScores(open=latest.get("open"), closed=latest.get("closed")),
        session=session_summary(state.get("current")),
        pending_sessions=len(state.get("pending") or []),
        profile=None if profile is None else ProfileView.model_validate(profile),
        customer_value=customer_value_of(newest(latest)))


def owner_of(distribution: Mapping[str, Mapping[str, Sequence[int]]], topic: str,
             partition: int) -> str | None:
    """The URL of the member the assignor gave `topic`'s `partition`, if any."""
    for url, topics in distribution.items():
        if partition in topics.get(topic, ()):
            return url
    return None


@dataclass(frozen=True, slots=True)
class Route:
    action: Literal["answer", "forward", "unavailable"]
    detail: str  # the URL to forward to, or why the request cannot be answered now


def route(ready: tuple[bool, str], owned: bool, owner: str | None, self_url: str,
          forwarded: bool) -> Route:
    """Answer here, forward to the owner, or refuse for now (503): never a guess."""
    if not ready[0]:
        return Route("unavailable", ready[1])
    if owned:
        return Route("answer", self_url)
    if forwarded:  # the forwarder thought we own it: ownership is moving
        return Route("unavailable", "the partition is moving (forwarded to a non-owner)")
    if owner is None or owner.rstrip("/") == self_url.rstrip("/"):
        return Route("unavailable", "no owner known for the partition yet")
    return Route("forward", owner)


def user_id_from_path(path: str) -> str | None:
    """`/users/u%2F42` → `u/42`; None for an empty id or a deeper path."""
    rest = path[len(USERS_PATH):] if path.startswith(USERS_PATH) else ""
    user_id = urllib.parse.unquote(rest)
    return user_id if rest and "/" not in rest else None


# --- Faust wiring -------------------------------------------------------------------------------
PRIVACY = settings.privacy_policy()
SELF_URL = f"http://{settings.lookup_host}:{settings.metrics_port}"

# user key (as on intent.scores) -> {"open": record | None, "closed": record | None,
#                                     "last": "open" | "closed"} (`with_score`)
latest_table = app.Table(
    "latest", default=None, partitions=settings.partitions,
    schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
    help="per-user latest open and closed score records (GET /users/{id})")
latest_out = outputs.topic(latest_topic(settings))


async def remember_latest(records: Sequence[IntentScore], values: Sequence[bytes],
                          partition_of: Callable[[str], int],
                          anchor_of: Callable[[int], Any]) -> None:
    """Scores just produced (`values`: their records as sent) into the `latest` table and
    onto `intent.latest`, at the partition number each went to on `intent.scores`; the table
    write goes to the changelog of that input partition (`anchor_of`), which Faust flushes
    before it commits the batch; the `intent.latest` sends are acked here."""
    if not settings.lookup_latest:  # LOOKUP_LATEST=false: lookups answer without scores
        return
    sends = []
    for record, value in zip(records, values, strict=True):
        key, partition = record.user_id, partition_of(record.user_id)
        with as_current(anchor_of(partition)):
            latest_table[key] = with_score(latest_table.get(key), orjson.loads(value))
        sends.append(latest_out.send(key=key.encode(), value=value, partition=partition))
    await produce_all(sends)


class LoopRef:
    """The app's event loop once the app has started (None before). The HTTP server's thread
    hands every read of Faust's state to it: some of that state is built lazily, and built
    from another thread it never starts (the first /ready poll created the table recovery
    service there, and the worker hung before joining its group)."""

    loop: asyncio.AbstractEventLoop | None = None


LOOP = LoopRef()
STARTING = (False, "starting: the app has not started yet")


@app.task
async def _remember_loop() -> None:
    LOOP.loop = asyncio.get_running_loop()


def tables_ready() -> tuple[bool, str]:
    """Readiness of this worker's tables (on the app's loop)."""
    if app.should_stop:  # its tables close while the HTTP server still answers
        return False, "stopping"
    if app.rebalancing:
        return False, "rebalancing: partitions are moving"
    if app.in_recovery:
        return False, "recovering tables from their changelogs"
    if not app.tables.recovery.completed.is_set():
        return False, "not yet assigned partitions"
    return True, "tables ready"


def owned_partitions() -> set[int]:
    return {tp.partition for tp in app.consumer.assignment()
            if tp.topic == settings.events_topic}


async def decide(user_id: str, partition: int, forwarded: bool) -> tuple[Route, UserView | None]:
    """On the app's loop, in one step: where the request goes, and the answer if it is ours
    (so ownership and the tables are read at the same moment)."""
    owned = partition in owned_partitions()
    owner = owner_of(app.assignor.external_topics_metadata(), settings.events_topic, partition)
    decision = route(tables_ready(), owned, owner, SELF_URL, forwarded)
    if decision.action != "answer":
        return decision, None
    key = stored_key(user_id, PRIVACY)
    return decision, user_view(key, partition, SELF_URL, sessions_table.get(key),
                               latest_table.get(key))


async def _tables_ready() -> tuple[bool, str]:
    return tables_ready()


def readiness() -> tuple[bool, str]:
    """/ready's question to the app, asked from the HTTP server's thread."""
    loop = LOOP.loop
    if loop is None:
        return STARTING
    try:
        return asyncio.run_coroutine_threadsafe(_tables_ready(), loop).result(
            settings.lookup_timeout_s)
    except TimeoutError:
        return False, "the worker did not answer in time"


def unavailable(reason: str) -> metrics.Response:
    return metrics.json_response(503, {"error": "unavailable", "reason": reason},
                                 metrics.RETRY_AFTER_S)


def forward(url: str, user_id: str) -> metrics.Response:
    """Ask the owner once; its answer is relayed as it is (status, body, Retry-After)."""
    target = f"{url.rstrip('/')}{USERS_PATH}{urllib.parse.quote(user_id, safe='')}"
    request = urllib.request.Request(target, headers={FORWARDED_HEADER: "1"})
    try:
        with urllib.request.urlopen(request, timeout=settings.lookup_timeout_s) as resp:
            return "200 OK", [("Content-Type", "application/json")], resp.read()
    except urllib.error.HTTPError as exc:
        headers = [("Content-Type", "application/json")]
        if exc.headers.get("Retry-After"):
            headers.append(("Retry-After", exc.headers["Retry-After"]))
        return f"{exc.code} {exc.reason}", headers, exc.read()
    except (OSError, ValueError) as exc:
        return unavailable(f"the owner {url} did not answer: {getattr(exc, 'reason', exc)}")


def handle_lookup(environ: dict[str, Any]) -> metrics.Response:
    """`GET /users/{user_id}` (the HTTP server's thread; the tables are read on the loop)."""
    if environ.get("REQUEST_METHOD", "GET") != "GET":
        return metrics.json_response(405, {"error": "method not allowed"})
    user_id = user_id_from_path(environ.get("PATH_INFO", ""))
    if user_id is None:
        return metrics.json_response(404, {"error": "no such path: /users/{user_id}"})
    partition = input_partition(user_id, settings.partitions)
    forwarded = bool(environ.get("HTTP_" + FORWARDED_HEADER.upper().replace("-", "_")))
    loop = LOOP.loop
    if loop is None:
        return unavailable(STARTING[1])
    try:
        decision, view = asyncio.run_coroutine_threadsafe(
            decide(user_id, partition, forwarded), loop).result(settings.lookup_timeout_s)
    except TimeoutError:
        return unavailable("the worker did not answer in time")
    if decision.action == "forward":
        return forward(decision.detail, user_id)
    if decision.action == "unavailable":
        return unavailable(decision.detail)
    if view is None:
        return metrics.json_response(404, {"error": "unknown user", "partition": partition})
    return "200 OK", [("Content-Type", "application/json")], \
        orjson.dumps(view.model_dump(mode="json"))


def serve_lookups() -> None:
    """Advertise this worker's lookup URL to the group, and serve /users and /ready on the
    metrics port. Runs at import, before the worker joins the group (the assignor sends the
    canonical URL in the join)."""
    if settings.metrics_port <= 0:
        return  # no HTTP port: nothing to serve or forward to
    app.conf.canonical_url = SELF_URL  # type: ignore[assignment]  # Faust takes a str
    metrics.add_route(metrics.WORKER_REGISTRY, USERS_PATH, handle_lookup)
    metrics.set_readiness(metrics.WORKER_REGISTRY, readiness)


serve_lookups()
