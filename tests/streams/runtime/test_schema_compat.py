"""Output-schema evolution (streams/runtime/schema_compat.py): every current schema stays
BACKWARD-compatible with its releases, and the checker's rules on planted changes."""

from __future__ import annotations

import copy
import json
import shutil
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from streams.runtime import schema_compat
from streams.runtime.schema_compat import (
    RELEASED_DIR,
    SCHEMA_DIR,
    breaking_changes,
    changes,
    check_directory,
    registry_form,
    releases_of,
    schema_key,
)
from streams.runtime.schema_files import PUBLISHED

Schema = dict[str, Any]
FIRST_RELEASE = {"shop_event", "dead_letter", "intent_score", "alert", "alert_response",
                 "feedback_example"}


def load(name: str) -> Schema:
    return json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))


# --- the repository's schemas -------------------------------------------------------------------


def test_every_schema_is_backward_compatible_with_its_releases() -> None:
    found = check_directory()
    assert found == {}, "\n".join(
        f"{pair}: " + "; ".join(map(str, broken)) for pair, broken in found.items())


def test_the_first_release_is_there_and_pairs_with_the_current_files() -> None:
    released = {schema_key(path)[0] for path in RELEASED_DIR.glob("*.json")}
    assert released >= FIRST_RELEASE
    for name in FIRST_RELEASE:  # (a new schema has no release until it ships: not asked)
        current = sorted(SCHEMA_DIR.glob(f"{name}.v*.json"))
        assert current and all(releases_of(path) for path in current), name


def test_the_command_exits_0_here_and_1_on_a_breaking_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert schema_compat.main([]) == 0
    current, released = tmp_path / "schemas", tmp_path / "released"
    current.mkdir(), released.mkdir()
    shutil.copy(SCHEMA_DIR / "alert.v1.json", released)
    broken = load("alert.v1.json")
    del broken["properties"]["reason"]
    broken["required"].remove("reason")
    (current / "alert.v2.json").write_text(json.dumps(broken))
    monkeypatch.setattr(schema_compat, "SCHEMA_DIR", current)
    monkeypatch.setattr(schema_compat, "RELEASED_DIR", released)
    assert schema_compat.main([]) == 1
    out = capsys.readouterr().out
    assert "alert.v2.json vs released/alert.v1.json" in out
    assert "$.reason: property_removed" in out


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    """The pydantic models inside a field annotation (Optional, list, dict, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        for info in annotation.model_fields.values():
            yield from _models(info.annotation)
    for arg in typing.get_args(annotation) if not isinstance(annotation, types.NoneType) else ():
        yield from _models(arg)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_records_carry_only_declared_properties(name: str) -> None:
    """The checker reads our object schemas as closed: true while no model keeps extras."""
    model, _ = PUBLISHED[name]
    for found in _models(model):
        assert found.model_config.get("extra") != "allow", f"{found.__name__} keeps extras"


# --- planted changes ------------------------------------------------------------------------------

Mutation = Callable[[Schema], None]


def at(schema: Schema, dotted: str) -> Schema:
    node: Any = schema
    for part in dotted.split("."):
        node = node[part]
    return node


def setting(dotted: str, key: str, value: Any) -> Mutation:
    return lambda schema: at(schema, dotted).__setitem__(key, value)


def dropping(dotted: str, key: str) -> Mutation:
    return lambda schema: at(schema, dotted).pop(key)


def removing_property(name: str) -> Mutation:
    def mutate(schema: Schema) -> None:
        del schema["properties"][name]
        if name in schema.get("required", []):
            schema["required"].remove(name)
    return mutate


def adding_property(name: str, sub: Schema, *, required: bool = False) -> Mutation:
    def mutate(schema: Schema) -> None:
        schema["properties"][name] = sub
        if required:
            schema["required"].append(name)
    return mutate


def requiring(name: str) -> Mutation:
    return lambda schema: schema["required"].append(name)


def unrequiring(name: str) -> Mutation:
    return lambda schema: schema["required"].remove(name)


BREAKING = [
    ("intent_score", removing_property("text"), "$.text", "property_removed"),
    ("intent_score", adding_property("segment", {"type": "string"}, required=True),
     "$.segment", "required_added"),
    ("intent_score", requiring("features"), "$.features", "required_added"),  # has a default
    ("intent_score", setting("properties.churn", "type", "integer"), "$.churn", "type_narrowed"),
    ("intent_score", setting("$defs.Window.properties.n_events", "type", "string"),
     "$.window.n_events", "type_narrowed"),
    ("intent_score", setting("properties.churn", "maximum", 0.5), "$.churn",
     "maximum_tightened"),
    ("intent_score", setting("properties.latency_ms", "minimum", 0), "$.latency_ms",
     "minimum_added"),
    ("intent_score", setting("properties.user_id", "pattern", "^u-"), "$.user_id",
     "pattern_changed"),
    ("intent_score", setting("properties.user_id", "maxLength", 64), "$.user_id",
     "maxLength_added"),
    ("intent_score", setting("properties.schema_version", "const", 2), "$.schema_version",
     "enum_narrowed"),
    ("intent_score", setting("$defs.HeadScore.properties.probs", "additionalProperties", False),
     "$.strength.probs.*", "additional_properties_tightened"),
    ("intent_score", setting("$defs.HeadScore.properties.probs", "additionalProperties",
                             {"type": "integer"}), "$.strength.probs.*", "type_narrowed"),
    ("intent_score", setting("properties.features", "anyOf", [{"$ref": "#/$defs/FeatureRow"}]),
     "$.features", "type_narrowed"),
    ("intent_score", setting("properties.features", "anyOf",
                             [{"type": "string"}, {"type": "null"}]),
     "$.features", "no_branch_accepts"),
    ("intent_score", setting("$defs.HeadScore.properties.probs", "propertyNames",
                             {"enum": ["strong"]}), "$.strength.probs.<key>",
     "narrowed_from_anything"),
    ("intent_score", setting("properties.text", "if", {"type": "string"}), "$.text",
     "unsupported_keyword"),
    ("alert", setting("properties.head", "enum", ["intent"]), "$.head", "enum_narrowed"),
    ("alert", setting("properties.signals.items", "type", "integer"), "$.signals[]",
     "type_narrowed"),
    ("alert", setting("properties.signals", "uniqueItems", True), "$.signals",
     "uniqueItems_added"),
    ("alert", setting("properties.probability", "multipleOf", 0.5), "$.probability",
     "multipleOf_tightened"),
    ("feedback_example", setting("properties.heads.propertyNames", "enum", ["intent"]),
     "$.heads.<key>", "enum_narrowed"),
]


@pytest.mark.parametrize(("name", "mutate", "path", "rule"), BREAKING,
                         ids=[f"{name}:{rule}:{path}" for name, _, path, rule in BREAKING])
def test_a_breaking_change_is_caught(name: str, mutate: Mutation, path: str, rule: str) -> None:
    old = load(f"{name}.v1.json")
    new = copy.deepcopy(old)
    mutate(new)
    found = [(change.path, change.rule) for change in breaking_changes(old, new)]
    assert (path, rule) in found, found


FINE = [
    ("intent_score", adding_property("segment", {"type": "string"}), "optional_property_added"),
    ("intent_score", setting("$defs.ModelRef", "additionalProperties", {"type": "string"}),
     "additional_properties_widened"),
    ("intent_score", unrequiring("latency_ms"), "required_removed"),
    ("intent_score", setting("properties.churn", "type", ["number", "null"]),
     "widened_to_union"),
    ("intent_score", setting("$defs.Window.properties.n_events", "type", "number"),
     "type_widened"),
    ("intent_score", dropping("properties.churn", "maximum"), "maximum_removed"),
    ("intent_score", setting("properties.churn", "maximum", 2), "maximum_relaxed"),
    ("intent_score", setting("properties", "schema_version", {"type": "integer", "enum": [1, 2]}),
     "enum_widened"),
    ("intent_score", setting("$defs.HeadScore.properties.probs", "additionalProperties", True),
     "additional_properties_widened"),
    ("alert", setting("properties.head", "enum", ["intent", "churn", "repeat"]), "enum_widened"),
]


@pytest.mark.parametrize(("name", "mutate", "rule"), FINE,
                         ids=[f"{name}:{rule}" for name, _, rule in FINE])
def test_a_compatible_change_passes_and_is_named(name: str, mutate: Mutation, rule: str) -> None:
    old = load(f"{name}.v1.json")
    new = copy.deepcopy(old)
    mutate(new)
    assert breaking_changes(old, new) == []
    assert rule in {change.rule for change in changes(old, new)}


def test_annotations_and_the_schema_version_made_an_enum_change_nothing_breaking() -> None:
    old = load("intent_score.v1.json")
    new = copy.deepcopy(old)
    new["$id"] = "https://intentstream.dev/schemas/intent_score.v2.json"
    new["description"] = "reworded"
    new["properties"]["text"]["title"] = "Session text"
    new["x-topic"] = "intent.scores"
    assert changes(old, new) == []
    # The version marker as a v2 should declare it: the new reader still takes v1 records.
    new["properties"]["schema_version"] = {"enum": [1, 2], "default": 2, "type": "integer"}
    assert breaking_changes(old, new) == []


def test_a_recursive_schema_is_compared_once() -> None:
    tree = {"$defs": {"Node": {"type": "object", "properties": {
        "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}},
        "$ref": "#/$defs/Node"}
    assert changes(tree, copy.deepcopy(tree)) == []
    narrowed = copy.deepcopy(tree)
    narrowed["$defs"]["Node"]["properties"]["children"]["maxItems"] = 2
    assert [c.rule for c in breaking_changes(tree, narrowed)] == ["maxItems_added"]


def test_an_open_model_refuses_added_properties() -> None:
    """What a registry does with an open schema (hence registry_form)."""
    old = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": True}
    new = copy.deepcopy(old)
    new["properties"]["b"] = {"type": "integer"}
    assert [c.rule for c in breaking_changes(old, new)] == ["property_added_to_open_model"]
    del new["properties"]["b"], new["properties"]["a"]
    assert breaking_changes(old, new) == []  # an open reader still takes `a`


# --- the form to register -------------------------------------------------------------------


def test_registry_form_writes_out_the_closure_and_keeps_the_verdicts() -> None:
    old = load("intent_score.v1.json")
    closed = registry_form(old)
    assert closed["additionalProperties"] is False
    assert closed["$defs"]["Window"]["additionalProperties"] is False
    assert closed["$defs"]["HeadScore"]["properties"]["probs"]["additionalProperties"] == {
        "type": "number"}  # a map stays a map
    assert "additionalProperties" not in old  # a copy
    jsonschema.Draft202012Validator.check_schema(closed)
    for _, mutate, path, rule in [b for b in BREAKING if b[0] == "intent_score"]:
        new = copy.deepcopy(old)
        mutate(new)
        found = {(c.path, c.rule) for c in breaking_changes(closed, registry_form(new))}
        assert (path, rule) in found
    grown = copy.deepcopy(old)
    adding_property("segment", {"type": "string"})(grown)
    assert breaking_changes(closed, registry_form(grown)) == []


# --- files --------------------------------------------------------------------------------------


def test_schema_key_reads_the_name_and_version() -> None:
    assert schema_key("intent_score.v2.json") == ("intent_score", 2)
    assert schema_key(Path("x/alert_response.v10.json")) == ("alert_response", 10)
    with pytest.raises(ValueError, match=r"NAME\.vN\.json"):
        schema_key("intent_score.json")


def test_a_new_version_is_held_to_every_earlier_release_of_its_name(tmp_path: Path) -> None:
    for name in ("intent_score.v1.json", "intent_score.v3.json", "alert.v1.json",
                 "alert_response.v1.json"):
        (tmp_path / name).write_text("{}")
    pairs = releases_of(Path("intent_score.v2.json"), tmp_path)
    assert [p.name for p in pairs] == ["intent_score.v1.json"]
    assert [p.name for p in releases_of(Path("alert.v2.json"), tmp_path)] == ["alert.v1.json"]
    assert releases_of(Path("intent_latest.v1.json"), tmp_path) == []


def test_check_directory_pairs_v2_with_v1_and_flags_a_withdrawn_schema(tmp_path: Path) -> None:
    current, released = tmp_path / "schemas", tmp_path / "released"
    current.mkdir(), released.mkdir()
    for name in ("intent_score.v1.json", "alert.v1.json"):
        shutil.copy(SCHEMA_DIR / name, released)
    grown = load("intent_score.v1.json")
    adding_property("segment", {"type": "string"})(grown)
    (current / "intent_score.v2.json").write_text(json.dumps(grown))
    assert check_directory(current, released) == {
        "released/alert.v1.json": [
            schema_compat.Change("$", "schema_withdrawn", True, "no current schema of this name")],
    }
    shutil.copy(SCHEMA_DIR / "alert.v1.json", current)
    assert check_directory(current, released) == {}
    removing_property("churn")(grown)
    (current / "intent_score.v2.json").write_text(json.dumps(grown))
    found = check_directory(current, released)
    assert list(found) == ["intent_score.v2.json vs released/intent_score.v1.json"]
    assert [(c.path, c.rule) for c in found[next(iter(found))]] == [("$.churn", "property_removed")]
