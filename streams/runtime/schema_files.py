"""The published JSON Schemas (`streams/runtime/schemas/*.json`), generated from the record models.

`python -m streams.runtime.schema_files` rewrites them; a test fails when they drift from the code.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from streams.core.alerts import Alert
from streams.core.events import ShopEvent
from streams.core.feedback import AlertResponse, FeedbackExample
from streams.core.records import DeadLetter, IntentScore

SCHEMA_DIR = Path(__file__).parent / "schemas"

# file name -> (model, topic): bump the version in the name when a change breaks consumers.
PUBLISHED: dict[str, tuple[type[BaseModel], str]] = {
    "shop_event.v1.json": (ShopEvent, "shop.events"),
    "dead_letter.v1.json": (DeadLetter, "shop.events.dlq"),
    "intent_score.v2.json": (IntentScore, "intent.scores"),
    "alert.v2.json": (Alert, "alerts.intent, alerts.churn"),
    "alert_response.v1.json": (AlertResponse, "alerts.responses"),
    "feedback_example.v1.json": (FeedbackExample, "feedback.examples"),
}


def render_schema(model: type[BaseModel], topic: str, name: str) -> str:
    schema = model.model_json_schema()
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://intentstream.dev/schemas/{name}",
        "x-topic": topic,
        **schema,
    }
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def write_all() -> list[Path]:
    SCHEMA_DIR.mkdir(exist_ok=True)
    paths = []
    for name, (model, topic) in PUBLISHED.items():
        path = SCHEMA_DIR / name
        path.write_text(render_schema(model, topic, name))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for path in write_all():
        print(path)
