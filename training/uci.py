"""Real sessions: the UCI Online Shoppers Purchasing Intention data as events of our schema.

Data: Sakar, C.O., Polat, S.O., Katircioglu, M., Kastro, Y. (2019), "Real-time prediction of
online shoppers' purchasing intention using multilayer perceptron and LSTM recurrent neural
networks", Neural Computing and Applications 31, 6893-6908. UCI Machine Learning Repository,
licence CC BY 4.0: keep this attribution wherever the data or results from it are shown.

Each CSV row is one session of one store, summarised: how many Administrative, Informational
and ProductRelated pages were viewed and the total seconds spent on each kind. What we turn it
into, and what we cannot know:

- one `view` event per page, `page` = administrative / informational / product, `duration_s` =
  the kind's total seconds split evenly over its pages (per-page times are not recorded);
- in a fixed order, administrative → informational → product (the real order is not recorded),
  events spaced by their dwell so the session's timing is plausible; the worker's session policy
  then applies as it would live (newest 64 events kept, so the longest sessions lose their
  first pages; a session longer than the 4 h span is split and its last part is the window);
- a row with no page views at all (6 of 12,330) becomes one view of an `unknown` page;
- `Revenue` (the session ended in a purchase) is the label. Unlike our own labels it is about
  the same session, because that is what the data records.

BounceRates, ExitRates and PageValues are Google-Analytics aggregates over the pages visited,
not events a shop's stream carries (PageValues, the strongest column, is derived from the
value of pages that led to transactions). The headline variant leaves them out; a second
variant appends them to the text (`analytics_suffix`) to show what they add. Month, visitor type,
browser, region and traffic source are not events either and are left out of both.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from streams.core.sessions import SessionPolicy, render
from training.data import sessions_of

CSV_NAME = "online_shoppers_intention.csv"
PAGE_KINDS: tuple[tuple[str, str], ...] = (
    ("Administrative", "administrative"),
    ("Informational", "informational"),
    ("ProductRelated", "product"),
)
ANALYTICS = ("PageValues", "BounceRates", "ExitRates")
_MONTHS = {"Jan": 1, "Feb": 2, "Mar": 3, "Apr": 4, "May": 5, "June": 6, "Jun": 6, "Jul": 7,
           "Aug": 8, "Sep": 9, "Oct": 10, "Nov": 11, "Dec": 12}
_YEAR = 2017  # not in the data; only orders the timestamps, which the text does not show
TEST_SIZE = 0.3
SPLIT_SEED = 0


@dataclass(frozen=True, slots=True)
class UciSession:
    row: int
    events: tuple[dict[str, Any], ...]
    revenue: bool
    analytics: dict[str, float]  # the GA aggregates of ANALYTICS, kept out of the events


def read_rows(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def row_events(row: Mapping[str, str], index: int) -> list[dict[str, Any]]:
    """One UCI row as `ShopEvent` dicts of user `uci-<index>` (see the module notes)."""
    user = f"uci-{index:05d}"
    month = _MONTHS.get(row.get("Month", ""), 1)
    ts = int(datetime(_YEAR, month, 1, 12, tzinfo=UTC).timestamp() * 1000) + index * 1000
    events: list[dict[str, Any]] = []
    for column, page in PAGE_KINDS:
        count = int(float(row[column]))
        dwell = float(row[f"{column}_Duration"]) / count if count > 0 else 0.0
        for _ in range(count):
            events.append(_view(user, len(events), ts, page, dwell))
            ts += max(1000, int(dwell * 1000))
    if not events:
        events.append(_view(user, 0, ts, "unknown", None))
    return events


def _view(user: str, n: int, ts: int, page: str, dwell: float | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"event_id": f"{user}-{n:04d}", "user_id": user, "ts": ts,
                           "type": "view", "page": page}
    if dwell is not None:
        doc["duration_s"] = round(max(0.0, dwell), 1)
    return doc


def load_sessions(path: Path) -> list[UciSession]:
    rows = read_rows(path)
    return [
        UciSession(
            row=i,
            events=tuple(row_events(row, i)),
            revenue=row["Revenue"].strip().upper() in ("YES", "TRUE", "1"),
            analytics={name: float(row[name]) for name in ANALYTICS},
        )
        for i, row in enumerate(rows)
    ]


def analytics_suffix(analytics: Mapping[str, float]) -> str:
    return (
        f" | analytics: page value {analytics['PageValues']:.1f}, bounce rate "
        f"{analytics['BounceRates']:.3f}, exit rate {analytics['ExitRates']:.3f}"
    )


def session_text(session: UciSession, policy: SessionPolicy, *, with_analytics: bool) -> str:
    """The text the worker would score at the session's end (its last window), optionally with
    the GA aggregates appended."""
    text = render(sessions_of(session.events, policy)[-1], policy.max_chars)
    return text + analytics_suffix(session.analytics) if with_analytics else text


def comparable_split(labels: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the train and test parts of the data README's comparable split:
    `train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)` (the indices depend
    only on y and the row count, so splitting indices gives the same parts as splitting X)."""
    from sklearn.model_selection import train_test_split  # here: replay and --help skip sklearn

    y = np.asarray(labels, dtype=int)
    train, test = train_test_split(
        np.arange(len(y)), test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED
    )
    return np.sort(train), np.sort(test)
