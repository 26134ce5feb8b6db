"""The durable store of labelled examples and alert responses: one SQLite file (WAL).

Idempotent by key: an example is stored once per `example_id` (= prediction_id), a response
once per `response_id` (`INSERT OR IGNORE`), so redelivery and restarts never duplicate a row.
A write commits with a full fsync before the sidecar acks its input, so an acked example is on
disk. Responses are kept apart and joined on read: one that arrives after its example was
written still shows up in `examples()`.

One writer process per file (the sidecar that owns it); readers (retraining) may open it at
any time, WAL lets them read while it writes. The sidecar reaches its store through
`StoreThread`: one thread of its own with its own connection, so a commit's fsync never blocks
the event loop (heartbeats, fetches, the other agents' work). Several sidecars in one group
each keep their own file: `union` / `read_stores` give the union of their examples, one per
`example_id` (a partition that moved between sidecars can leave the same example in two files).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from streams.core.feedback import AlertResponse, FeedbackExample, ResponseStatus, with_responses

_SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    example_id    TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    model_name    TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    window_end    INTEGER NOT NULL,
    resolved_at   INTEGER NOT NULL,
    record        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS examples_resolved_at ON examples (resolved_at);
CREATE TABLE IF NOT EXISTS responses (
    response_id TEXT PRIMARY KEY,
    alert_id    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    status      TEXT NOT NULL,
    ts          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_alert ON responses (alert_id);
"""
_STATUS_ORDER = {"delivered": 0, "clicked": 1, "converted": 2}
_SQL_VARS = 500  # ids per IN (...) query, under SQLite's variable limit
T = TypeVar("T")


class FeedbackStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)  # explicit transactions only
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a commit survives power loss
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writes ---------------------------------------------------------------------------

    def add(
        self, examples: Sequence[FeedbackExample], responses: Sequence[AlertResponse] = ()
    ) -> int:
        """Store examples and responses in one transaction; return how many examples were new."""
        with self._transaction():
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO examples VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(e.example_id, e.user_id, e.model_name, e.model_version, e.window.end,
                  e.resolved_at, e.model_dump_json()) for e in examples],
            )
            new_examples = self._db.total_changes - before
            self._db.executemany(
                "INSERT OR IGNORE INTO responses VALUES (?, ?, ?, ?, ?)",
                [(r.response_id, r.alert_id, r.user_id, r.status, r.ts) for r in responses],
            )
        return new_examples

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- reads ----------------------------------------------------------------------------

    def stored(self, example_ids: Iterable[str]) -> set[str]:
        """Those of these ids that are already in the store."""
        found: set[str] = set()
        for chunk in _chunks(list(example_ids)):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT example_id FROM examples WHERE example_id IN ({marks})", chunk)
            found.update(r[0] for r in rows)
        return found

    def statuses(self, alert_ids: Iterable[str]) -> dict[str, list[ResponseStatus]]:
        """alert_id -> the distinct statuses reported for it, in funnel order."""
        out: dict[str, set[ResponseStatus]] = defaultdict(set)
        for chunk in _chunks([a for a in alert_ids if a]):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT alert_id, status FROM responses WHERE alert_id IN ({marks})", chunk)
            for alert, status in rows:
                out[alert].add(status)
        return {a: sorted(s, key=_STATUS_ORDER.__getitem__) for a, s in out.items()}

    def examples(
        self, since: int | None = None, model_version: int | None = None
    ) -> list[FeedbackExample]:
        """Examples resolved at or after `since` (event time, ms), optionally of one model
        version, oldest first, each with every response stored so far."""
        query = "SELECT record FROM examples WHERE 1=1"
        args: list[int] = []
        if since is not None:
            query += " AND resolved_at >= ?"
            args.append(since)
        if model_version is not None:
            query += " AND model_version = ?"
            args.append(model_version)
        query += " ORDER BY resolved_at, example_id"
        examples = [FeedbackExample.model_validate_json(row[0])
                    for row in self._db.execute(query, args)]
        statuses = self.statuses(h.alert_id for e in examples for h in e.heads.values()
                                 if h.alert_id)
        return [with_responses(e, statuses) for e in examples]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM examples").fetchone()[0])


class StoreThread:
    """A `FeedbackStore` used from asyncio: every call runs on one dedicated thread, which opened
    the connection and is the only one to use it (SQLite connections belong to their thread).

    Calls are serialised in submission order, so a batch's writes and the next batch's reads see
    each other as they would inline. A cancelled await does not cancel the call: a write that
    started completes (idempotent, so the redelivered batch finds it)."""

    def __init__(self, path: Path) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedback-store")
        self._store = self._executor.submit(FeedbackStore, path).result()

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def add(
        self, examples: Sequence[FeedbackExample], responses: Sequence[AlertResponse] = ()
    ) -> int:
        return await self._call(self._store.add, list(examples), list(responses))

    async def stored(self, example_ids: Iterable[str]) -> set[str]:
        return await self._call(self._store.stored, list(example_ids))

    async def statuses(self, alert_ids: Iterable[str]) -> dict[str, list[ResponseStatus]]:
        return await self._call(self._store.statuses, list(alert_ids))

    def close(self) -> None:
        self._executor.submit(self._store.close).result()
        self._executor.shutdown()


def union(sources: Iterable[Iterable[FeedbackExample]]) -> list[FeedbackExample]:
    """Every example once per `example_id`, oldest first, with every response any copy knows.

    Copies of one id are the same prediction resolved from the same events (the labels are a
    function of the events, tests/e2e/test_feedback.py), but each store joins only the responses
    it consumed itself, so those are merged."""
    first: dict[str, FeedbackExample] = {}
    statuses: dict[str, set[ResponseStatus]] = defaultdict(set)
    for examples in sources:
        for example in examples:
            first.setdefault(example.example_id, example)
            for h in example.heads.values():
                if h.alert_id:
                    statuses[h.alert_id].update(h.responses)
    ordered = {a: sorted(s, key=_STATUS_ORDER.__getitem__) for a, s in statuses.items()}
    return sorted((with_responses(e, ordered) for e in first.values()),
                  key=lambda e: (e.resolved_at, e.example_id))


def read_stores(
    paths: Iterable[Path], since: int | None = None, model_version: int | None = None
) -> list[FeedbackExample]:
    """The union of the examples in several stores (one per sidecar), each id once.

    A path that does not exist is an error, not an empty store: a typo must not silently
    leave a sidecar's examples out of training."""
    lists = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"feedback store {path} does not exist")
        with FeedbackStore(Path(path)) as store:
            lists.append(store.examples(since=since, model_version=model_version))
    return union(lists)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), _SQL_VARS):
        yield items[i : i + _SQL_VARS]
