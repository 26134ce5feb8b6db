import json

import pytest

from streams.runtime.schema_files import PUBLISHED, SCHEMA_DIR, render_schema


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_schema_matches_the_code(name):
    model, topic = PUBLISHED[name]
    committed = (SCHEMA_DIR / name).read_text()
    assert committed == render_schema(model, topic, name), (
        f"{name} is stale: run `python -m streams.runtime.schema_files` and commit"
    )


def test_event_schema_lists_the_required_contract_fields():
    schema = json.loads((SCHEMA_DIR / "shop_event.v1.json").read_text())
    assert {"event_id", "user_id", "ts", "type"} <= set(schema["required"])
    assert "support_message" in schema["properties"]["type"]["enum"]
