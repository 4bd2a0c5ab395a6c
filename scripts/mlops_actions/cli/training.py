"""`mlops-actions train`: run training inside a tagged MLflow run (also a stage of `run`)."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__, gha, monitor, telemetry
from ..cancellation import cancellable
from ..config import Config
from ..errors import EXIT_OK
from .common import _value, emit, load_config, mlflow_uris
from .dvc_pull import _targets
from .monitoring import _observe
from .options import MLFLOW_OPTIONS, TRAIN_OPTIONS

if TYPE_CHECKING:
    from ..train import TrainResult


def _train_request(config: Config, cwd: Path) -> Any:
    from ..errors import ConfigError
    from ..ray_jobs import RaySettings
    from ..train import ProjectSpec, TrainRequest

    project = config.get("train.project")
    # train.backend, or (before it existed) train.project.backend.
    backend = str(config.get("train.backend") or (project or {}).get("backend") or "local")
    ray = RaySettings.from_config(config.get("train.ray")) if backend == "ray" else None
    if backend not in ("local", "ray") and not project:
        raise ConfigError(
            f"train.backend '{backend}' is an MLflow Projects backend, and there is no "
            "train.project to run on it",
            "set train.project (the project-uri input), or train.backend: local or ray",
        )
    spec = None
    if project:
        spec = ProjectSpec(
            uri=str(project.get("uri") or "."),
            entry_point=str(project.get("entry_point") or "main"),
            parameters=dict(project.get("parameters") or {}),
            backend="local" if ray else backend,
            backend_config=project.get("backend_config"),
            env_manager=str(project.get("env_manager") or "local"),
        )
    repository = os.environ.get("GITHUB_REPOSITORY", "")
    experiment = config.get("mlflow.experiment") or (
        repository.rsplit("/", 1)[-1] if repository else cwd.name
    )
    tracking_uri, registry_uri = mlflow_uris(config)
    if ray is not None:  # what the proxy headers and forwarded secrets hold never shows
        for variable in (*ray.headers.values(), *ray.forward_secrets):
            gha.mask(os.environ.get(variable, ""))
    return TrainRequest(
        tracking_uri=tracking_uri,
        registry_uri=registry_uri,
        experiment=str(experiment),
        working_directory=(cwd / str(config.get("train.working_directory", "."))),
        base_environment=telemetry.user_environment(os.environ),  # as the user set it
        command=config.get("train.command"),
        project=spec,
        run_name=config.get("train.run_name"),
        tags={str(k): str(v) for k, v in (config.get("train.tags") or {}).items()},
        ray=ray,
        data_targets=tuple(_targets(config)),
    )


def run_train(config: Config, data_fingerprint: str) -> TrainResult:
    """Shared by `train` and `run`: train, emit outputs and summary, fail like the command."""
    from .. import context, data, report, tracking
    from .. import train as train_core

    cwd = Path.cwd()
    request = _train_request(config, cwd)
    if not data_fingerprint:
        data_fingerprint = data.workspace_fingerprint(
            Path(config.get("data.repo", ".")), _targets(config)
        )
    run_context = context.detect(os.environ, cwd)
    source = request.command or (request.project.uri if request.project else "")
    tags = {
        **run_context.tags(),
        "mlflow.source.name": source,
        "mlflow.source.type": "PROJECT" if request.project else "LOCAL",
        "mlflow.user": run_context.actor,
        "mlops.data.fingerprint": data_fingerprint,
        "mlops.train.mode": "project" if request.project else "command",
        "mlops.train.backend": "ray" if request.ray else "",
        "mlops.version": __version__,
    }
    tags = {k: v for k, v in tags.items() if v}
    with gha.group(f"train: {source}"):
        started = time.monotonic()
        result = train_core.run_training(request, tags)
    _observe(monitor.train_samples(time.monotonic() - started))
    emit(
        {
            "run-id": result.run_id,
            "run-url": result.run_url,
            "experiment-id": result.experiment_id,
            "status": result.status,
            "model-uri": result.model_uri,
            "metrics": metrics_json(result.metrics),
            "data-fingerprint": data_fingerprint,
            "ray-job-id": result.ray_job_id,
        }
    )
    shown = tracking.redact(request.tracking_uri)
    gha.add_summary(report.train_summary(result, request.experiment, shown))
    if len(result.model_uris) > 1:
        gha.annotate(
            "warning",
            f"the run logged {len(result.model_uris)} models; model-uri is "
            f"the newest, {result.model_uri}",
            title="train",
        )
    if not result.model_uri and result.succeeded:
        gha.annotate(
            "warning",
            "the run logged no model: model-uri is empty (log one with mlflow.<flavor>.log_model)",
            title="train",
        )
    failed = train_core.failure(result)
    if failed is not None:
        raise failed
    return result


def cmd_train(args: argparse.Namespace) -> int:
    # A signal while the config loads or the data is fingerprinted ends the step as 130/143
    # too, not as a bare death by signal; run_training takes over before the run is created.
    with cancellable("train"):
        config = load_config(args, (*MLFLOW_OPTIONS, *TRAIN_OPTIONS))
        if getattr(args, "stop_job", None):
            return stop_job(config, args.stop_job)
        run_train(config, _value(args, "data-fingerprint"))
    return EXIT_OK


def stop_job(config: Config, job_id: str) -> int:
    """`train --stop-job`: end a Ray job whose step can no longer do it, and its run."""
    from .. import ray_submit, tracking
    from ..ray_jobs import RaySettings

    settings = RaySettings.from_config(config.get("train.ray"))
    client = ray_submit.connect(settings, os.environ)
    outcome = ray_submit.stop(client, job_id)
    print(f"Ray job {job_id}: {outcome.status}")
    run_id = outcome.run_id
    if run_id:
        tracking_uri, registry_uri = mlflow_uris(config)
        mlflow_client = tracking.client(tracking_uri, registry_uri)
        with tracking.tracking_server(tracking_uri, f"closing run {run_id}"):
            if mlflow_client.get_run(run_id).info.status == "RUNNING":
                mlflow_client.set_terminated(run_id, "KILLED")
                print(f"MLflow run {run_id}: KILLED")
    emit({"ray-job-id": job_id, "run-id": run_id, "status": outcome.status})
    return EXIT_OK


def metrics_json(metrics: dict[str, float]) -> str:
    """The metrics output: JSON has no infinity or NaN, so those go as "inf", "-inf", "nan"."""
    return json.dumps(
        {name: value if math.isfinite(value) else str(value) for name, value in metrics.items()},
        sort_keys=True,
    )
