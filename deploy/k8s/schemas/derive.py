"""Derive the JSON Schemas vendored here from CustomResourceDefinition YAML files.

    python deploy/k8s/schemas/derive.py CRD.yaml [CRD.yaml ...] --out deploy/k8s/schemas

For each served version of each CRD it writes `<group>_<kind>_<version>.json` (lower-case
kind): the version's `openAPIV3Schema`, made a JSON Schema (draft 2020-12) that says what the
API server would say about our manifests:
- `apiVersion` and `kind` are fixed (const) and required, with `metadata`;
- `nullable: true` adds "null" to the type, `x-kubernetes-int-or-string` becomes integer or
  string;
- an object that declares properties and has neither `additionalProperties` nor
  `x-kubernetes-preserve-unknown-fields` gets `additionalProperties: false`: kubectl's strict
  field validation (the default since Kubernetes 1.27) rejects an unknown field there;
- `x-kubernetes-validations` (CEL rules) are dropped: they cannot be evaluated here, so the
  test checks the ones our manifests could break by hand (deploy/k8s/schemas/README.md).
Where the sources came from, and their versions: README.md beside this file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

DROPPED = ("x-kubernetes-validations",)


def json_schema(node: Any) -> Any:
    """One OpenAPI v3 (structural) schema node -> JSON Schema, recursively."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: json_schema(value) for key, value in node.items() if key not in DROPPED}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["type"] = ["integer", "string"]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    open_ended = out.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not open_ended:
        out["additionalProperties"] = False
    return out


def derive(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{file name: JSON Schema} for each served version of one CRD."""
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    found = {}
    for version in crd["spec"]["versions"]:
        if not version.get("served"):
            continue
        schema = json_schema(version["schema"]["openAPIV3Schema"])
        schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
        schema["properties"]["kind"] = {"const": kind}
        schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind",
                                     "metadata"})
        name = f"{group}_{kind.lower()}_{version['name']}.json"
        found[name] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"{kind} {group}/{version['name']}",
            **schema,
        }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crds", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    for path in args.crds:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not document or document.get("kind") != "CustomResourceDefinition":
                continue
            for name, schema in derive(document).items():
                (args.out / name).write_text(json.dumps(schema, indent=1) + "\n")
                print(args.out / name)


if __name__ == "__main__":
    main()
