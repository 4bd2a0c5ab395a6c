"""Offline, strict validation of Kubernetes manifests against the schemas shipped in `schema/`.

As `kubectl apply --validate=strict` or `kubeconform -strict` would, without a cluster: a field
the schema does not declare is an error, not something the API server silently prunes. Two
kinds of schema:

- **Core kinds** (`schema/kubernetes/`: apps/v1 Deployment, v1 Service, autoscaling/v2
  HorizontalPodAutoscaler): Kubernetes' OpenAPI schemas as strict JSON Schema 2020-12
  (`additionalProperties: false` everywhere), from kubernetes-validate. A resource quantity
  must also read as one (`500m`, `2Gi`), as the API server parses it.
- **Custom resources** (`schema/kserve/`, `schema/prometheus-operator/`, and others a caller
  adds, such as the KubeRay schemas of the docs): a CRD's OpenAPI v3 schema, made strict by
  `strict()`: every object schema with `properties` and neither `additionalProperties` nor
  `x-kubernetes-preserve-unknown-fields: true` is closed (outside `allOf`/`anyOf`/`oneOf`/
  `not`, whose branches only constrain values); an `x-kubernetes-embedded-resource` also allows
  `apiVersion`, `kind` and `metadata`; `x-kubernetes-int-or-string: true` accepts an integer or
  a string; `nullable: true` accepts null. Other `x-kubernetes-*` keys (list and map types, CEL
  `x-kubernetes-validations`) and `format`s are not checked.

For every kind, `apiVersion` and `kind` must be the schema's, and `metadata` is a manifest's
ObjectMeta: a name or generateName, a namespace, labels and annotations, nothing else. Then
what the API server checks beyond the schema, for names and labels: a name is a DNS-1123
subdomain (a Service's and an InferenceService's a DNS-1035 label), a namespace a DNS-1123
label, and every label and annotation (at the top, in a pod template, in a selector) follows
Kubernetes' rules for keys and values. A YAML mapping with a duplicate key is an error
(`load_all`), as kubectl makes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError

# The kinds whose schemas ship in the package, by apiVersion and kind: the files under
# schema/ (each directory's README names the source, version and license).
PACKAGE_SCHEMAS: dict[tuple[str, str], str] = {
    ("apps/v1", "Deployment"): "kubernetes/deployment-apps-v1.json",
    ("v1", "Service"): "kubernetes/service-v1.json",
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
    ): "kubernetes/horizontalpodautoscaler-autoscaling-v2.json",
    (
        "serving.kserve.io/v1beta1",
        "InferenceService",
    ): "kserve/serving.kserve.io_v1beta1_inferenceservice.json",
    (
        "monitoring.coreos.com/v1",
        "PodMonitor",
    ): "prometheus-operator/monitoring.coreos.com_v1_podmonitor.json",
}

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# A label value, and a label or annotation key's name part: at most 63 characters.
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# resource.Quantity, as the API server parses it (k8s.io/apimachinery/pkg/api/resource).
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
ANNOTATIONS_MAX_BYTES = 256 * 1024  # all of an object's annotations together
# Kinds whose name becomes a DNS label (a Service's host name; KServe's own name check).
DNS1035_NAMED = {("v1", "Service"), ("serving.kserve.io/v1beta1", "InferenceService")}

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
CORE_TIGHTENED = {
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "type": ["string", "number"],
        "pattern": QUANTITY,
    },
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": ["string", "integer"]},
}


class InvalidManifest(ConfigError):
    """A manifest does not validate: the message names the file, the field and the problem."""

    title = "invalid Kubernetes manifest"


# ----------------------------------------------------------------------------- CRD schemas


def strict(schema: Any, *, closable: bool = True) -> Any:
    """A CRD's OpenAPI v3 schema as jsonschema should read it for a strict validation."""
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


# ----------------------------------------------------------------------------- validators


def _top(schema: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    """The top of a kind's schema: exactly its apiVersion and kind, a manifest's metadata."""
    schema["properties"]["apiVersion"] = {"enum": [api_version]}
    schema["properties"]["kind"] = {"enum": [kind]}
    schema["properties"]["metadata"] = OBJECT_META
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return schema


def make_validator(document: dict[str, Any], api_version: str, kind: str) -> Any:
    """A jsonschema validator for one kind, from its shipped schema (either flavour)."""
    if "$defs" in document:  # a core kind: strict JSON Schema 2020-12 already
        schema = dict(document)
        schema["properties"] = dict(schema["properties"])
        schema["$defs"] = {**schema["$defs"]}
        for name, tightened in CORE_TIGHTENED.items():
            if name in schema["$defs"]:
                schema["$defs"][name] = tightened
        return jsonschema.Draft202012Validator(_top(schema, api_version, kind))
    # OpenAPI v3's schema objects are JSON Schema draft 4's, give or take the keys strict() maps.
    return jsonschema.Draft4Validator(_top(strict(document), api_version, kind))


class SchemaSet:
    """Validators for a set of kinds, each built from its schema file on first use."""

    def __init__(self, readers: Mapping[tuple[str, str], Callable[[], str]]) -> None:
        self.readers = dict(readers)
        self._validators: dict[tuple[str, str], Any] = {}

    def __or__(self, other: SchemaSet) -> SchemaSet:
        return SchemaSet({**self.readers, **other.readers})

    @property
    def groups(self) -> set[str]:
        return {_group(api_version) for api_version, _ in self.readers}

    def validator(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        if key not in self._validators:
            reader = self.readers.get(key)
            if reader is None:
                same = [k for k in self.readers if _group(k[0]) == _group(api_version)]
                known = ", ".join(f"{a} {k}" for a, k in sorted(same or self.readers))
                raise KeyError(f"no schema for {api_version} {kind} (have: {known})")
            self._validators[key] = make_validator(json.loads(reader()), api_version, kind)
        return self._validators[key]

    def problems(self, manifest: Any) -> list[str]:
        """What is wrong with one manifest, each as '<field path>: <what>'; empty when valid."""
        if not isinstance(manifest, dict):
            return [f"<top>: a manifest is a mapping, not {type(manifest).__name__}"]
        api_version, kind = str(manifest.get("apiVersion")), str(manifest.get("kind"))
        try:
            checker = self.validator(api_version, kind)
        except KeyError as unknown:
            return [f"<top>: {unknown.args[0]}"]
        found = []
        for error in sorted(checker.iter_errors(manifest), key=lambda e: list(map(str, e.path))):
            path = list(error.absolute_path)
            if error.validator == "additionalProperties" and isinstance(error.instance, dict):
                declared = error.schema.get("properties", {})
                for name in sorted(set(error.instance) - set(declared)):
                    found.append(f"{dotted([*path, name])}: unknown field {name!r}")
            elif error.validator == "pattern" and error.validator_value == QUANTITY:
                found.append(
                    f"{dotted(path)}: {error.instance!r} is not a Kubernetes quantity "
                    "(e.g. 500m, 2, 1.5 for CPUs; 512Mi, 2Gi for bytes)"
                )
            else:
                found.append(f"{dotted(path)}: {error.message}")
        return found + _name_and_label_problems(manifest, (api_version, kind))


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def _package_reader(relative: str) -> Callable[[], str]:
    def read() -> str:
        return (resources.files(__package__) / "schema" / relative).read_text("utf-8")

    return read


PACKAGED = SchemaSet({key: _package_reader(path) for key, path in PACKAGE_SCHEMAS.items()})


def problems(manifest: Any) -> list[str]:
    """What is wrong with a manifest of a kind whose schema ships in the package."""
    return PACKAGED.problems(manifest)


# ----------------------------------------------------------------------------- names, labels


def _name_and_label_problems(manifest: dict[str, Any], key: tuple[str, str]) -> list[str]:
    found = []
    metadata = manifest.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if isinstance(name, str) and key in DNS1035_NAMED and not _dns1035(name):
        found.append(
            f"metadata.name: {name!r} is not a DNS-1035 label (at most 63 lower-case letters, "
            "digits and '-', starting with a letter), which a "
            f"{key[1]}'s name must be"
        )
    maps = list(_label_maps(manifest, ()))
    spec = manifest.get("spec")
    selector = spec.get("selector") if isinstance(spec, dict) else None
    if key == ("v1", "Service") and isinstance(selector, dict):
        maps.append((["spec", "selector"], selector, "label"))
    for path, mapping, what in maps:
        found += [f"{dotted(path)}: {problem}" for problem in map_problems(mapping, what)]
    return found


def _dns1035(name: str) -> bool:
    return len(name) <= 63 and re.match(DNS1035_LABEL, name) is not None


def _label_maps(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[list[Any], Any, str]]:
    """Every labels, selector and annotations mapping in a manifest, with its path."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _label_maps(item, (*path, index))
        return
    if not isinstance(node, dict):
        return
    for name, value in node.items():
        where = (*path, name)
        if name in ("labels", "matchLabels", "annotations") and isinstance(value, dict):
            yield list(where), value, "annotation" if name == "annotations" else "label"
        else:
            yield from _label_maps(value, where)


def map_problems(mapping: Mapping[Any, Any], what: str) -> list[str]:
    """What is wrong with a map of labels (what='label') or annotations ('annotation')."""
    found = []
    for key, value in mapping.items():
        problem = key_problem(str(key), what)
        if problem:
            found.append(problem)
        elif what == "label" and isinstance(value, str) and (problem := label_value_problem(value)):
            found.append(f"{key}: {problem}")
    if what == "annotation":
        size = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in mapping.items())
        if size > ANNOTATIONS_MAX_BYTES:
            found.append(f"the annotations take {size} bytes, more than the 256 KiB allowed")
    return found


def key_problem(key: str, what: str) -> str:
    """Why a label or annotation key is not one ('' when it is): `[prefix/]name`, the prefix
    a DNS-1123 subdomain of at most 253 characters, the name at most 63 characters of
    letters, digits, '-', '_' and '.', starting and ending with a letter or digit."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not re.match(DNS1123_SUBDOMAIN, prefix)):
        return f"{what} key {key!r}: its prefix {prefix!r} is not a DNS subdomain"
    if not name or len(name) > 63 or not re.match(LABEL_VALUE, name):
        return (
            f"{what} key {key!r} is not a valid {what} key (at most 63 letters, digits, '-', "
            "'_' or '.', starting and ending with a letter or digit, after an optional "
            "DNS-subdomain prefix and '/')"
        )
    return ""


def label_value_problem(value: str) -> str:
    """Why a label value is not one ('' when it is)."""
    if len(value) > 63 or not re.match(LABEL_VALUE, value):
        return (
            f"label value {value!r} is not valid (at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit, or empty)"
        )
    return ""


def dotted(path: Sequence[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "<top>"


# ----------------------------------------------------------------------------- YAML


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A safe loader (libyaml's where PyYAML has it) that refuses a duplicate key."""


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
    """Every document of a YAML text, read safely, a duplicate key being an error."""
    return list(yaml.load_all(text, Loader=_StrictLoader))


def check_files(files: Mapping[str, str], schemas: SchemaSet = PACKAGED) -> None:
    """Raise InvalidManifest naming every problem of a set of YAML files (path -> text)."""
    found = []
    for path, text in files.items():
        try:
            documents = load_all(text)
        except yaml.YAMLError as error:
            found.append(f"{path}: not YAML: {str(error).splitlines()[0]}")
            continue
        for document in documents:
            if document is None:
                continue
            title = f"{document.get('kind')}" if isinstance(document, dict) else "document"
            found += [f"{path}: {title}: {problem}" for problem in schemas.problems(document)]
    if found:
        raise InvalidManifest(
            "; ".join(found[:10]) + (f"; and {len(found) - 10} more" if len(found) > 10 else ""),
            "this is what the cluster would refuse: fix the deploy: values it names in "
            "mlops.yaml, or report a bug if none is yours",
        )
