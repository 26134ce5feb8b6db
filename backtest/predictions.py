"""Every prediction of a replay or backtest, one row each, for analysts to join:
`predictions.jsonl` and `predictions.parquet` beside `metrics.json`.

A row is flat, the same columns in both files (`COLUMNS`): the prediction id (the key the
feedback sidecar and alerts use), user, session, run role, the window (start, end, event
count), the model version, the feature schema version and every feature by name
(`feature_<name>`, `streams.core.features.FEATURE_NAMES`), the probabilities of every head
(`p_strength_<label>`, `p_intent_type_<label>`, `p_churn`), what triggered it (`trigger`, `as_of`,
`silence_days`; `network`: whether the text network ran), the customer value (`p_alive`,
`expected_orders`, `expected_value`), whether the live policy alerted, and
the labels once resolved (`backtest.labels`; for the UCI data, `Revenue` and the split part);
an unknown value is null. Rows are in score order, one per prediction id, so two runs over the
same input write byte-identical `predictions.jsonl` (the Parquet file's bytes also name the
pyarrow version that wrote it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from inference.heads import INTENT_TYPE_LABELS, STRENGTH_LABELS
from streams.core.alerts import ALERT_HEADS, Alert
from streams.core.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from streams.core.records import IntentScore
from training.data import uci

from .labels import Labelled, Labelling
from .sources import UciRows

JSONL_NAME = "predictions.jsonl"
PARQUET_NAME = "predictions.parquet"

# (column, type): "str", "int", "float", "bool"; every column is nullable.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("prediction_id", "str"),
    ("run", "str"),
    ("user_id", "str"),
    ("session_id", "str"),
    ("closed", "bool"),
    ("window_start", "int"),
    ("window_end", "int"),
    ("window_n_events", "int"),
    ("last_event_id", "str"),
    ("trigger", "str"),  # event | session_close | silence
    ("as_of", "int"),  # the event time FEATURES are taken as of
    ("silence_days", "float"),
    ("network", "bool"),  # whether the text network ran (false: kept outputs, stacker only)
    ("model_name", "str"),
    ("model_version", "int"),
    ("feature_schema_version", "int"),
    *((f"feature_{name}", "float") for name in FEATURE_NAMES),
    *((f"p_strength_{label}", "float") for label in STRENGTH_LABELS),
    *((f"p_intent_type_{label}", "float") for label in INTENT_TYPE_LABELS),
    ("p_churn", "float"),
    ("p_alive", "float"),
    ("expected_orders", "float"),
    ("expected_value", "float"),
    *((f"alerted_{head}", "bool") for head in ALERT_HEADS),
    ("label_strength", "str"),
    ("label_intent_type", "str"),
    ("label_churn", "bool"),
    ("label_settled", "bool"),
    ("label_revenue", "bool"),
    ("uci_split", "str"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in COLUMNS)


class MissingDependency(Exception):
    """pyarrow is not installed: the Parquet file cannot be written (exit 2, before a run)."""


def require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise MissingDependency("writing predictions.parquet needs pyarrow: install the report "
                                "extra (pip install -e '.[report]')") from None


@dataclass(frozen=True, slots=True)
class RunPredictions:
    """One replayed model version's output: what its rows come from."""

    role: str  # "model" | "baseline"
    records: Sequence[IntentScore]
    alerts: Sequence[Alert]
    labelling: Labelling | None  # None for the UCI data (labels from `uci`)
    uci: UciRows | None = None


def rows_of(run: RunPredictions) -> Iterator[dict[str, Any]]:
    """The run's prediction rows, in score order, the first score of each prediction id."""
    labels = {p.prediction_id: p for p in run.labelling.predictions} if run.labelling else {}
    alerted = {(a.prediction_id, a.head) for a in run.alerts}
    uci_labels = _uci_labels(run.uci) if run.uci is not None else {}
    seen: set[str] = set()
    for record in run.records:
        if record.prediction_id in seen:
            continue
        seen.add(record.prediction_id)
        row = _score_columns(record, run.role)
        row.update({f"alerted_{head}": (record.prediction_id, head) in alerted
                    for head in ALERT_HEADS})
        row.update(_label_columns(labels.get(record.prediction_id)))
        row["label_revenue"], row["uci_split"] = uci_labels.get(record.user_id, (None, None))
        yield row


def _score_columns(record: IntentScore, role: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prediction_id": record.prediction_id, "run": role, "user_id": record.user_id,
        "session_id": record.session_id, "closed": record.closed,
        "window_start": record.window.start, "window_end": record.window.end,
        "window_n_events": record.window.n_events, "last_event_id": record.window.last_event_id,
        "trigger": record.trigger, "as_of": record.as_of, "silence_days": record.silence_days,
        "network": record.network, "model_name": record.model.name,
        "model_version": record.model.version,
        "feature_schema_version": None,
    }
    values: Sequence[float | None] = [None] * len(FEATURE_NAMES)
    if record.features is not None:
        if (record.features.schema_version != FEATURE_SCHEMA_VERSION
                or len(record.features.values) != len(FEATURE_NAMES)):
            raise ValueError(
                f"prediction {record.prediction_id}: feature schema "
                f"v{record.features.schema_version} with {len(record.features.values)} values; "
                f"this build names v{FEATURE_SCHEMA_VERSION} ({len(FEATURE_NAMES)} values)")
        row["feature_schema_version"] = record.features.schema_version
        values = record.features.values
    row.update({f"feature_{name}": value for name, value in zip(FEATURE_NAMES, values,
                                                                strict=True)})
    row.update({f"p_strength_{label}": record.strength.probs.get(label)
                for label in STRENGTH_LABELS})
    row.update({f"p_intent_type_{label}": record.intent_type.probs.get(label)
                for label in INTENT_TYPE_LABELS})
    row["p_churn"] = record.churn
    row.update(p_alive=record.p_alive, expected_orders=record.expected_orders,
               expected_value=record.expected_value)
    return row


def _label_columns(labelled: Labelled | None) -> dict[str, Any]:
    if labelled is None:
        return {"label_strength": None, "label_intent_type": None, "label_churn": None,
                "label_settled": None}
    return {"label_strength": labelled.label_strength,
            "label_intent_type": labelled.label_intent_type,
            "label_churn": labelled.label_churn, "label_settled": labelled.settled}


def _uci_labels(data: UciRows) -> dict[str, tuple[bool, str]]:
    train, _ = uci.comparable_split(data.revenue)
    in_train = set(train.tolist())
    return {user: (data.revenue[i], "train" if i in in_train else "test")
            for i, user in enumerate(data.users)}


def write_predictions(out: Path, runs: Sequence[RunPredictions]) -> dict[str, str]:
    """predictions.jsonl and predictions.parquet in `out`; their names by format."""
    rows = [row for run in runs for row in rows_of(run)]
    out.mkdir(parents=True, exist_ok=True)
    with (out / JSONL_NAME).open("wb") as handle:
        for row in rows:
            handle.write(orjson.dumps(row) + b"\n")
    write_parquet(out / PARQUET_NAME, rows)
    return {"jsonl": JSONL_NAME, "parquet": PARQUET_NAME}


def write_parquet(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    import pyarrow as pa  # the report extra; checked by require_pyarrow before a run
    import pyarrow.parquet as pq

    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    schema = pa.schema([(name, types[kind]) for name, kind in COLUMNS])
    table = pa.table({name: [row[name] for row in rows] for name in COLUMN_NAMES},
                     schema=schema)
    pq.write_table(table, path)
