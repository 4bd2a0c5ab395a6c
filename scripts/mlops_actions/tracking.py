"""MLflow connection helpers shared by every verb: URIs, experiments, errors, logged models."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from .errors import ConfigError, MlopsError, ServiceError

if TYPE_CHECKING:
    from mlflow import MlflowClient

EMBEDDED_STORE_FILE = "mlflow.db"

# Bounded retries for a tracking server that is briefly down or answers 5xx. MLflow's own
# default (7 retries, factor 2) waits minutes before an unreachable server is reported.
# Applied only where the user has not set them.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
# Moving an alias is worth waiting for: a server restart mid-move (tens of seconds) is ridden
# out (about a minute of backoff in total) rather than leaving the move to a re-run.
REGISTRY_RETRY_DEFAULTS = {**HTTP_RETRY_DEFAULTS, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6"}


# The stores MLflow builds itself (its tracking and registry store registries); a plugin adds
# its own scheme through one of PLUGIN_GROUPS. '' is a plain path, as MLflow reads it.
MLFLOW_SCHEMES = frozenset(
    {"", "file", "http", "https", "databricks", "databricks-uc", "uc"}
    | {"sqlite", "postgresql", "mysql", "mssql"}
)
DATABASE_SCHEMES = frozenset({"sqlite", "postgresql", "mysql", "mssql"})
PLUGIN_GROUPS = ("mlflow.tracking_store", "mlflow.model_registry_store")
CREDENTIALS_HINT = (
    "remove them from the URI and set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
    "(or MLFLOW_TRACKING_TOKEN) as secrets in the environment instead"
)
DATABASE_CREDENTIALS_HINT = (
    "remove the password from the URI: PostgreSQL reads it from PGPASSWORD or ~/.pgpass, "
    "MySQL from an option file (?read_default_file=...); keep the user name in the URI"
)


def _scheme(parts: SplitResult) -> str:
    """The store MLflow would pick: 'postgresql' for postgresql+psycopg2, '' for C:\\ paths."""
    scheme = parts.scheme.lower()
    if len(scheme) == 1 and scheme.isalpha():
        return ""
    return scheme.split("+", 1)[0] if scheme.split("+", 1)[0] in DATABASE_SCHEMES else scheme


def _plugin_schemes() -> set[str]:
    return {e.name for group in PLUGIN_GROUPS for e in entry_points(group=group)}


def check_uri(uri: str, where: str) -> str:
    """`uri` when MLflow can use it as a tracking or registry store, else a ConfigError.

    The error names `where` the value came from and never echoes the value: it may hold a
    password, or a line break that would end up in the log as a workflow command.
    """
    one_uri = "give one URI, e.g. https://mlflow.example.com or sqlite:///mlflow.db"
    if not uri.isprintable():  # a line break, a tab or another control character
        raise ConfigError(f"{where} has line breaks or control characters in it", one_uri)
    example = "e.g. https://mlflow.example.com, http://[::1]:5000 or sqlite:///mlflow.db"
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # not echoed: Python's message quotes the host, password and all
        reason = (
            "an IPv6 address without its closing ']'"
            if "IPv6" in str(exc)
            else "characters a host name cannot hold"
        )
        raise ConfigError(f"{where} is not a valid URI: it has {reason}", example) from None
    scheme = _scheme(parts)
    if scheme not in MLFLOW_SCHEMES and scheme not in _plugin_schemes():
        raise ConfigError(
            f"{where} has the scheme '{parts.scheme}', which MLflow does not support",
            "use http(s)://host[:port], databricks, sqlite:///path, postgresql://, mysql://, "
            "mssql://, file:///path or a plain directory path",
        )
    if " " in uri and scheme not in {"", "file"}:  # a directory path may hold spaces
        raise ConfigError(f"{where} has spaces in it", one_uri)
    try:  # host:port only where there is one (databricks://<scope>:<prefix> is no port)
        if scheme in {"http", "https"} | DATABASE_SCHEMES:
            parts.port  # noqa: B018 - reading the port parses it
    except ValueError:
        raise ConfigError(
            f"{where} has a port that is not a number from 0 to 65535", example
        ) from None
    if scheme in {"http", "https"} and not parts.hostname:
        raise ConfigError(f"{where} has no host name", f"e.g. {scheme}://mlflow.example.com:5000")
    if parts.password or (parts.username and scheme not in DATABASE_SCHEMES):
        raise ConfigError(
            f"{where} has credentials in it",
            DATABASE_CREDENTIALS_HINT if scheme in DATABASE_SCHEMES else CREDENTIALS_HINT,
        )
    return uri


def url_secrets(text: str) -> list[str]:
    """What of a URL must be masked in the log: the password (as written and decoded), and a
    user name given alone to a web server, which is how a token is usually written."""
    try:
        parts = urlsplit(text.strip())
    except ValueError:
        return []
    secret = parts.password or (
        parts.username if parts.scheme.lower() in {"http", "https"} else None
    )
    return sorted({secret, unquote(secret)}) if secret else []


# MLflow's SQL stores (SQLite, PostgreSQL, MySQL) cannot hold an infinity: they keep a metric
# logged as ±inf as ±float max and hand that back. No real metric is that large.
STORED_INFINITY = sys.float_info.max


def metric_value(value: Any) -> float:
    """A metric value as it was logged: ±inf where the store kept ±float max in its place."""
    number = float(value)
    if abs(number) == STORED_INFINITY:
        return math.copysign(math.inf, number)
    return number


def metric_values(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A run's metrics as they were logged (see metric_value); every reader goes through here."""
    return {name: metric_value(value) for name, value in metrics.items()}


def resolve_tracking_uri(configured: str, cwd: Path, where: str = "the tracking URI") -> str:
    """The configured URI, checked, or the embedded SQLite store in `cwd` when none is set."""
    if configured.strip():
        return check_uri(configured.strip(), where)
    return f"sqlite:///{(cwd / EMBEDDED_STORE_FILE).resolve()}"


def resolve_registry_uri(configured: str, where: str = "the registry URI") -> str:
    """The configured registry URI, checked; '' when the registry is the tracking store."""
    return check_uri(configured.strip(), where) if configured.strip() else ""


def redact(uri: str) -> str:
    """A URI safe to print: no user name or password."""
    parts = urlsplit(uri)
    if not parts.password and not parts.username:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def run_ui_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """Link to the run in the MLflow UI; '' for stores without a UI (SQLite, files)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return ""
    base = redact(tracking_uri).rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for pattern, reason in (
        (r"Connection refused", "connection refused"),
        (r"Name or service not known|nodename nor servname|Failed to resolve", "unknown host"),
        (r"timed out|Timeout", "timed out"),
        (r"\b401\b|Unauthorized|UNAUTHENTICATED", "authentication failed (HTTP 401)"),
        (r"\b403\b|Forbidden|PERMISSION_DENIED", "permission denied (HTTP 403)"),
        (r"too many (5\d\d )?error responses|\b5\d\d\b", "server error (HTTP 5xx)"),
    ):
        if re.search(pattern, text):
            return reason
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:300]


def _hint(reason: str) -> str:
    if "401" in reason or "403" in reason:
        return "set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    return "check the tracking-uri input / MLFLOW_TRACKING_URI and that the server is running"


@contextmanager
def tracking_server(tracking_uri: str, doing: str) -> Iterator[None]:
    """Turn connection and server failures into a ServiceError that names the server."""
    try:
        yield
    except Exception as exc:
        described = service_error(exc, tracking_uri, doing)
        if described is None:
            raise
        raise described from None


def service_error(exc: BaseException, tracking_uri: str, doing: str) -> MlopsError | None:
    """What a failed MLflow call means for the user (a ConfigError for a request MLflow
    refused, a ServiceError naming the server otherwise); None for other exceptions."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException

    if not isinstance(exc, MlflowException | RequestException | ConnectionError):
        return None
    code = getattr(exc, "error_code", "")
    if code in {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST"}:
        return ConfigError(f"MLflow rejected the request while {doing}: {exc}")
    if code == "RESOURCE_DOES_NOT_EXIST":
        return ConfigError(
            f"MLflow found nothing while {doing}: {getattr(exc, 'message', exc)}",
            "check the run id, model name or version",
        )
    reason = _reason(exc)
    return ServiceError(
        f"MLflow tracking server {redact(tracking_uri)} failed while {doing}: {reason}",
        _hint(reason),
    )


def client(tracking_uri: str, registry_uri: str = "") -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or None)


def ensure_experiment(mlflow_client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The experiment's id, creating the experiment on first use."""
    with tracking_server(tracking_uri, f"looking up experiment '{name}'"):
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            return str(mlflow_client.create_experiment(name))
    if experiment.lifecycle_stage == "deleted":
        raise ConfigError(
            f"MLflow experiment '{name}' is deleted",
            "restore it (mlflow experiments restore) or choose another experiment name",
        )
    return str(experiment.experiment_id)


@dataclass(frozen=True)
class LoggedModelRef:
    model_id: str
    name: str
    uri: str


def logged_models(
    mlflow_client: MlflowClient, experiment_id: str, run_id: str
) -> list[LoggedModelRef]:
    """The models a run logged, newest first, through MLflow 3's logged-model search."""
    from .registry import filter_literal  # registry imports this module

    literal = filter_literal(run_id)
    if literal is None:  # no filter can hold it, and no run has such an id (they are hex)
        return []
    found = mlflow_client.search_logged_models(
        experiment_ids=[experiment_id], filter_string=f"source_run_id = {literal}"
    )
    models = sorted(found, key=lambda m: m.creation_timestamp or 0, reverse=True)
    return [LoggedModelRef(m.model_id, m.name, f"models:/{m.model_id}") for m in models]
