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
  events spaced by their dwell so the session's timing is plausible, squeezed where needed so
  every row stays one session under the worker's policy (27 rows would pass its 4 h span); the
  worker's session policy then applies as it would live (its text keeps the newest 64 events,
  while the session's features count every event);
- a row with no page views at all (6 of 12,330) becomes one view of an `unknown` page;
- `Revenue` (the session ended in a purchase) is the label. Unlike our own labels it is about
  the same session, because that is what the data records.

The other columns travel as the attributes real clickstream events carry
(`streams.core.events`), so the live feature path (`streams.core.features`) computes them:

- BounceRates, ExitRates and PageValues as every page view's `analytics` (the row holds the
  session's averages, so each view gets them and their mean is the row's value);
- TrafficType, VisitorType, Browser, OperatingSystems, Region and SpecialDay as the visit's
  `context`, on every event of the visit;
- Month through the timestamp (the session starts in that month), Weekend through the day: the
  first Saturday of the month for a weekend session, the first Wednesday otherwise (the year,
  2017, is not in the data; it only places the days).

The text is rendered from the events and shows none of these attributes; `analytics_suffix`
appends the GA aggregates to it for the older text-only variant. `LEVELS` names the FEATURES
columns at each level of information the model card compares: page views only; + analytics;
+ context.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from streams.core.events import ShopEvent
from streams.core.features import FEATURE_NAMES
from streams.core.sessions import SessionPolicy, absorb, empty_state, render, session_features
from training.data.windows import sessions_of

CSV_NAME = "online_shoppers_intention.csv"
ATTRIBUTION = (  # the licence asks for it wherever the data or results from it are shown
    "UCI Online Shoppers Purchasing Intention Dataset (Sakar, Polat, Katircioglu, Kastro 2019, "
    "Neural Computing and Applications 31, 6893-6908), CC BY 4.0."
)
# Published and measured figures on this data (see the data README), for the model card.
PEERS: tuple[dict[str, Any], ...] = (
    {"model": "HistGradientBoosting, tabular columns (comparable split)", "roc_auc": 0.929,
     "pr_auc": 0.734},
    {"model": "logistic regression, tabular columns (comparable split)", "roc_auc": 0.902,
     "pr_auc": 0.664},
    {"model": "PageValues alone (comparable split)", "roc_auc": 0.860, "pr_auc": None},
    {"model": "gradient boosting without PageValues (comparable split)", "roc_auc": 0.768,
     "pr_auc": None},
    {"model": "XGBoost + oversampling (PMC10121810, other split)", "roc_auc": 0.937,
     "pr_auc": 0.754},
    {"model": "random forest (Satu & Islam 2023, other split)", "roc_auc": 0.975,
     "pr_auc": None},
)
PAGE_KINDS: tuple[tuple[str, str], ...] = (
    ("Administrative", "administrative"),
    ("Informational", "informational"),
    ("ProductRelated", "product"),
)
ANALYTICS = ("PageValues", "BounceRates", "ExitRates")
# CSV column -> the event attribute that carries it
ANALYTICS_FIELDS = {"BounceRates": "bounce_rate", "ExitRates": "exit_rate",
                    "PageValues": "page_value"}
CONTEXT_NUMBERS = {"TrafficType": "traffic_source", "Browser": "browser",
                   "OperatingSystems": "os", "Region": "region"}
_MONTHS = {"Jan": 1, "Feb": 2, "Mar": 3, "Apr": 4, "May": 5, "June": 6, "Jun": 6, "Jul": 7,
           "Aug": 8, "Sep": 9, "Oct": 10, "Nov": 11, "Dec": 12}
_YEAR = 2017  # not in the data; only places the days (Weekend) and orders the timestamps
_SATURDAY, _WEDNESDAY = 5, 2
_ROW_STAGGER_MS = 100  # rows of one day start apart, so replay order follows the file
_SPAN_BUDGET_MS = 3 * 3_600_000  # under the worker's 4 h session span: one row, one session
TEST_SIZE = 0.3
SPLIT_SEED = 0

# FEATURES columns (streams.core.features.FEATURE_NAMES) at each level of information, beside
# the CSV columns a tabular peer gets at the same level. Only what the row says: `hour` and the
# profile are left out (the hour is made up; each row is its own user).
PAGE_FEATURES = ("n_events", "span_min", "dwell_s",
                 *(f for kind in ("administrative", "informational", "product")
                   for f in (f"pages_{kind}", f"pages_{kind}_s")), "pages_other")
ANALYTICS_FEATURES = ("bounce_rate", "exit_rate", "page_value")
CONTEXT_FEATURES = ("special_day", "month", "weekend", "ctx_traffic_source",
                    "ctx_visitor_type", "ctx_browser", "ctx_os", "ctx_region")
PAGE_COLUMNS = tuple(c for column, _ in PAGE_KINDS for c in (column, f"{column}_Duration"))
ANALYTICS_COLUMNS = ("BounceRates", "ExitRates", "PageValues")
CONTEXT_COLUMNS = ("SpecialDay", "Month", "OperatingSystems", "Browser", "Region",
                   "TrafficType", "VisitorType", "Weekend")


@dataclass(frozen=True, slots=True)
class Level:
    name: str
    features: tuple[str, ...]  # FEATURES columns our model reads
    columns: tuple[str, ...]  # CSV columns the tabular peer reads


LEVELS: tuple[Level, ...] = (
    Level("page_views", PAGE_FEATURES, PAGE_COLUMNS),
    Level("plus_analytics", PAGE_FEATURES + ANALYTICS_FEATURES,
          PAGE_COLUMNS + ANALYTICS_COLUMNS),
    Level("plus_context", PAGE_FEATURES + ANALYTICS_FEATURES + CONTEXT_FEATURES,
          PAGE_COLUMNS + ANALYTICS_COLUMNS + CONTEXT_COLUMNS),
)


@dataclass(frozen=True, slots=True)
class UciSession:
    row: int
    events: tuple[dict[str, Any], ...]
    revenue: bool
    analytics: dict[str, float]  # the GA aggregates of ANALYTICS (also on every page view)


def read_rows(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _yes(cell: str) -> bool:
    return cell.strip().upper() in ("YES", "TRUE", "1")


def session_start_ms(row: Mapping[str, str], index: int) -> int:
    """Midnight UTC of the first Saturday (Weekend) or Wednesday of the row's month, plus a
    stagger by row; the whole session stays within that day (`_SPAN_BUDGET_MS`)."""
    month = _MONTHS.get(row.get("Month", "").strip(), 1)
    weekday = _SATURDAY if _yes(row.get("Weekend", "")) else _WEDNESDAY
    first = datetime(_YEAR, month, 1, tzinfo=UTC)
    day = 1 + (weekday - first.weekday()) % 7
    return int(datetime(_YEAR, month, day, tzinfo=UTC).timestamp() * 1000) + (
        index * _ROW_STAGGER_MS)


def page_analytics(row: Mapping[str, str]) -> dict[str, float]:
    return {field: float(row[column]) for column, field in ANALYTICS_FIELDS.items()}


def visit_context(row: Mapping[str, str]) -> dict[str, Any]:
    context: dict[str, Any] = {field: int(float(row[column]))
                               for column, field in CONTEXT_NUMBERS.items()}
    context["visitor_type"] = row["VisitorType"].strip()
    context["special_day"] = float(row["SpecialDay"])
    return context


def row_events(row: Mapping[str, str], index: int) -> list[dict[str, Any]]:
    """One UCI row as `ShopEvent` dicts of user `uci-<index>` (see the module notes)."""
    user = f"uci-{index:05d}"
    pages = []
    for column, page in PAGE_KINDS:
        count = int(float(row[column]))
        dwell = float(row[f"{column}_Duration"]) / count if count > 0 else 0.0
        pages += [(page, dwell)] * count
    steps = [max(1000, int(dwell * 1000)) for _, dwell in pages]
    squeeze = min(1.0, _SPAN_BUDGET_MS / sum(steps)) if steps else 1.0
    attributes = {"analytics": page_analytics(row), "context": visit_context(row)}
    ts = session_start_ms(row, index)
    events: list[dict[str, Any]] = []
    for (page, dwell), step in zip(pages, steps, strict=True):
        events.append(_view(user, len(events), ts, page, dwell, attributes))
        ts += int(step * squeeze)
    if not events:
        events.append(_view(user, 0, ts, "unknown", None, attributes))
    return events


def _view(user: str, n: int, ts: int, page: str, dwell: float | None,
          attributes: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"event_id": f"{user}-{n:04d}", "user_id": user, "ts": ts,
                           "type": "view", "page": page, **attributes}
    if dwell is not None:
        doc["duration_s"] = round(max(0.0, dwell), 1)
    return doc


def load_sessions(path: Path) -> list[UciSession]:
    rows = read_rows(path)
    return [
        UciSession(
            row=i,
            events=tuple(row_events(row, i)),
            revenue=_yes(row["Revenue"]),
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


# --- features at each level of information ------------------------------------------------------


def final_features(session: UciSession, policy: SessionPolicy) -> list[float]:
    """The FEATURES row of the session's final window, by the worker's own functions
    (`absorb`, `session_features`): what the live worker sends Triton with its text."""
    state = empty_state()
    for doc in session.events:
        absorb(state, ShopEvent.model_validate(doc, context={"ts_bounds": policy.ts_bounds}),
               policy)
    current = state["current"]
    assert current is not None  # every row has an event
    return session_features(state, current)


def level_columns(level: Level) -> list[int]:
    """Positions of the level's features in a FEATURES row."""
    return [FEATURE_NAMES.index(name) for name in level.features]


# --- the stacked model over [features of a level, the text model's probabilities] --------------

# The stacker of the served ensemble, fitted for UCI: gradient boosting with a slower learning
# rate, small trees (15 leaves of at least 50 rows), strong L2 and a fixed 200 iterations. Chosen
# by 5-fold stratified cross-validation on the training part only (over the FEATURES of every
# column; docs/model.md lists the candidates and their figures): among HGB settings (learning
# rate, iterations, early stopping, leaf size and count, L2, native categories, log1p transforms),
# random forests and averages with a logistic regression. It beat the previous setting (learning
# rate 0.03, L2 1.0, early stopping) by 0.002 ROC-AUC on 30 fresh folds (standard error 0.0004).
STACKER_PARAMS: dict[str, Any] = {
    "learning_rate": 0.03, "max_iter": 200, "max_leaf_nodes": 15, "min_samples_leaf": 50,
    "l2_regularization": 10.0, "random_state": 0,
}
# Those settings need purchases to learn from: on a few hundred rows (tens of purchases) leaves of
# 50 rows are most of the data, and the defaults do better (400-row samples of the training part,
# 20 draws: ROC-AUC 0.902 mean for the defaults, 0.897 for the setting above, as low as 0.71).
MIN_POSITIVES = 300


def stacker_params(y: np.ndarray) -> dict[str, Any]:
    if float(np.sum(y)) >= MIN_POSITIVES:
        return dict(STACKER_PARAMS)
    return {"random_state": 0}


def fit_stacker(x: np.ndarray, y: np.ndarray) -> Any:
    """P(revenue) heads over rows of [level features, text probabilities] (predict_proba)."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # ~1 s: not for replay --help

    return HistGradientBoostingClassifier(**stacker_params(y)).fit(x, y)
