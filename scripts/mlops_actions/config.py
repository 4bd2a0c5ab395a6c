"""mlops.yaml: loading, validation against the shipped JSON Schema, and layered resolution.

Precedence, highest first: action input (or CLI flag) > environment variable > mlops.yaml >
built-in default. Every effective value remembers where it came from, so `config show` can
say why a value is what it is. Errors name the JSON path (and the file line) or the input.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import re
import reprlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema

from . import pairs, user_yaml
from .errors import ConfigError

CONFIG_FILE_NAME = "mlops.yaml"
TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0"})
SCHEMA_HINT = "see the mlops.yaml reference in the README, or run `mlops-actions config show`"

# Well-known variables that other tools already use; every other leaf has MLOPS_<PATH>.
ENVIRONMENT_ALIASES: dict[str, str] = {
    "mlflow.tracking_uri": "MLFLOW_TRACKING_URI",
    "mlflow.registry_uri": "MLFLOW_REGISTRY_URI",
    "mlflow.experiment": "MLFLOW_EXPERIMENT_NAME",
    "monitoring.pushgateway_url": "MLOPS_PUSHGATEWAY_URL",
    "train.ray.address": "RAY_ADDRESS",
}

# Keys that replace each other: a layer that sets one hides the other from lower layers, so
# `--command` on the CLI wins over a `train.project` in mlops.yaml instead of clashing with it.
EXCLUSIVE_KEYS: tuple[tuple[str, str], ...] = (("train.command", "train.project"),)

DEFAULTS: dict[str, Any] = {
    "mlflow": {"tracking_uri": ""},
    "data": {"targets": [], "repo": "."},
    "train": {"working_directory": "."},
    "gate": {
        "first_model": "pass",
        "champion_alias": "champion",
        "advisory": False,
        "compare": "logged",
        "history": 10,
        "resamples": 2000,
        "seed": 0,
        "evaluation": {"python": "python", "metric_prefix": "eval_", "average": "weighted"},
        "report": {"pr_comment": True, "check_run": True},
    },
    "image": {"push": True, "smoke_test": True, "attestations": True, "tags": []},
    "monitoring": {"job": "mlops-actions", "timeout_seconds": 5},
    "promote": {
        "alias": "champion",
        "require_gate": True,
        "history_limit": 50,
        "lock_wait_seconds": 120,
        "lock_expiry_seconds": 60,
    },
}


@functools.cache
def load_schema() -> dict[str, Any]:
    """The shipped schema, read once per process (callers must not modify it)."""
    text = resources.files(__package__).joinpath("schema/mlops.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@dataclass(frozen=True)
class Config:
    """The effective configuration and where each leaf value came from."""

    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.values
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def source(self, dotted: str) -> str:
        """Where a value came from: the deepest recorded source at or above `dotted`."""
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            found = self.sources.get(".".join(parts[:end]))
            if found:
                return found
        return "default"

    def render(self) -> str:
        """YAML of the effective config, each leaf commented with its source."""
        lines: list[str] = []
        _render_node(self.values, "", 0, self.sources, lines)
        return "\n".join(lines) + "\n"


def _render_node(
    node: dict[str, Any], prefix: str, depth: int, sources: Mapping[str, str], out: list[str]
) -> None:
    pad = "  " * depth
    for key in sorted(node):
        value = node[key]
        dotted = f"{prefix}{key}"
        origin = sources.get(dotted)
        if isinstance(value, dict) and value and origin is None:
            out.append(f"{pad}{key}:")
            _render_node(value, dotted + ".", depth + 1, sources, out)
            continue
        out.append(f"{pad}{key}: {json.dumps(value)}  # {origin or 'default'}")


# ----------------------------------------------------------------------------- schema walking


def _leaf_schemas(schema: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted paths of every settable key: objects with fixed properties are walked into."""
    for key, sub in schema.get("properties", {}).items():
        dotted = f"{prefix}{key}"
        if sub.get("type") == "object" and "properties" in sub:
            yield from _leaf_schemas(sub, dotted + ".")
        else:
            yield dotted, sub


def schema_at(dotted: str, schema: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    node: Mapping[str, Any] = schema or load_schema()
    for part in dotted.split("."):
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]  # a key of a free-form map (a tag, a parameter)
        else:
            raise KeyError(dotted)
    return node


def environment_variable(dotted: str) -> str:
    return ENVIRONMENT_ALIASES.get(dotted, "MLOPS_" + dotted.upper().replace(".", "_"))


# ----------------------------------------------------------------------------- coercion


def coerce(raw: str, leaf: Mapping[str, Any], where: str) -> Any:
    """Turn an input or environment string into the type the schema wants at that key."""
    kind = leaf.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    text = raw.strip()
    if "integer" in kinds:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{where} must be a whole number, got {raw!r}") from None
    if "boolean" in kinds:
        if text.lower() in TRUE_WORDS | FALSE_WORDS:
            return text.lower() in TRUE_WORDS
        raise ConfigError(f"{where} must be 'true' or 'false', got {raw!r}")
    if "number" in kinds and "string" not in kinds:  # a number or a string (500m): the string
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {raw!r}") from None
    if "array" in kinds and leaf.get("items", {}).get("type") == "object":
        return _parse_document(text, where, list)
    if "array" in kinds:
        items = [piece for line in text.splitlines() for piece in line.replace(",", " ").split()]
        return items
    if "object" in kinds and ("string" not in kinds or text.startswith("{")):
        return _parse_mapping(text, where)
    return raw if "string" in kinds or kind is None else text


def _parse_document(text: str, where: str, kind: type) -> Any:
    """A YAML (or JSON, which is YAML) value of the given kind, e.g. a list of gate rules."""
    parsed, _ = user_yaml.load(text, where, is_file=False)
    if not isinstance(parsed, kind):
        raise ConfigError(f"{where} must be a YAML or JSON {'list' if kind is list else 'mapping'}")
    return parsed


def _parse_mapping(text: str, where: str) -> dict[str, Any]:
    """A JSON object, or `key=value` pairs (one per line; see `pairs` for commas)."""
    if not text:
        return {}
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where} is not valid JSON: {exc.msg}") from None
        if not isinstance(parsed, dict):
            raise ConfigError(f"{where} must be a JSON object")
        return parsed
    return dict(pairs.parse_pairs(text, where))


# ----------------------------------------------------------------------------- validation


def _unknown_keys(error: jsonschema.ValidationError) -> tuple[list[str], list[str]]:
    """For an additionalProperties error: (allowed keys, unexpected keys), both sorted."""
    if error.validator != "additionalProperties" or not isinstance(error.instance, dict):
        return [], []
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    allowed = sorted(schema.get("properties", {}))
    return allowed, sorted(str(k) for k in error.instance if k not in allowed)


def _describe(error: jsonschema.ValidationError) -> str:
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    allowed, unexpected = _unknown_keys(error)
    if unexpected:
        messages = []
        for key in unexpected:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            suggestion = f" (did you mean '{close[0]}'?)" if close else ""
            messages.append(
                f"{path}.{key}: unknown key{suggestion}; allowed here: {', '.join(allowed)}"
            )
        return "; ".join(messages)
    if error.validator == "type":
        got = type(error.instance).__name__
        expected = error.validator_value
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{path}: expected {wanted}, got {got} {_short(error.instance)}"
    if error.validator in ("enum", "const"):
        value = error.validator_value
        options = value if error.validator == "enum" and isinstance(value, list) else [value]
        return f"{path}: {_short(error.instance)} is not one of {', '.join(map(repr, options))}"
    if error.validator == "minLength":
        return f"{path}: must not be empty"
    if error.validator == "pattern" and isinstance(error.instance, str):
        if _url_password(error.instance):  # never echo a password, not even in an error
            return f"{path}: the URL has credentials in it; pass them in the environment instead"
        title = error.schema.get("title") if isinstance(error.schema, Mapping) else None
        if title:  # a pattern with a name says what it wants in words, e.g. a label key
            key = "key " if "propertyNames" in error.schema_path else ""
            return f"{path}: {key}{_short(error.instance)} is not {title}"
        return f"{path}: {_short(error.instance)} does not match {error.validator_value!r}"
    branches = error.validator_value if error.validator == "anyOf" else None
    if isinstance(branches, list) and all(set(branch) == {"required"} for branch in branches):
        keys = [key for branch in branches for key in branch["required"]]
        return f"{path}: set at least one of {', '.join(keys)}"
    if error.validator == "not" and error.validator_value == {"required": ["command", "project"]}:
        return f"{path}: set either 'command' or 'project', not both"
    return f"{path}: {error.message}"


# A value in an error stays short, however large the document (one error line, not a megabyte).
MAX_REPORTED = 20  # errors listed in one message


def _short(value: Any) -> str:
    short = reprlib.Repr()  # keyword arguments only from Python 3.12
    short.maxstring = short.maxother = 80
    short.maxlist = short.maxdict = 4
    short.maxlevel = 2
    return short.repr(value)


def _url_password(text: str) -> str:
    try:
        return urlsplit(text.strip()).password or ""
    except ValueError:
        return ""


def _error_location(error: jsonschema.ValidationError) -> tuple[Any, ...]:
    """The JSON path to point at: for an unknown key, the key itself, not its parent."""
    path = tuple(error.absolute_path)
    _, unexpected = _unknown_keys(error)
    return (*path, unexpected[0]) if unexpected else path


def validate(
    document: Any, *, origin: str, lines: Mapping[tuple[Any, ...], int] | None = None
) -> None:
    """Raise one ConfigError listing every schema violation in `document`."""
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return
    described = [_describe(e) for e in errors[:MAX_REPORTED]]
    if len(errors) > MAX_REPORTED:
        described.append(f"and {len(errors) - MAX_REPORTED} more")
    first_line = None
    if lines:
        first_line = lines.get(_error_location(errors[0]))
    where = f"{origin}:{first_line}" if first_line else origin
    error = ConfigError(f"{where}: " + "; ".join(described), SCHEMA_HINT)
    error.file = origin  # type: ignore[attr-defined]
    error.line = first_line  # type: ignore[attr-defined]
    raise error


# ----------------------------------------------------------------------------- loading


def read_file(path: Path) -> dict[str, Any]:
    """Parse and validate one mlops.yaml; an empty file is an empty config."""
    try:
        with path.open("rb") as stream:  # read no further than the limit: not /dev/zero either
            data = stream.read(user_yaml.MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if len(data) > user_yaml.MAX_BYTES:
        raise user_yaml.too_large(str(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start})", "save it as UTF-8") from None
    document, lines = user_yaml.load(text, str(path))
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections", SCHEMA_HINT)
    validate(document, origin=str(path), lines=lines)
    return document


# A leaf's place in the tree is a tuple of keys, not a dotted string: a key of a free-form map
# (a tag, a label such as app.kubernetes.io/part-of) may have dots in it.
KeyPath = tuple[str, ...]


def _set(tree: dict[str, Any], path: KeyPath | str, value: Any) -> None:
    parts = path.split(".") if isinstance(path, str) else path
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _drop(tree: dict[str, Any], path: KeyPath | str) -> None:
    parts = path.split(".") if isinstance(path, str) else path
    node: Any = tree
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def _leaves(tree: Mapping[str, Any], prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and value and _is_walked(path):
            yield from _leaves(value, path)
        else:
            yield path, value


def _is_walked(path: KeyPath) -> bool:
    """Mappings (sections, tags, parameters) merge key by key across layers."""
    node: Mapping[str, Any] = load_schema()
    for part in path:
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return False
    return node.get("type") == "object"


def _merge_layer(
    merged: dict[str, Any], sources: dict[str, str], layer: Mapping[str, Any], origin: str
) -> None:
    layer_leaves = dict(_leaves(layer))
    for first, second in EXCLUSIVE_KEYS:
        for mine, other in ((first, second), (second, first)):
            if any(".".join(k) == mine or ".".join(k).startswith(mine + ".") for k in layer_leaves):
                _drop(merged, other)
                for key in [k for k in sources if k == other or k.startswith(other + ".")]:
                    del sources[key]
    for path, value in layer_leaves.items():
        _set(merged, path, copy.deepcopy(value))
        sources[".".join(path)] = origin


def resolve(
    *,
    config_path: Path | None,
    environ: Mapping[str, str],
    inputs: Mapping[str, tuple[str, str]] | None = None,
    require_file: bool = False,
) -> Config:
    """Build the effective config.

    `inputs` maps a dotted config key to (input name, raw string) for every input that was
    given a non-empty value. `require_file` makes a missing config file an error (it was
    named explicitly); otherwise a missing mlops.yaml is an empty one.
    """
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    _merge_layer(merged, sources, DEFAULTS, "default")
    # Defaults are not interesting sources; forget them so `source()` says "default".
    sources.clear()

    used_path: Path | None = None
    if config_path is not None and config_path.is_file():
        used_path = config_path
        _merge_layer(merged, sources, read_file(config_path), f"file {config_path.name}")
    elif config_path is not None and (require_file or config_path.exists()):
        what = "is not a file" if config_path.exists() else "does not exist"
        raise ConfigError(
            f"config file {config_path} {what}",
            "create it, or point the `config` input / MLOPS_CONFIG at the right path",
        )

    # One leaf at a time, so each value keeps its own origin for `config show`.
    schema = load_schema()
    for dotted, leaf in _leaf_schemas(schema):
        variable = environment_variable(dotted)
        raw = environ.get(variable, "")
        if raw.strip():
            value = coerce(raw, leaf, f"environment variable {variable}")
            _merge_value(merged, sources, dotted, value, f"environment {variable}")
    for dotted, (name, raw) in (inputs or {}).items():
        value = coerce(raw, schema_at(dotted, schema), f"input '{name}'")
        _merge_value(merged, sources, dotted, value, f"input {name}")

    try:
        validate(merged, origin="effective configuration")
    except ConfigError as exc:
        # Point at the layer that set the bad value where we can.
        raise ConfigError(_attribute(exc.message, sources), exc.hint) from None
    return Config(values=merged, sources=sources, path=used_path)


def _merge_value(
    merged: dict[str, Any], sources: dict[str, str], dotted: str, value: Any, origin: str
) -> None:
    layer: dict[str, Any] = {}
    _set(layer, dotted, value)
    _merge_layer(merged, sources, layer, origin)


def _attribute(message: str, sources: Mapping[str, str]) -> str:
    """Add ' (from input X)' after JSON paths that an input or variable set."""
    for dotted, origin in sorted(sources.items(), key=lambda kv: -len(kv[0])):
        if origin.startswith("file"):
            continue
        # The path itself or anything below it, e.g. $.gate.rules[0].direction.
        path = re.compile(rf"(\$\.{re.escape(dotted)}(?:[.\[][^:\s]*)?):")
        message = path.sub(lambda m, o=origin: f"{m.group(1)} (from {o}):", message)  # type: ignore[misc]
    return message
