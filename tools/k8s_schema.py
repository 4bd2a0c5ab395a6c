#!/usr/bin/env python3
"""Extract one Kubernetes kind's strict JSON Schema, standalone, from kubernetes-validate.

    .venv/bin/python tools/k8s_schema.py --kubernetes 1.33.0 deployment-apps-v1 \
      > scripts/mlops_actions/schema/kubernetes/deployment-apps-v1.json

kubernetes-validate (a test dependency) ships the Kubernetes OpenAPI schemas per version as
JSON Schema 2020-12, in a strict flavour (`additionalProperties: false` on every object):
`kubernetes-json-schema/v<version>-local-strict/<kind>-<group>-<version>.json`, whose `$ref`s
point into one `_definitions.json` of every type. This writes the kind's schema with just the
definitions it reaches (under `$defs`, refs made local), without `description` keywords, and a
`$comment` naming the source. scripts/mlops_actions/schema/kubernetes/README.md has the exact
commands that made the shipped files.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from importlib import resources
from typing import Any

from crd_schema import strip_descriptions

REF_PREFIXES = ("/api/_definitions.json#/$defs/", "#/$defs/")


def local_refs(schema: Any, found: set[str]) -> Any:
    """The schema with every `$ref` into the definitions made local; their names in `found`."""
    if isinstance(schema, list):
        return [local_refs(item, found) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "$ref" and isinstance(value, str):
            prefix = next((p for p in REF_PREFIXES if value.startswith(p)), None)
            if prefix is None:
                raise SystemExit(f"unexpected $ref {value!r}")
            found.add(value[len(prefix) :])
            out[key] = "#/$defs/" + value[len(prefix) :]
        elif key in ("enum", "default", "example"):
            out[key] = value
        else:
            out[key] = local_refs(value, found)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubernetes", required=True, help="the Kubernetes version, e.g. 1.33.0")
    parser.add_argument("name", help="the schema file's name, e.g. deployment-apps-v1")
    args = parser.parse_args()
    directory = (
        resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{args.kubernetes}-local-strict"
    )
    top = json.loads((directory / f"{args.name}.json").read_text())
    definitions = json.loads((directory / "_definitions.json").read_text())["$defs"]
    wanted: set[str] = set()
    body = local_refs(strip_descriptions(top), wanted)
    kept: dict[str, Any] = {}
    while wanted - set(kept):
        for name in sorted(wanted - set(kept)):
            kept[name] = local_refs(strip_descriptions(definitions[name]), wanted)
    [gvk] = top["x-kubernetes-group-version-kind"]
    api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
    package = importlib.metadata.version("kubernetes-validate")
    body.pop("$id", None)
    schema = {
        "$schema": body.pop("$schema"),
        "$comment": f"{api_version} {gvk['kind']}: the Kubernetes v{args.kubernetes} OpenAPI "
        f"schema, strict, as kubernetes-validate {package} ships it "
        f"(kubernetes-json-schema/v{args.kubernetes}-local-strict/{args.name}.json and the "
        "definitions it refers to, from _definitions.json), without its description keywords. "
        "Apache-2.0. Regenerate: scripts/mlops_actions/schema/kubernetes/README.md.",
        **body,
        "$defs": dict(sorted(kept.items())),
    }
    json.dump(schema, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
