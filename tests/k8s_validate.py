"""Offline validation of Kubernetes manifests against a CRD's OpenAPI v3 schema, strictly.

As `kubectl apply --validate=strict` or `kubeconform -strict` would: a field the schema does not
declare is an error, not silently pruned by the API server. Concretely, with `jsonschema`:

- every object schema with `properties` and neither `additionalProperties` nor
  `x-kubernetes-preserve-unknown-fields: true` is closed (outside `allOf`/`anyOf`/`oneOf`/`not`,
  whose branches only constrain values); an `x-kubernetes-embedded-resource` also allows
  `apiVersion`, `kind` and `metadata`;
- `x-kubernetes-int-or-string: true` accepts an integer or a string; `nullable: true` accepts
  null; the other `x-kubernetes-*` keys (list types, map types, CEL `x-kubernetes-validations`)
  are not checked, nor are `format`s;
- at the top, `apiVersion` and `kind` must be the schema's, and `metadata` (which a CRD's schema
  leaves open) is checked as a manifest's ObjectMeta: a name or generateName, string labels and
  annotations, nothing else;
- a YAML mapping with a duplicate key is an error (kubectl refuses it too).

    python -m tests.k8s_validate docs/workflows.md   # every ray.io manifest in its ```yaml blocks

The schemas are those of `schema/kuberay/` (README there); `SCHEMAS` maps apiVersion and kind
to a file, for more (KServe's, say) later.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "schema"
SCHEMAS: dict[tuple[str, str], Path] = {
    ("ray.io/v1", "RayCluster"): SCHEMA_DIR / "kuberay" / "ray.io_v1_raycluster.json",
    ("ray.io/v1", "RayJob"): SCHEMA_DIR / "kuberay" / "ray.io_v1_rayjob.json",
}
# The API groups whose every manifest must have a schema here (others are not checked).
CHECKED_GROUPS = ("ray.io",)

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS1123_SUBDOMAIN},
        "generateName": {"type": "string", "maxLength": 253},
        "namespace": {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
    },
    "anyOf": [{"required": ["name"]}, {"required": ["generateName"]}],
}
JUNCTORS = ("allOf", "anyOf", "oneOf")


def strict(schema: Any, *, closable: bool = True) -> Any:
    """The schema as jsonschema should read it for a strict validation (module docstring)."""
    if not isinstance(schema, dict):
        return schema
    out = _children(schema)
    _kubernetes_keys(schema, out)
    if (
        closable
        and "properties" in out
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _children(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema's keywords without the Kubernetes ones, its subschemas made strict."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in ("$comment", "nullable", "description"):
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = strict(value)
        elif key in JUNCTORS:
            out[key] = [strict(sub, closable=False) for sub in value]
        elif key == "not":
            out[key] = strict(value, closable=False)
        else:
            out[key] = value
    return out


def _kubernetes_keys(schema: dict[str, Any], out: dict[str, Any]) -> None:
    """What int-or-string, nullable and embedded-resource mean, in JSON Schema."""
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
        branches = out.get("anyOf", [])
        if branches and all(set(b) == {"type"} for b in branches):
            del out["anyOf"]  # controller-gen's anyOf [integer, string]: the same, said twice
    if schema.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    if schema.get("x-kubernetes-embedded-resource"):
        out.setdefault("properties", {})
        out["properties"].setdefault("apiVersion", {"type": "string"})
        out["properties"].setdefault("kind", {"type": "string"})
        out["properties"]["metadata"] = OBJECT_META


@functools.cache
def validator(api_version: str, kind: str) -> jsonschema.Draft4Validator:
    path = SCHEMAS.get((api_version, kind))
    if path is None:
        known = ", ".join(f"{a} {k}" for a, k in sorted(SCHEMAS))
        raise KeyError(f"no schema for {api_version} {kind} (have: {known})")
    schema = strict(json.loads(path.read_text()))
    schema["properties"]["apiVersion"] = {"enum": [api_version]}
    schema["properties"]["kind"] = {"enum": [kind]}
    schema["properties"]["metadata"] = OBJECT_META
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    # OpenAPI v3's schema objects are JSON Schema draft 4's, give or take the keys above.
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def dotted(path: Sequence[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "<top>"


def problems(manifest: Any) -> list[str]:
    """What is wrong with one manifest, each as '<field path>: <what>'; empty when valid."""
    if not isinstance(manifest, dict):
        return [f"<top>: a manifest is a mapping, not {type(manifest).__name__}"]
    api_version, kind = manifest.get("apiVersion"), manifest.get("kind")
    try:
        checker = validator(str(api_version), str(kind))
    except KeyError as error:
        return [f"<top>: {error.args[0]}"]
    found = []
    for error in sorted(checker.iter_errors(manifest), key=lambda e: list(map(str, e.path))):
        path = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            declared = error.schema.get("properties", {})
            for name in sorted(set(error.instance) - set(declared)):
                found.append(f"{dotted([*path, name])}: unknown field {name!r}")
        else:
            found.append(f"{dotted(path)}: {error.message}")
    return found


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a duplicate key in a mapping."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=_StrictLoader))  # a SafeLoader


def yaml_blocks(markdown: str) -> Iterator[tuple[int, str]]:
    """Each ```yaml block of a Markdown text: the line its body starts on, and the body."""
    for match in re.finditer(r"^( *)```ya?ml\n(.*?)^\1```", markdown, re.M | re.S):
        body = "\n".join(
            line[len(match[1]) :] for line in match[2].splitlines()
        )  # a block in a list item is indented
        yield markdown.count("\n", 0, match.start()) + 2, body


def manifests(markdown: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """The Kubernetes manifests of a Markdown text's YAML blocks in the checked API groups."""
    for line, body in yaml_blocks(markdown):
        for document in load_all(body):
            if not isinstance(document, Mapping):
                continue
            group = str(document.get("apiVersion", "")).split("/")[0]
            if group in CHECKED_GROUPS:
                yield line, dict(document)


def main(argv: Sequence[str]) -> int:
    failed = checked = 0
    for name in argv:
        for line, manifest in manifests(Path(name).read_text()):
            checked += 1
            title = f"{manifest.get('kind')} {manifest.get('metadata', {}).get('name')}"
            for problem in problems(manifest):
                failed += 1
                print(f"{name}:{line}: {title}: {problem}")
    print(f"k8s_validate: {checked} manifest(s), {failed} problem(s)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
