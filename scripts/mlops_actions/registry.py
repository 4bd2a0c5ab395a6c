"""The MLflow model registry as the gate and promotion see it: who holds an alias, and what a
candidate string (a run id or a model URI) points at."""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from .errors import ConfigError, ServiceError
from .tracking import _hint, _reason, logged_models, redact

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))?/?$")
RUNS_URI = re.compile(r"^runs:/(?P<run_id>[0-9a-f]{32})(?:/(?P<path>.*))?$")


@dataclass(frozen=True)
class VersionRef:
    """One registered model version."""

    name: str
    version: str
    run_id: str
    model_id: str
    aliases: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        """Pinned to the version, not the alias, so a later alias move cannot change it."""
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class Candidate:
    """What a candidate string resolved to."""

    given: str
    run_id: str
    model_uri: str  # '' when the run logged no model
    version: VersionRef | None = None  # when the candidate is a registered version


def version_ref(found: ModelVersion) -> VersionRef:
    return VersionRef(
        name=found.name,
        version=str(found.version),
        run_id=found.run_id or "",
        model_id=getattr(found, "model_id", None) or "",
        aliases=tuple(found.aliases or ()),
    )


def _not_found(error: Exception) -> bool:
    return getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def alias_holder(client: MlflowClient, name: str, alias: str) -> VersionRef | None:
    """The version that holds `alias`, or None when the model or the alias does not exist.

    Asked by alias first, one indexed lookup. The registered model would name the holder too,
    but MLflow's SQL stores build that answer from every version of the model (3.17: 0.3 s at
    10,000 versions on SQLite, see docs/benchmarks.md). When the lookup fails, the model is read
    as before, to tell a free alias from a missing model from a refusal. MLflow answers the
    reserved `latest` with the newest version, alias or not: that name skips the lookup.
    """
    from mlflow.exceptions import MlflowException

    if alias.lower() != "latest":
        try:
            return version_ref(client.get_model_version_by_alias(name, alias))
        except MlflowException:
            pass
    try:
        model = registered_model(client, name)
    except MlflowException as error:
        if _not_found(error):
            return None
        raise
    version = dict(model.aliases or {}).get(alias)
    if version is None:
        return None
    return version_ref(client.get_model_version(name, str(version)))


def registered_model(client: MlflowClient, name: str) -> Any:
    """The registered model with its tags and aliases; MLflow's not-found error if none.

    A search by exact name, not GetRegisteredModel: MLflow's SQL stores (3.17) build that
    answer from every version of the model, 0.27 s at 10,000 versions on SQLite against 0.06 s
    for the search (docs/benchmarks.md). A name no filter literal can hold is read directly.
    """
    literal = filter_literal(name)
    if literal is not None:
        for model in client.search_registered_models(f"name = {literal}", max_results=10):
            if model.name == name:
                return model
    return client.get_registered_model(name)  # absent: raises RESOURCE_DOES_NOT_EXIST


def filter_literal(value: str) -> str | None:
    """`value` as a string literal of an MLflow search filter, or None when none can express it.

    MLflow's parser (SearchUtils / SearchModelVersionUtils, on sqlparse) takes a value in single
    or double quotes and only strips the two ends: it has no escape, so a doubled or
    backslashed quote is not unescaped. Hence single quotes when the value has none, else
    double quotes when it has none, else None. A value ending in a backslash is None too:
    sqlparse reads a backslash before the closing quote as an escaped quote, and with another
    quoted clause after it (MLflow itself appends one, the prompt filter) the literal runs on.
    """
    if value.endswith("\\"):
        return None
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _like_pattern(value: str) -> str:
    """A LIKE pattern that matches `value` and perhaps more (filter the results exactly).

    Quotes and backslashes become `_`, which matches any one character: the pattern then
    always has a literal (see filter_literal), and no backslash reaches PostgreSQL's or
    MySQL's LIKE, where it escapes. `%` and `_` in the value stay wildcards: they only widen it.
    """
    return "".join("_" if c in "'\"\\" else c for c in value)


def recent_versions(client: MlflowClient, name: str, limit: int) -> list[VersionRef]:
    """Up to `limit` newest versions of a registered model, oldest first."""
    from mlflow.exceptions import MlflowException

    if limit <= 0:
        return []
    literal = filter_literal(name)
    newest = ["version_number DESC"]
    try:
        if literal is not None:
            found = list(
                client.search_model_versions(
                    f"name = {literal}", max_results=limit, order_by=newest
                )
            )
        else:
            # No literal can hold this name. A search by `name LIKE` with those characters
            # as wildcards still lets the registry do the selecting and the ordering (a
            # search with no filter would page through every version of every model);
            # other names it matches, rare, are dropped here, page after page.
            pattern = filter_literal(_like_pattern(name))
            found, token = [], None
            while len(found) < limit:
                page = client.search_model_versions(
                    f"name LIKE {pattern}",
                    max_results=max(limit, 100),
                    order_by=newest,
                    page_token=token,
                )
                found.extend(v for v in page if v.name == name)
                token = page.token
                if not token:
                    break
    except MlflowException as error:
        if _not_found(error):
            return []
        raise
    refs = sorted((version_ref(v) for v in found), key=lambda ref: int(ref.version))
    return refs[-limit:]


def resolve_candidate(client: MlflowClient, given: str) -> Candidate:
    """A run id, `runs:/<id>/…`, `models:/m-…`, `models:/<name>/<version>` or `…@<alias>`."""
    text = given.strip()
    if not text:
        raise ConfigError(
            "no candidate given",
            "pass the train step's run-id or model-uri output as the `candidate` input",
        )
    runs = RUNS_URI.match(text)
    if RUN_ID.match(text) or runs:
        run_id = runs.group("run_id") if runs else text
        run = client.get_run(run_id)
        models = logged_models(client, run.info.experiment_id, run_id)
        name = (runs.group("path") or "").strip("/").split("/")[0] if runs else ""
        if name:  # runs:/<id>/<name> names one of the run's models: never take another one
            models = [m for m in models if m.name == name]
            if not models:
                raise ConfigError(
                    f"candidate {text}: run {run_id} logged no model named '{name}'",
                    "use runs:/<run-id>/<model name>, the bare run id, or train's model-uri output",
                )
        return Candidate(text, run_id, models[0].uri if models else "")
    match = MODEL_URI.match(text)
    if not match:
        raise ConfigError(
            f"candidate {text!r} is neither a run id nor a model URI",
            "use a 32-character run id, runs:/<run-id>/<path>, models:/m-<id>, "
            "models:/<name>/<version> or models:/<name>@<alias>",
        )
    name, version, alias = match.group("name", "version", "alias")
    if name.startswith("m-") and not version and not alias:
        logged = client.get_logged_model(name)
        return Candidate(text, logged.source_run_id or "", f"models:/{logged.model_id}")
    if alias:
        ref = alias_holder(client, name, alias)
        if ref is None:
            raise ConfigError(
                f"candidate {text}: no version of '{name}' holds the alias '{alias}'",
                "check the model name and alias in the registry",
            )
    elif version:
        ref = version_ref(client.get_model_version(name, version))
    else:
        raise ConfigError(
            f"candidate {text} names a registered model but no version",
            f"add a version or an alias: models:/{name}/<version> or models:/{name}@<alias>",
        )
    return Candidate(text, ref.run_id, ref.uri, ref)


# ----------------------------------------------------------------------------- a light reader

# `import mlflow` alone takes 5-10 s on a busy machine, while reading an alias's history is one
# GET. Over HTTP(S), with the credentials MLflow itself reads from the environment, the REST API
# is asked directly; anything else (a database store, Databricks, an auth or header plugin, a
# ~/.mlflow/credentials file) goes through MlflowClient as before.
_PLUGIN_VARIABLES = ("MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_AWS_SIGV4")
_PLUGIN_GROUPS = ("mlflow.request_header_provider", "mlflow.request_auth_provider")
_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ModelRecord:
    """A registered model's tags and aliases, as the REST API returns them."""

    name: str
    tags: dict[str, str]
    aliases: dict[str, str]


def _on(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes"}


def rest_applies(uri: str, env: Mapping[str, str]) -> bool:
    """Whether a plain REST call reaches the registry exactly as MlflowClient would."""
    if urlsplit(uri).scheme.lower() not in {"http", "https"}:
        return False
    if env.get("MLFLOW_TRACKING_AUTH") or _on(env.get("MLFLOW_TRACKING_AWS_SIGV4")):
        return False
    has_env_login = env.get("MLFLOW_TRACKING_USERNAME") and env.get("MLFLOW_TRACKING_PASSWORD")
    if not has_env_login and Path("~/.mlflow/credentials").expanduser().exists():
        return False
    return not any(entry_points(group=group) for group in _PLUGIN_GROUPS)


def _ssl_context(env: Mapping[str, str]) -> ssl.SSLContext:
    if _on(env.get("MLFLOW_TRACKING_INSECURE_TLS")):
        context = ssl._create_unverified_context()  # noqa: S323 - the user turned checks off
    else:
        context = ssl.create_default_context(cafile=env.get("MLFLOW_TRACKING_SERVER_CERT_PATH"))
    if client_cert := env.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
        context.load_cert_chain(client_cert)
    return context


def _headers(env: Mapping[str, str]) -> dict[str, str]:
    """MLflow's precedence: a user name and password, else a token."""
    headers = {"Accept": "application/json"}
    user, password = env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        login = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {login}"
    elif token := env.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    if workspace := (env.get("MLFLOW_WORKSPACE") or "").strip():
        headers["X-MLFLOW-WORKSPACE"] = workspace
    return headers


def _get_json(url: str, env: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """(status, body) of a GET, retried like MLflow's client (MLFLOW_HTTP_REQUEST_* settings)."""
    retries = int(env.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES") or 7)
    backoff = float(env.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR") or 2)
    timeout = float(env.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or 120)
    request = urllib.request.Request(url, headers=_headers(env))  # noqa: S310 - http(s) only
    context = _ssl_context(env) if url.startswith("https:") else None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(backoff * 2 ** (attempt - 1), 120))
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            if error.code in _RETRIED_STATUSES and attempt < retries:
                continue
            try:
                body = json.loads(error.read() or b"{}")
            except ValueError:
                body = {}
            return error.code, body if isinstance(body, dict) else {}
        except (urllib.error.URLError, TimeoutError, ConnectionError):
            if attempt == retries:
                raise
    raise AssertionError("unreachable")


def registered_model_over_rest(
    uri: str, name: str, env: Mapping[str, str], doing: str
) -> ModelRecord:
    """The registered model `name` from the REST API at `uri` (see rest_applies)."""
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/registered-models/get?{urlencode({'name': name})}"
    try:
        status, body = _get_json(url, env)
    except (OSError, ValueError) as error:
        reason = _reason(error)
        raise ServiceError(
            f"MLflow tracking server {redact(uri)} failed while {doing}: {reason}", _hint(reason)
        ) from None
    code, message = str(body.get("error_code", "")), str(body.get("message", ""))
    if status == 404 and code == "RESOURCE_DOES_NOT_EXIST":
        raise ConfigError(
            f"MLflow found nothing while {doing}: {code}: {message}",
            "check the run id, model name or version",
        )
    if 400 <= status < 500 and status not in {401, 403, 404, 429}:
        raise ConfigError(f"MLflow rejected the request while {doing}: {code}: {message}")
    if status != 200:
        reason = _reason(ConnectionError(f"HTTP {status} {code} {message}"))
        raise ServiceError(
            f"MLflow tracking server {redact(uri)} failed while {doing}: {reason}", _hint(reason)
        )
    model = body.get("registered_model") or {}
    return ModelRecord(
        name=str(model.get("name", name)),
        tags={str(t["key"]): str(t.get("value", "")) for t in model.get("tags") or []},
        aliases={str(a["alias"]): str(a["version"]) for a in model.get("aliases") or []},
    )
