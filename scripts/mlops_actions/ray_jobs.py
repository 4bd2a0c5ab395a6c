"""Training on a Ray cluster: what to submit to its job server, and what its answer means.

Pure functions from the `train.ray` settings, the run and the environment to the arguments of
Ray's `JobSubmissionClient.submit_job`, and from a job's final state to the step's exit status.
The submission itself (Ray's SDK, an optional extra) lives in `ray_submit.py`.

Secrets: a job's runtime environment (its env_vars included) is shown to anyone who can read
the dashboard or the job API. So the job gets the MLflow run's coordinates and nothing the user
did not name: credentials inside the tracking URI are taken out, and MLFLOW_TRACKING_TOKEN (or
any other variable) travels only when `train.ray.forward_secrets` names it. A cluster gets its
own credentials otherwise (a KubeRay secret, an instance role).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import EXIT_CANCELLED, ConfigError
from .tracking import redact

# What never goes up with the working directory: git's objects, DVC's cache, and what a
# checkout of a Python project accumulates. Data tracked by DVC goes unless pull_data says the
# cluster pulls it itself (then its paths are excluded too).
DEFAULT_EXCLUDES = (".git", ".dvc/cache", ".dvc/tmp", "**/__pycache__", ".venv", "mlruns")
SIGTERM = 15
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


@dataclass(frozen=True)
class RaySettings:
    """`train.ray` in mlops.yaml, schema-validated."""

    address: str
    excludes: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()  # empty: the cluster's own environment
    num_cpus: float | None = None
    num_gpus: float | None = None
    memory: int | None = None  # bytes
    resources: Mapping[str, float] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # header -> environment variable
    job_id_prefix: str = "mlops-"
    forward_secrets: tuple[str, ...] = ()
    pull_data: bool = False
    start_timeout_seconds: float = 600.0
    timeout_seconds: float | None = None  # the job's own limit, enforced on the cluster

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> RaySettings:
        section = dict(section or {})
        address = str(section.get("address") or "")
        if not address:
            raise ConfigError(
                "train.backend is ray but train.ray.address is not set",
                "set train.ray.address to the cluster's job server, e.g. http://ray-head:8265 "
                "(or RAY_ADDRESS)",
            )
        entrypoint = dict(section.get("entrypoint") or {})
        return cls(
            address=address,
            excludes=tuple(section.get("excludes") or ()),
            pip=tuple(section.get("pip") or ()),
            num_cpus=entrypoint.get("num_cpus"),
            num_gpus=entrypoint.get("num_gpus"),
            memory=entrypoint.get("memory"),
            resources=dict(entrypoint.get("resources") or {}),
            headers=dict(section.get("headers") or {}),
            job_id_prefix=str(section.get("job_id_prefix", "mlops-")),
            forward_secrets=tuple(section.get("forward_secrets") or ()),
            pull_data=bool(section.get("pull_data", False)),
            start_timeout_seconds=float(section.get("start_timeout_seconds", 600)),
            timeout_seconds=section.get("timeout_seconds"),
        )


def job_server_url(address: str) -> str:
    """The job server's HTTP address: `ray://` and bare host:port are not what the SDK's
    job client speaks, so they are refused with the form that is."""
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"train.ray.address {redact(address)!r} is not the job server's HTTP address",
            "use http://<head>:8265 (the dashboard port; KubeRay: the head service's "
            "dashboard port), not ray://<head>:10001",
        )
    return address.rstrip("/")


def headers(settings: RaySettings, environ: Mapping[str, str]) -> dict[str, str]:
    """The extra HTTP headers for a proxy in front of the job server, from the environment."""
    found = {}
    for header, variable in settings.headers.items():
        value = environ.get(variable)
        if not value:
            raise ConfigError(
                f"train.ray.headers.{header}: environment variable {variable} is not set",
                f"pass it to the step: env: {{{variable}: ${{{{ secrets.{variable} }}}}}}",
            )
        found[header] = value
    return found


def job_environment(
    settings: RaySettings,
    *,
    tracking_uri: str,
    registry_uri: str,
    experiment: str,
    experiment_id: str,
    run_id: str,
    environ: Mapping[str, str],
) -> dict[str, str]:
    """The job's env_vars: where to log (our run) and the secrets the user chose to forward.

    A tracking URI with credentials in it goes without them unless MLFLOW_TRACKING_URI itself
    is forwarded; a forwarded variable that is not set is an error, not a silent gap.
    """
    forwarded = set(settings.forward_secrets)
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri
        if "MLFLOW_TRACKING_URI" in forwarded
        else redact(tracking_uri),
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
        "MLFLOW_RUN_ID": run_id,
    }
    if "MLFLOW_DISABLE_TELEMETRY" in environ:  # the user's choice travels, as it does locally
        env["MLFLOW_DISABLE_TELEMETRY"] = environ["MLFLOW_DISABLE_TELEMETRY"]
    if registry_uri:
        env["MLFLOW_REGISTRY_URI"] = (
            registry_uri if "MLFLOW_REGISTRY_URI" in forwarded else redact(registry_uri)
        )
    for name in settings.forward_secrets:
        if name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            continue
        if name not in environ:
            raise ConfigError(
                f"train.ray.forward_secrets names {name}, which is not set in the step",
                "pass it to the step's env, or drop it from train.ray.forward_secrets",
            )
        env[name] = environ[name]
    return env


def local_store(tracking_uri: str) -> bool:
    """A tracking URI only this machine can reach (SQLite, a directory)."""
    scheme = urlsplit(tracking_uri).scheme
    return scheme in ("", "file", "sqlite")


def entrypoint(command: str, settings: RaySettings, pull_targets: Sequence[str] = ()) -> str:
    """The job's shell command: the training, after `dvc pull` and a check of what it pulled
    when the cluster pulls the data itself, under the job's own time limit when there is one
    (coreutils' timeout ends it with SIGTERM, so a runner that died cannot leave it running
    for ever)."""
    script = command
    if settings.pull_data:
        # After the pull, the data must be what the checkout's DVC files (the inputs of the
        # runner's fingerprint) name: `dvc status --quiet` exits 1 on any difference.
        targets = " ".join(shlex.quote(t) for t in pull_targets)
        mismatch = shlex.quote(
            "mlops-actions: the data pulled on the cluster differs from the DVC files of the "
            "checkout, so from the data fingerprint the run is tagged with"
        )
        # The upload has no .git: DVC is told to work without one.
        script = (
            "{ [ -d .git ] || dvc config --local core.no_scm true; } && "
            + f"dvc pull {targets}".strip()
            + f" && {{ dvc status --quiet {targets} || {{ echo {mismatch} >&2; exit 1; }}; }}"
            + f" && {command}"
        )
    wrapped = f"bash -c {shlex.quote(script)}"
    if settings.timeout_seconds:
        wrapped = f"timeout --signal=TERM --kill-after=30 {int(settings.timeout_seconds)} {wrapped}"
    return wrapped


def submission(
    settings: RaySettings,
    *,
    command: str,
    working_dir: str,
    env_vars: Mapping[str, str],
    run_id: str,
    data_excludes: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of `JobSubmissionClient.submit_job` for this run.

    The submission id is the prefix and the MLflow run id: the job and the run name each
    other, and a retried submission of the same run is refused by Ray rather than run twice.
    """
    runtime_env: dict[str, Any] = {
        "working_dir": working_dir,
        "excludes": [*DEFAULT_EXCLUDES, *settings.excludes, *data_excludes],
        "env_vars": dict(env_vars),
    }
    if settings.pip:
        runtime_env["pip"] = list(settings.pip)
    arguments: dict[str, Any] = {
        "entrypoint": command,
        "submission_id": f"{settings.job_id_prefix}{run_id}",
        "runtime_env": runtime_env,
        "metadata": {"mlflow_run_id": run_id, **(metadata or {})},
    }
    for key, value in (
        ("entrypoint_num_cpus", settings.num_cpus),
        ("entrypoint_num_gpus", settings.num_gpus),
        ("entrypoint_memory", settings.memory),
        ("entrypoint_resources", dict(settings.resources) or None),
    ):
        if value is not None:
            arguments[key] = value
    return arguments


def exit_status(status: str, driver_exit_code: int | None) -> int:
    """The step's exit status for a job's final state, as a local run would have it:
    SUCCEEDED 0; FAILED the entrypoint's own status when Ray reports it, else 1; STOPPED 143
    (stopped is what SIGTERM does)."""
    if status == "SUCCEEDED":
        return 0
    if status == "STOPPED":
        return EXIT_CANCELLED + SIGTERM
    if driver_exit_code:
        return int(driver_exit_code)
    return 1


def requested_resources(settings: RaySettings) -> str:
    """The entrypoint's resource request in words, for a job that never got scheduled."""
    parts = []
    for field_name, value in (
        ("num_cpus", settings.num_cpus),
        ("num_gpus", settings.num_gpus),
        ("memory", settings.memory),
    ):
        if value is not None:
            parts.append(f"train.ray.entrypoint.{field_name}: {value:g}")
    parts += [f"train.ray.entrypoint.resources.{k}: {v:g}" for k, v in settings.resources.items()]
    return ", ".join(parts)


def dashboard_url(address: str, job_id: str) -> str:
    return f"{redact(address).rstrip('/')}/#/jobs/{job_id}"
