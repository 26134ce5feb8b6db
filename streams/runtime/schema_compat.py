"""Output-schema evolution: is a new JSON Schema BACKWARD-compatible with its released one?

BACKWARD, as Schema Registry means it: a consumer holding the new schema can read every record
written under the old one (consumers re-read retained and compacted topics from any offset,
and they upgrade before or with the producer). So the new schema, the *reader*, must accept
everything the old one, the *writer*, allows:

- breaking: a property removed; a property made required (or added as required) without a
  default; a type narrowed (number -> integer, a type dropped); an enum or const losing a
  value; a bound tightened (minimum up, maximum down, lengths, item counts, multipleOf); a
  pattern, format or uniqueItems added or changed; additionalProperties tightened; a keyword
  this checker does not know (it says so rather than guess);
- fine: an optional property added; a required property made optional; a type, enum or bound
  widened; annotations changed (title, description, default, examples, $id, x-*).

Content model. Our records are pydantic models dumped with their declared fields only, so an
object schema that declares properties and says nothing of others is read as *closed* (as if
`additionalProperties: false`): a record never carries an undeclared property. That is what
makes adding an optional property safe and removing one breaking, which are Schema Registry's
rules for closed models. Register `registry_form(schema)` (the same schema with the closure
written out): a registry reads a schema without `additionalProperties` as open, and in an open
model it refuses every added property (PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL).

Files. `schemas/NAME.vN.json` is checked against every `schemas/released/NAME.vM.json` with
M <= N (the name before `.v` pairs them), so a new `intent_score.v2.json` is held to
`released/intent_score.v1.json`: BACKWARD against each release, i.e. BACKWARD_TRANSITIVE.
Releasing is copying the file into `released/` (docker/OPS.md, "Schema registry").

    python -m streams.runtime.schema_compat      # exit 1 and the breaking changes, if any

Pure: no Kafka, no registry client; stdlib only.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Change",
    "breaking_changes",
    "changes",
    "check_directory",
    "registry_form",
    "releases_of",
    "schema_key",
]

SCHEMA_DIR = Path(__file__).parent / "schemas"
RELEASED_DIR = SCHEMA_DIR / "released"

# Keywords that constrain nothing a reader checks.
ANNOTATIONS = frozenset({
    "$schema", "$id", "$comment", "$defs", "definitions", "title", "description", "default",
    "examples", "deprecated", "readOnly", "writeOnly",
})
CONSTRAINTS = frozenset({
    "type", "enum", "const", "properties", "required", "additionalProperties", "items",
    "minItems", "maxItems", "uniqueItems", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "pattern", "format",
    "anyOf", "oneOf", "allOf", "$ref", "propertyNames",
})
# Lower bounds may only fall and upper bounds only rise for the reader to accept the writer's.
LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems")
UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")
EXACT = ("pattern", "format")
OBJECT_KEYWORDS = ("properties", "required", "additionalProperties", "propertyNames")
_NAME = re.compile(r"(?P<name>.+)\.v(?P<version>\d+)\.json")


@dataclass(frozen=True)
class Change:
    """One difference between a released schema and its successor."""

    path: str  # where in a record: `$.window.n_events`, `$.strength.probs.*`, `$.signals[]`
    rule: str  # e.g. `property_removed`, `optional_property_added`
    breaking: bool
    detail: str = ""

    def __str__(self) -> str:
        verdict = "BREAKING" if self.breaking else "ok"
        detail = f" ({self.detail})" if self.detail else ""
        return f"{verdict:8} {self.path}: {self.rule}{detail}"


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every difference that matters to a reader holding `new` of records written under `old`."""
    diff = _Diff(old, new)
    diff.compare(old, new, "$")
    return diff.found


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    return [change for change in changes(old, new) if change.breaking]


# --- the comparison ------------------------------------------------------------------------


@dataclass
class _Diff:
    old_root: dict[str, Any]
    new_root: dict[str, Any]
    found: list[Change] = field(default_factory=list)
    _seen: set[tuple[int, int]] = field(default_factory=set)  # recursive $refs end here
    _alive: list[tuple[Any, Any]] = field(default_factory=list)

    def note(self, path: str, rule: str, breaking: bool, detail: str = "") -> None:
        self.found.append(Change(path, rule, breaking, detail))

    def sub(self) -> _Diff:
        return _Diff(self.old_root, self.new_root, _seen=set(self._seen), _alive=self._alive)

    def compare(self, old: Any, new: Any, path: str) -> None:
        old, new = _resolve(old, self.old_root), _resolve(new, self.new_root)
        if (id(old), id(new)) in self._seen:
            return
        self._seen.add((id(old), id(new)))
        self._alive.append((old, new))  # so that no id in _seen is reused by a new object
        if _accepts_anything(new) or old is False:
            return
        if new is False:
            self.note(path, "rejects_everything", True)
            return
        if _accepts_anything(old):
            self.note(path, "narrowed_from_anything", True, "old records may hold any value here")
            return
        unknown = sorted(_unknown_keywords(old) | _unknown_keywords(new))
        if unknown:
            self.note(path, "unsupported_keyword", True, "cannot judge " + ", ".join(unknown))
            return
        old_branches, new_branches = _branches(old), _branches(new)
        if old_branches is None or new_branches is None:
            self.note(path, "unsupported_keyword", True, "allOf of several schemas")
        elif len(old_branches) > 1:
            for branch in old_branches:  # every value the writer may write, branch by branch
                if len(new_branches) > 1:
                    self._into_union(branch, new_branches, path)
                else:
                    self.compare(branch, new, path)
            if len(new_branches) > len(old_branches):
                self.note(path, "union_widened", False)
        elif len(new_branches) > 1:
            self._into_union(old_branches[0], new_branches, path)
            self.note(path, "widened_to_union", False)
        elif old_branches[0] is not old or new_branches[0] is not new:
            self.compare(old_branches[0], new_branches[0], path)  # unwrapped: resolve it again
        else:
            self._compare_single(old, new, path)

    def _into_union(self, old: dict[str, Any], branches: list[Any], path: str) -> None:
        """One writer schema against a reader's anyOf/oneOf: some branch must take it all."""
        tried = []
        for branch in branches:
            sub = self.sub()
            sub.compare(old, branch, path)
            if not any(change.breaking for change in sub.found):
                self.found.extend(sub.found)
                return
            tried.append(sub)
        self.note(path, "no_branch_accepts", True,
                  "; ".join(str(c) for sub in tried for c in sub.found if c.breaking)[:300])

    def _compare_single(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        self._values(old, new, path)
        self._types(old, new, path)
        self._bounds(old, new, path)
        # `items` and the object keywords constrain only arrays and objects: compared only
        # where the writer may write one that the reader reads (else the type check spoke).
        shared = _shared_types(old, new)
        if ("items" in old or "items" in new) and "array" in shared:
            self.compare(old.get("items", True), new.get("items", True), path + "[]")
        if (_is_object_schema(old) or _is_object_schema(new)) and "object" in shared:
            self._objects(old, new, path)

    def _values(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        written, read = _allowed_values(old), _allowed_values(new)
        if read is None:  # any value of the reader's type (checked apart) is read
            return
        if written is None:
            self.note(path, "enum_added", True, f"only {_show(read)} accepted now")
            return
        lost = [value for value in written if value not in read]
        if lost:
            self.note(path, "enum_narrowed", True, f"{_show(lost)} no longer accepted")
        elif len(read) > len(written):
            self.note(path, "enum_widened", False)

    def _types(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        written, read = _types_of(old), _types_of(new)
        if read is None:
            return
        if written is None:
            self.note(path, "type_added", True, f"only {sorted(read)} accepted now")
            return
        lost = sorted(t for t in written if not _type_accepted(t, read))
        if lost:
            self.note(path, "type_narrowed", True, f"{lost} no longer accepted")
        elif any(not _type_accepted(t, written) for t in read):
            self.note(path, "type_widened", False)

    def _bounds(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        for key in LOWER_BOUNDS + UPPER_BOUNDS:
            if key not in new:
                if key in old:
                    self.note(path, f"{key}_removed", False)
                continue
            lower = key in LOWER_BOUNDS
            if key not in old:
                self.note(path, f"{key}_added", True, f"{key} {new[key]}")
            elif (new[key] > old[key]) if lower else (new[key] < old[key]):
                self.note(path, f"{key}_tightened", True, f"{old[key]} -> {new[key]}")
            elif new[key] != old[key]:
                self.note(path, f"{key}_relaxed", False)
        for key in EXACT:
            if key in new and new.get(key) != old.get(key):
                self.note(path, f"{key}_changed", True, f"{old.get(key)!r} -> {new[key]!r}")
        if "multipleOf" in new and (
            "multipleOf" not in old or old["multipleOf"] % new["multipleOf"] != 0
        ):
            self.note(path, "multipleOf_tightened", True)
        if new.get("uniqueItems") and not old.get("uniqueItems"):
            self.note(path, "uniqueItems_added", True)

    def _objects(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        old_rest, new_rest = _content_model(old), _content_model(new)
        for name, schema in old_props.items():
            where = f"{path}.{name}"
            if name in new_props:
                self.compare(schema, new_props[name], where)
            elif new_rest is False:
                self.note(where, "property_removed", True, "old records carry it")
            elif new_rest is True:
                self.note(where, "property_removed_from_open_model", False)
            else:  # the reader takes it as one of its additional properties
                self.compare(schema, new_rest, where)
        for name, schema in new_props.items():
            if name in old_props:
                continue
            where = f"{path}.{name}"
            if old_rest is False:
                self.note(where, "optional_property_added", False)
            elif old_rest is True and not _accepts_anything(schema):
                self.note(where, "property_added_to_open_model", True,
                          "old records may carry any value under this name")
            else:  # old records may already carry this name, with any value the writer allowed
                self.compare(old_rest, schema, where)
        old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
        for name in sorted(new_required - old_required):
            # Even with a default: JSON Schema validators do not fill defaults in (stricter
            # than the registry, which lets a required property with a default through).
            self.note(f"{path}.{name}", "required_added", True,
                      "old records may lack it" if name in old_props else "old records lack it")
        for name in sorted(old_required - new_required):
            self.note(f"{path}.{name}", "required_removed", False)
        self._rest(old_rest, new_rest, path + ".*")
        if "propertyNames" in old or "propertyNames" in new:  # a map's keys, read as strings
            self.compare(old.get("propertyNames", True), new.get("propertyNames", True),
                         path + ".<key>")

    def _rest(self, old_rest: Any, new_rest: Any, path: str) -> None:
        """additionalProperties: what else a record may carry, under each schema."""
        if old_rest is False:
            if new_rest is not False:
                self.note(path, "additional_properties_widened", False)
            return
        if new_rest is False:
            self.note(path, "additional_properties_tightened", True,
                      "old records may carry other properties")
            return
        if new_rest is True and old_rest is not True:
            self.note(path, "additional_properties_widened", False)
            return
        self.compare(old_rest, new_rest, path)


# --- schema helpers -------------------------------------------------------------------------


def _resolve(schema: Any, root: dict[str, Any]) -> Any:
    """Follow local `$ref`s (`#/$defs/Name`); sibling annotations are dropped."""
    for _ in range(64):
        if not isinstance(schema, dict) or "$ref" not in schema:
            return schema
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, got {ref!r}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        schema = target
    raise ValueError("a $ref chain longer than 64")


def _accepts_anything(schema: Any) -> bool:
    if schema is True:
        return True
    return isinstance(schema, dict) and not (set(schema) - ANNOTATIONS - _extensions(schema))


def _extensions(schema: dict[str, Any]) -> set[str]:
    return {key for key in schema if key.startswith("x-")}


def _unknown_keywords(schema: Any) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    return set(schema) - ANNOTATIONS - CONSTRAINTS - _extensions(schema)


def _branches(schema: dict[str, Any]) -> list[Any] | None:
    """The alternatives a schema is a union of (itself alone if none); None: not supported.

    `anyOf`/`oneOf` are read as unions (a value matching two oneOf branches is not expected in
    our records); `type: [a, b]` is split into one branch per type; a one-schema allOf is that
    schema."""
    rest = {key: value for key, value in schema.items() if key not in ("anyOf", "oneOf", "allOf")}
    if "allOf" in schema:
        if len(schema["allOf"]) != 1 or "anyOf" in schema or "oneOf" in schema:
            return None
        return _branches({**rest, **schema["allOf"][0]})
    union = schema.get("anyOf", schema.get("oneOf"))
    if union is not None:
        if set(rest) - ANNOTATIONS - _extensions(rest):
            return None  # constraints beside the union: not needed by our schemas
        return list(union)
    types = schema.get("type")
    if isinstance(types, list) and len(types) > 1:
        return [{**schema, "type": kind} for kind in types]
    return [schema]


def _allowed_values(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    if "enum" in schema:
        return list(schema["enum"])
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


def _types_of(schema: dict[str, Any]) -> set[str] | None:
    """The JSON types a schema admits; None for any. Values of an enum or const fix it."""
    declared = schema.get("type")
    if declared is not None:
        return {declared} if isinstance(declared, str) else set(declared)
    values = _allowed_values(schema)
    return None if values is None else {_json_type(value) for value in values}


def _shared_types(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    every = {"null", "boolean", "integer", "number", "string", "array", "object"}
    written, read = _types_of(old) or every, _types_of(new) or every
    return {kind for kind in written if _type_accepted(kind, read)}


def _type_accepted(kind: str, accepted: set[str]) -> bool:
    return kind in accepted or (kind == "integer" and "number" in accepted)


def _is_object_schema(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object" or any(key in schema for key in OBJECT_KEYWORDS)


def _content_model(schema: dict[str, Any]) -> Any:
    """What a record may carry beyond the declared properties: False (nothing, a closed model),
    a schema (a map's values, partially open) or True (anything, open)."""
    rest = schema.get("additionalProperties")
    if rest is None:
        return not schema.get("properties")
    return rest


def _show(values: Sequence[Any]) -> str:
    return json.dumps(list(values))[:200]


# --- the form to register --------------------------------------------------------------------


def registry_form(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as this checker reads it, for a Schema Registry: `additionalProperties: false`
    written out on every object that declares properties and says nothing of others."""
    closed = copy.deepcopy(schema)
    for node in _subschemas(closed):
        if node.get("properties") and "additionalProperties" not in node:
            node["additionalProperties"] = False
    return closed


def _subschemas(schema: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(schema, dict):
        return
    yield schema
    for key in ("properties", "$defs", "definitions"):
        for child in schema.get(key, {}).values():
            yield from _subschemas(child)
    for key in ("items", "additionalProperties"):
        yield from _subschemas(schema.get(key))
    for key in ("anyOf", "oneOf", "allOf"):
        for child in schema.get(key, ()):
            yield from _subschemas(child)


# --- files: a schema and its releases -------------------------------------------------------


def schema_key(path: Path | str) -> tuple[str, int]:
    """`intent_score.v2.json` -> ("intent_score", 2)."""
    match = _NAME.fullmatch(Path(path).name)
    if match is None:
        raise ValueError(f"{Path(path).name}: a schema file is named NAME.vN.json")
    return match["name"], int(match["version"])


def releases_of(path: Path, released_dir: Path = RELEASED_DIR) -> list[Path]:
    """The released versions a schema must stay compatible with: same name, version <= its own."""
    name, version = schema_key(path)
    found = []
    for released in released_dir.glob(f"{name}.v*.json"):
        released_name, released_version = schema_key(released)
        if released_name == name and released_version <= version:
            found.append((released_version, released))
    return [released for _, released in sorted(found)]


def check_directory(
    schema_dir: Path = SCHEMA_DIR, released_dir: Path = RELEASED_DIR
) -> dict[str, list[Change]]:
    """Breaking changes of each current schema against each of its releases, by file name;
    a name released but with no current schema at all is a withdrawn topic contract."""
    current = sorted(schema_dir.glob("*.v*.json"))
    found: dict[str, list[Change]] = {}
    for path in current:
        new = _load(path)
        for released in releases_of(path, released_dir):
            broken = breaking_changes(_load(released), new)
            if broken:
                found[f"{path.name} vs released/{released.name}"] = broken
    names = {schema_key(path)[0] for path in current}
    for released in sorted(released_dir.glob("*.v*.json")):
        if schema_key(released)[0] not in names:
            found[f"released/{released.name}"] = [
                Change("$", "schema_withdrawn", True, "no current schema of this name")]
    return found


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: Sequence[str] | None = None) -> int:
    del argv  # no options: the directories are the package's own
    found = check_directory(SCHEMA_DIR, RELEASED_DIR)  # read at call time: tests point them
    for pair, broken in found.items():
        print(pair)
        for change in broken:
            print(f"  {change}")
    if not found:
        print(f"every schema in {SCHEMA_DIR.name}/ is BACKWARD-compatible with its releases")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
