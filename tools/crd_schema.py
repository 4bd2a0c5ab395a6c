#!/usr/bin/env python3
"""Extract one version's OpenAPI v3 schema from a CustomResourceDefinition, as JSON.

    git -C <kuberay clone> show v1.7.0:ray-operator/config/crd/bases/ray.io_rayjobs.yaml \
      | python3 tools/crd_schema.py --version v1 --source ... > schema/kuberay/ray.io_v1_rayjob.json

Reads the CRD (YAML) from stdin, writes `spec.versions[name=<version>].schema.openAPIV3Schema`
with a `$comment` naming its source. `description` keywords are dropped (they are most of the
size and no part of validation); everything else is kept as the CRD has it.
schema/kuberay/README.md and scripts/mlops_actions/schema/{kserve,prometheus-operator}/README.md
have the exact commands that made the shipped files.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

# Keywords whose value is a map of names to schemas: a "description" there is a field's name.
NAMED_SCHEMAS = ("properties", "patternProperties", "definitions")


def strip_descriptions(schema: Any) -> Any:
    if isinstance(schema, list):
        return [strip_descriptions(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "description":
            continue
        if key in NAMED_SCHEMAS and isinstance(value, dict):
            out[key] = {name: strip_descriptions(sub) for name, sub in value.items()}
        elif key in ("default", "enum", "example"):
            out[key] = value  # values, not schemas
        else:
            out[key] = strip_descriptions(value)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", required=True, help="the CRD version, e.g. v1")
    parser.add_argument("--source", required=True, help="where the CRD came from ($comment)")
    parser.add_argument("--keep-descriptions", action="store_true")
    parser.add_argument(
        "--license", default="Apache-2.0", help="the source's license, for the $comment"
    )
    parser.add_argument(
        "--regenerate",
        default="schema/kuberay/README.md",
        help="the file with the commands that made it, for the $comment",
    )
    parser.add_argument(
        "--compact", action="store_true", help="JSON without indentation (package data)"
    )
    args = parser.parse_args()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(sys.stdin.read(), Loader=loader)  # noqa: S506 (a safe loader)
    if crd.get("kind") != "CustomResourceDefinition":
        parser.error("stdin is not a CustomResourceDefinition")
    found = [v for v in crd["spec"]["versions"] if v["name"] == args.version]
    if not found:
        parser.error(f"{crd['metadata']['name']} has no version {args.version}")
    schema = found[0]["schema"]["openAPIV3Schema"]
    if not args.keep_descriptions:
        schema = strip_descriptions(schema)
    names = crd["spec"]["names"]
    header = {
        "$comment": f"{crd['spec']['group']}/{args.version} {names['kind']}: "
        f"spec.versions[name={args.version}].schema.openAPIV3Schema of {args.source}"
        + ("" if args.keep_descriptions else ", without its description keywords")
        + f". {args.license}. Regenerate: {args.regenerate}.",
        "x-kubernetes-group-version-kind": [
            {
                "group": crd["spec"]["group"],
                "version": args.version,
                "kind": names["kind"],
            }
        ],
    }
    if args.compact:
        json.dump({**header, **schema}, sys.stdout, separators=(",", ":"))
    else:
        json.dump({**header, **schema}, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
