"""Pipeline metrics for a Prometheus Pushgateway: what a stage's outcome becomes, and the push.

Every stage (dvc-pull, train, evaluate, promote, rollback, build-push, or a user's own) pushes
gauges of its last run into one group, keyed by job, pipeline and stage: no run ids, so the
Pushgateway holds one small group per stage however many runs there were. Pushes are
add-style (HTTP POST): they replace only the metrics they carry, so the last-success timestamp,
pushed only on success, survives a failed run. A push is best effort: a short deadline for the
whole request, and a result that says why it failed instead of an exception.
"""

from __future__ import annotations

import http.client
import math
import re
import threading
import urllib.error
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .gate import Decision
    from .promote import MoveResult

# name -> (help, label names). The dashboard and alert rules use these names: do not rename.
CATALOGUE: dict[str, tuple[str, tuple[str, ...]]] = {
    "mlops_stage_duration_seconds": ("Wall time of the stage's last run.", ()),
    "mlops_stage_success": ("1 if the stage's last run succeeded, 0 if it failed.", ()),
    "mlops_stage_exit_code": ("Exit code of the stage's last run.", ()),
    "mlops_stage_last_run_timestamp_seconds": ("Unix time the stage's last run ended.", ()),
    "mlops_stage_last_success_timestamp_seconds": (
        "Unix time the stage last succeeded.",
        (),
    ),
    "mlops_data_fetched_files": ("Files dvc-pull downloaded from the remote.", ()),
    "mlops_data_fetched_bytes": ("Bytes dvc-pull downloaded into the DVC cache.", ()),
    "mlops_train_run_duration_seconds": (
        "Wall time of the training command (or MLflow Project) inside its MLflow run.",
        (),
    ),
    "mlops_gate_passed": ("1 if the gate passed the candidate, 0 if it rejected it.", ()),
    "mlops_gate_decision_timestamp_seconds": ("Unix time of the gate's last decision.", ()),
    "mlops_gate_metric_value": (
        "A gate rule's metric, of the candidate or of the champion.",
        ("metric", "model"),
    ),
    "mlops_gate_threshold": ("A bound of a gate rule.", ("metric", "bound")),
    "mlops_model_version": ("Registry version that holds the alias.", ("alias",)),
    "mlops_promotion_timestamp_seconds": ("Unix time the alias last moved.", ("alias",)),
    "mlops_image_size_bytes": ("Size of the serving image built last.", ()),
    "mlops_image_model_version": ("Registry version of the model in the image built last.", ()),
}
CUSTOM_HELP = "Pushed by mlops-actions push-metrics."

# Prometheus metric names, without the colons that are reserved for recording rules.
METRIC_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

AUTH_HINT = (
    "check MLOPS_PUSHGATEWAY_USERNAME and MLOPS_PUSHGATEWAY_PASSWORD (basic auth) or "
    "MLOPS_PUSHGATEWAY_TOKEN (bearer token)"
)
REACH_HINT = (
    "check that the Pushgateway is running and reachable from this machine, or unset "
    "monitoring.pushgateway_url (MLOPS_PUSHGATEWAY_URL) to stop pushing"
)


@dataclass(frozen=True)
class Sample:
    """One gauge value: a catalogue name (or a custom one) and its labels."""

    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Target:
    """Where and as whom to push. Credentials stay out of the URL and out of repr()."""

    url: str
    job: str
    pipeline: str
    timeout_seconds: float = 5.0
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)

    @property
    def shown_url(self) -> str:
        """The gateway URL safe to print: no user name or password."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", "")).rstrip("/")

    def grouping_key(self, stage: str) -> dict[str, str]:
        return {"pipeline": self.pipeline, "stage": stage}


@dataclass(frozen=True)
class PushResult:
    pushed: bool
    url: str  # shown_url
    error: str = ""
    hint: str = ""


# ----------------------------------------------------------------------------- samples


def stage_samples(exit_code: int, duration_seconds: float | None, ended_at: float) -> list[Sample]:
    """Outcome of any stage; the last-success time only on success, so a failure keeps it."""
    samples = [
        Sample("mlops_stage_success", 1.0 if exit_code == 0 else 0.0),
        Sample("mlops_stage_exit_code", float(exit_code)),
        Sample("mlops_stage_last_run_timestamp_seconds", ended_at),
    ]
    if duration_seconds is not None:
        samples.append(Sample("mlops_stage_duration_seconds", duration_seconds))
    if exit_code == 0:
        samples.append(Sample("mlops_stage_last_success_timestamp_seconds", ended_at))
    return samples


def pull_samples(files_fetched: int, bytes_fetched: int) -> list[Sample]:
    return [
        Sample("mlops_data_fetched_files", float(files_fetched)),
        Sample("mlops_data_fetched_bytes", float(bytes_fetched)),
    ]


def train_samples(run_seconds: float) -> list[Sample]:
    return [Sample("mlops_train_run_duration_seconds", run_seconds)]


def gate_samples(decision: Decision, decided_at: float) -> list[Sample]:
    """Verdict, both models' values of every rule's metric, and every bound that is set."""
    samples = [
        Sample("mlops_gate_passed", 1.0 if decision.passed else 0.0),
        Sample("mlops_gate_decision_timestamp_seconds", decided_at),
    ]
    for rule in decision.rules:
        for model, value in (("candidate", rule.candidate), ("champion", rule.champion)):
            if value is not None and math.isfinite(value):  # a missing metric has no series
                samples.append(
                    Sample(
                        "mlops_gate_metric_value",
                        value,
                        (("metric", rule.metric), ("model", model)),
                    )
                )
        samples.extend(
            Sample(
                "mlops_gate_threshold",
                check.limit,
                (("metric", rule.metric), ("bound", check.bound)),
            )
            for check in rule.checks
        )
    return samples


def move_samples(result: MoveResult, moved_at: float) -> list[Sample]:
    """The alias's holder; the promotion time only when the alias actually moved."""
    alias = (("alias", result.alias),)
    samples = []
    if result.version.isdigit():
        samples.append(Sample("mlops_model_version", float(result.version), alias))
    if result.changed:
        samples.append(Sample("mlops_promotion_timestamp_seconds", moved_at, alias))
    return samples


def image_samples(size_bytes: int, model_version: str) -> list[Sample]:
    samples = [Sample("mlops_image_size_bytes", float(size_bytes))]
    if model_version.isdigit():  # a LoggedModel (models:/m-...) has no registry version
        samples.append(Sample("mlops_image_model_version", float(model_version)))
    return samples


def check_stage(stage: str, where: str) -> str:
    if not STAGE_NAME.match(stage):
        raise ConfigError(
            f"{where} must be a short stage name (letters, digits, '.', '_', '-'), got {stage!r}",
            "e.g. deploy, load-test or train",
        )
    return stage


def custom_sample(name: str, value: Any, where: str) -> Sample:
    """A user's gauge: a valid Prometheus name outside the catalogue, and a finite number."""
    if not METRIC_NAME.match(name) or name.startswith("__"):
        raise ConfigError(
            f"{where}: {name!r} is not a valid metric name",
            "use letters, digits and underscores, not starting with a digit, e.g. rows_scored",
        )
    if name in CATALOGUE:
        raise ConfigError(
            f"{where}: {name} is pushed by mlops-actions itself", "choose another metric name"
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise ConfigError(f"{where}: the value of {name} must be a finite number, got {value!r}")
    return Sample(name, number)


def parse_assignment(text: str, where: str) -> Sample:
    """`name=value`, as given to --metric."""
    name, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"{where}: expected name=value, got {text!r}", "e.g. rows_scored=1200")
    return custom_sample(name.strip(), value.strip(), where)


# ----------------------------------------------------------------------------- push


def registry_for(samples: Iterable[Sample]) -> CollectorRegistry:
    """A fresh registry of gauges (never the process-wide default one)."""
    from prometheus_client import CollectorRegistry, Gauge

    by_name: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_name[sample.name].append(sample)
    registry = CollectorRegistry()
    for name, group in by_name.items():
        help_text, label_names = CATALOGUE.get(name, (CUSTOM_HELP, ()))
        gauge = Gauge(name, help_text, label_names, registry=registry)
        for sample in group:
            (gauge.labels(**dict(sample.labels)) if label_names else gauge).set(sample.value)
    return registry


def _handler(target: Target) -> Callable[..., Callable[[], None]]:
    """prometheus_client's handler with basic auth or a bearer token in a header."""
    from prometheus_client.exposition import basic_auth_handler, default_handler

    def handler(
        url: str,
        method: str,
        timeout: float | None,
        headers: list[tuple[str, str]],
        data: bytes,
    ) -> Callable[[], None]:
        if target.token:
            headers = [*headers, ("Authorization", f"Bearer {target.token}")]
        elif target.username:
            return basic_auth_handler(
                url, method, timeout, headers, data, target.username, target.password
            )
        return default_handler(url, method, timeout, headers, data)

    return handler


def target_problem(target: Target) -> tuple[str, str]:
    """Why a target cannot be pushed to and the fix, or ('', '')."""
    parts = urlsplit(target.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the URL is not an http(s) URL", "set monitoring.pushgateway_url to http(s)://…"
    if parts.username or parts.password:
        return "the URL carries credentials", "remove them from the URL; " + AUTH_HINT.replace(
            "check", "set", 1
        )
    if target.token and (target.username or target.password):
        return "both a bearer token and basic-auth credentials are set", "keep one: " + AUTH_HINT
    if bool(target.username) != bool(target.password):
        return "basic auth needs both a user name and a password", AUTH_HINT
    return "", ""


def _failure(error: Exception, timeout: float) -> tuple[str, str]:
    """What went wrong, in words, and the fix."""
    if isinstance(error, urllib.error.HTTPError):
        if error.code in (401, 403):
            return f"the Pushgateway refused the credentials (HTTP {error.code})", AUTH_HINT
        try:
            body = error.read().decode("utf-8", "replace").strip()[:300]
        except OSError:
            body = ""
        reason = f"HTTP {error.code} {error.reason}" + (f": {body}" if body else "")
        return reason, "the Pushgateway refused the metrics; see its answer"
    if isinstance(error, urllib.error.URLError):
        error = error.reason if isinstance(error.reason, Exception) else error
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s", REACH_HINT
    return str(error) or type(error).__name__, REACH_HINT


def push(target: Target, stage: str, samples: Sequence[Sample]) -> PushResult:
    """POST the samples into the stage's group. Never raises for a network or HTTP failure.

    `timeout_seconds` bounds the whole push, not each socket read: a gateway that trickles its
    answer a byte at a time would hold a read timeout open for minutes. The push runs in a
    daemon thread that is abandoned at the deadline (it cannot keep the process alive, and its
    socket times out on its own).
    """
    problem, hint = target_problem(target)
    if problem:
        return PushResult(False, target.shown_url, problem, hint)
    registry = registry_for(samples)
    outcome: list[PushResult | BaseException] = []

    def attempt() -> None:
        try:
            outcome.append(_push_now(target, stage, registry))
        except BaseException as error:  # a bug: raised again in the caller, below
            outcome.append(error)

    worker = threading.Thread(target=attempt, name=f"push-{stage}", daemon=True)
    worker.start()
    worker.join(target.timeout_seconds)
    if not outcome:
        return PushResult(
            False, target.shown_url, f"no answer within {target.timeout_seconds:g} s", REACH_HINT
        )
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _push_now(target: Target, stage: str, registry: CollectorRegistry) -> PushResult:
    from prometheus_client import pushadd_to_gateway

    try:
        pushadd_to_gateway(
            target.url,
            job=target.job,
            registry=registry,
            grouping_key=target.grouping_key(stage),
            timeout=target.timeout_seconds,
            handler=_handler(target),
        )
    except (OSError, http.client.HTTPException, ValueError) as error:
        reason, hint = _failure(error, target.timeout_seconds)
        return PushResult(False, target.shown_url, reason, hint)
    return PushResult(True, target.shown_url)


def summary(target: Target, stage: str, samples: Sequence[Sample], result: PushResult) -> str:
    """Markdown for the job summary: the group and what was pushed, or why not."""
    group = f"job `{target.job}`, pipeline `{target.pipeline}`, stage `{stage}`"
    if not result.pushed:
        return f"### ⚠️ metrics not pushed\n\n{group} to {result.url}: {result.error}.\n"
    rows = [
        "| metric | value |",
        "|---|---|",
        *(
            f"| `{s.name}{_labels(s.labels)}` | {s.value:g} |"
            for s in sorted(samples, key=lambda s: (s.name, s.labels))
        ),
    ]
    return f"### 📈 metrics pushed\n\n{group} to {result.url}\n\n" + "\n".join(rows) + "\n"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return f"{{{inner}}}" if inner else ""
