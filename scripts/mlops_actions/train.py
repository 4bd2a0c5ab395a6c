"""train: run the user's training inside an MLflow run this step creates and owns.

The child gets MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME/ID and MLFLOW_RUN_ID, so user code
that calls `mlflow.start_run()` logs into our run. Whatever the child does, the run ends in a
terminal state that matches the exit status: FINISHED (0), FAILED (non-zero) or KILLED
(SIGTERM/SIGINT: the whole process tree the command started is ended, see `proctree`). Never
left RUNNING, however early the signal comes: the handlers go in before the run is created
(see `cancellation`), and the processes the command leaves behind are ended when it exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import tracking
from .cancellation import Cancellation, as_step_error
from .errors import (
    EXIT_CANCELLED,
    Cancelled,
    CommandFailed,
    ConfigError,
    ServiceError,
    StepCancelled,
)
from .proctree import ProcessTree

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from .ray_jobs import RaySettings

# After forwarding SIGTERM, how long the child may take to exit before it is killed.
# GitHub sends SIGKILL 7.5 s after its first signal on cancellation, so stay below that.
TERMINATION_GRACE_SECONDS = 5.0
LOCAL_BACKEND = "local"
LOCAL_ENV_MANAGER = "local"


@dataclass(frozen=True)
class ProjectSpec:
    uri: str
    entry_point: str = "main"
    parameters: Mapping[str, Any] = field(default_factory=dict)
    backend: str = LOCAL_BACKEND
    backend_config: str | Mapping[str, Any] | None = None
    env_manager: str = LOCAL_ENV_MANAGER

    @property
    def runs_here(self) -> bool:
        """Run by us as a plain child process (exit status and signals kept exactly)."""
        return self.backend == LOCAL_BACKEND and self.env_manager == LOCAL_ENV_MANAGER


@dataclass(frozen=True)
class TrainRequest:
    tracking_uri: str
    experiment: str
    working_directory: Path
    base_environment: Mapping[str, str]
    command: str | None = None
    project: ProjectSpec | None = None
    registry_uri: str = ""
    run_name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    ray: RaySettings | None = None  # train.backend: ray
    data_targets: tuple[str, ...] = ()  # what the cluster pulls with train.ray.pull_data


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    experiment_id: str
    status: str  # FINISHED | FAILED | KILLED
    exit_code: int
    run_url: str
    model_uri: str
    model_uris: tuple[str, ...]
    metrics: dict[str, float]
    ray_job_id: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == "FINISHED"


def _signal_all(tree: ProcessTree, process: subprocess.Popen[bytes], signum: int) -> None:
    # The group too: without a subreaper (not Linux) its orphans are out of the tree's sight.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
    tree.signal(signum)


def run_supervised(
    argv: list[str],
    cwd: Path,
    env: Mapping[str, str],
    cancellation: Cancellation,
    grace: float = TERMINATION_GRACE_SECONDS,
) -> int:
    """Run a child in its own session and end every process it started, whatever happens.

    On cancellation (SIGINT or SIGTERM: `cancellation` only records it meanwhile) the whole tree
    gets SIGTERM, then SIGKILL after `grace` seconds. When the child exits, what it left running
    gets the same. Returns the child's exit status; killed by signal N, 128 + N as a shell says.
    """
    with ProcessTree() as tree, cancellation.deferred():
        if cancellation.signum is not None:
            return EXIT_CANCELLED + cancellation.signum  # not worth starting (leaving raises)
        process = subprocess.Popen(argv, cwd=cwd, env=dict(env), start_new_session=True)
        deadline: float | None = None
        while True:
            try:
                code = process.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if cancellation.cancelled and deadline is None:
                deadline = time.monotonic() + grace
                _signal_all(tree, process, signal.SIGTERM)
            elif deadline is not None and time.monotonic() > deadline:
                _signal_all(tree, process, signal.SIGKILL)
        left = grace if deadline is None else max(0.0, deadline - time.monotonic())
        tree.end(left)
        # Leaving `deferred` raises Cancelled if a signal came: the caller closes the run KILLED.
    return 128 - code if code < 0 else code


def _child_environment(request: TrainRequest, experiment_id: str, run_id: str) -> dict[str, str]:
    env = dict(request.base_environment)
    env.update(
        {
            "MLFLOW_TRACKING_URI": request.tracking_uri,
            "MLFLOW_EXPERIMENT_NAME": request.experiment,
            "MLFLOW_EXPERIMENT_ID": experiment_id,
            "MLFLOW_RUN_ID": run_id,
        }
    )
    if request.registry_uri:
        env["MLFLOW_REGISTRY_URI"] = request.registry_uri
    return env


def _project_command(
    spec: ProjectSpec, mlflow_client: MlflowClient, run_id: str
) -> tuple[list[str], Path]:
    """The entry point's command line, resolved by MLflow's own MLproject parser."""
    from mlflow.exceptions import MlflowException
    from mlflow.projects.utils import load_project

    project_dir = Path(spec.uri)
    try:
        project = load_project(str(project_dir))  # type: ignore[no-untyped-call]
        entry_point = project.get_entry_point(spec.entry_point)
        params = {k: str(v) for k, v in spec.parameters.items()}
        command = entry_point.compute_command(params, storage_dir=None)
        # compute_parameters gives the values shell-quoted for the command line ('' for an
        # empty one); the run records them as given, as the training script receives them.
        logged = {
            name: params.get(name, parameter.default)
            for name, parameter in entry_point.parameters.items()
        } | params
    except (MlflowException, OSError) as exc:
        raise ConfigError(
            f"MLflow Project at '{spec.uri}', entry point '{spec.entry_point}': {exc}",
            "check train.project (uri, entry_point, parameters) against the MLproject file",
        ) from None
    for key, value in logged.items():
        mlflow_client.log_param(run_id, key, "" if value is None else str(value))
    mlflow_client.set_tag(run_id, "mlflow.project.entryPoint", spec.entry_point)
    mlflow_client.set_tag(run_id, "mlflow.project.backend", LOCAL_BACKEND)
    return ["bash", "-c", command], project_dir


def _run_delegated(
    spec: ProjectSpec,
    request: TrainRequest,
    experiment_id: str,
    run_id: str | None,
    tag_run: Callable[[str], None],
    cancellation: Cancellation,
) -> tuple[str, int]:
    """Hand the project to MLflow's own backend (Kubernetes, Databricks, plugins, conda...).

    Returns (run id, exit status); on cancellation the submitted run is cancelled first.
    """
    import mlflow
    import mlflow.projects
    from mlflow.exceptions import ExecutionException, MlflowException

    mlflow.set_tracking_uri(request.tracking_uri)
    if request.registry_uri:
        mlflow.set_registry_uri(request.registry_uri)
    backend_config = spec.backend_config
    if isinstance(backend_config, Mapping):
        backend_config = dict(backend_config)
    local = spec.backend == LOCAL_BACKEND
    submitted = None
    # A remote submission returns as soon as its run exists: let it, so that a signal meanwhile
    # still finds the run to cancel. A local one is the training itself: a signal interrupts it.
    submitting = contextlib.nullcontext() if local else cancellation.deferred()
    with ProcessTree() as tree:
        try:
            with submitting:
                submitted = mlflow.projects.run(  # type: ignore[no-untyped-call]
                    spec.uri,
                    entry_point=spec.entry_point,
                    parameters=dict(spec.parameters),
                    experiment_id=experiment_id,
                    backend=spec.backend,
                    backend_config=backend_config,
                    env_manager=spec.env_manager,
                    # The local backend honours our run; remote backends create their own run,
                    # which we tag as soon as it exists.
                    run_id=run_id if local else None,
                    run_name=request.run_name,
                    synchronous=local,
                )
            if not local:
                tag_run(submitted.run_id)
                ok = submitted.wait()
                return submitted.run_id, 0 if ok else 1
            return submitted.run_id, 0
        except ExecutionException as exc:
            if run_id is None:
                raise ServiceError(
                    f"MLflow Projects backend '{spec.backend}' failed: {exc}"
                ) from None
            return run_id, 1
        except Cancelled as cancelled:
            if submitted is not None:
                submitted.cancel()
            return (submitted.run_id if submitted else run_id or ""), (
                EXIT_CANCELLED + cancelled.signum
            )
        except MlflowException as exc:
            raise ConfigError(f"MLflow Project '{spec.uri}': {exc}") from None
        finally:
            tree.end(TERMINATION_GRACE_SECONDS)  # what a local environment manager left running


def _ray_client(request: TrainRequest) -> Any:
    """The cluster's job client, before any run exists: a cluster that cannot be reached, or
    a store it cannot reach, leaves nothing behind."""
    from . import ray_jobs, ray_submit

    assert request.ray is not None
    if ray_jobs.local_store(request.tracking_uri):
        raise ConfigError(
            f"a Ray job cannot log to {tracking.redact(request.tracking_uri)}: that store is "
            "on this machine only",
            "set mlflow.tracking_uri (MLFLOW_TRACKING_URI) to a tracking server the cluster "
            "reaches",
        )
    return ray_submit.connect(request.ray, request.base_environment)


def _run_on_ray(
    request: TrainRequest,
    client: Any,
    command: str,
    cwd: Path,
    experiment_id: str,
    run_id: str,
    tag_run: Callable[[Mapping[str, str]], None],
    cancellation: Cancellation,
) -> tuple[int, str]:
    """Run the training as a job on a Ray cluster, logging into our run. Returns (exit
    status, job id); the job's log streams into ours. Signals are recorded meanwhile: a
    cancelled step stops the job, and leaving raises Cancelled (the run is closed KILLED)."""
    from . import ray_jobs, ray_submit

    settings = request.ray
    assert settings is not None
    env_vars = ray_jobs.job_environment(
        settings,
        tracking_uri=request.tracking_uri,
        registry_uri=request.registry_uri,
        experiment=request.experiment,
        experiment_id=experiment_id,
        run_id=run_id,
        environ=request.base_environment,
    )
    arguments = ray_jobs.submission(
        settings,
        command=ray_jobs.entrypoint(command, settings, request.data_targets),
        working_dir=str(cwd.resolve()),
        env_vars=env_vars,
        run_id=run_id,
        metadata={"mlflow_experiment_id": experiment_id},
    )
    with cancellation.deferred():
        job_id = ray_submit.submit(
            client, arguments, settings.address, with_data=not settings.pull_data
        )
        dashboard = ray_jobs.dashboard_url(settings.address, job_id)
        print(f"Ray job {job_id} submitted to {tracking.redact(settings.address)}: {dashboard}")
        tag_run({"mlops.ray.job_id": job_id, "mlops.ray.dashboard_url": dashboard})
        outcome = ray_submit.follow(client, job_id, settings, cancellation)
        print(
            f"Ray job {job_id}: {outcome.status}"
            + (f" ({outcome.message})" if outcome.message else "")
        )
    return outcome.exit_code, job_id


def _final_status(exit_code: int, signum: int | None) -> str:
    if signum is not None:
        return "KILLED"
    return "FINISHED" if exit_code == 0 else "FAILED"


def _close_run(
    mlflow_client: MlflowClient,
    uri: str,
    run_id: str,
    exit_code: int,
    cancellation: Cancellation,
) -> str:
    """End the run; a signal meanwhile lets the request finish, then the run says KILLED."""
    status = _final_status(exit_code, cancellation.signum)
    with (
        contextlib.suppress(Cancelled),
        cancellation.deferred(),
        tracking.tracking_server(uri, "closing the run"),
    ):
        mlflow_client.set_terminated(run_id, status)
        if cancellation.cancelled and status != "KILLED":
            status = "KILLED"  # cancelled while closing: the step was cancelled, the run says so
            mlflow_client.set_terminated(run_id, status)
    return status


def run_training(request: TrainRequest, tags: Mapping[str, str]) -> TrainResult:
    """Create the run, run the training in it, and close the run with the right status.

    A cancellation before the run exists raises StepCancelled; after, the run is closed KILLED
    and the result says so (the caller reports it with `failure`).
    """
    if bool(request.command) == bool(request.project):
        raise ConfigError(
            "nothing to train: set the `command` input (train.command) or train.project"
            if not request.command
            else "set either a command or a project, not both",
            "e.g. command: python train.py",
        )
    if not request.working_directory.is_dir():
        raise ConfigError(
            f"working directory {request.working_directory} does not exist",
            "fix the `working-directory` input (train.working_directory)",
        )
    # Before anything is created: a signal from now on cannot leave a run RUNNING.
    with Cancellation() as cancellation:
        try:
            return _train(request, tags, cancellation)
        except Cancelled as cancelled:
            raise as_step_error("training", cancelled) from None


def _run_in_our_run(
    request: TrainRequest,
    mlflow_client: MlflowClient,
    experiment_id: str,
    run_id: str,
    tag_run: Callable[[str, Mapping[str, str]], None],
    cancellation: Cancellation,
    ray_client: Any = None,
) -> tuple[int, str]:
    """The command or the project's entry point in the run we created: a child process here,
    or a job on a Ray cluster. Returns (exit status, Ray job id or '')."""
    project = request.project
    if project is not None:
        with tracking.tracking_server(request.tracking_uri, "logging the project's parameters"):
            argv, cwd = _project_command(project, mlflow_client, run_id)
    else:
        argv, cwd = ["bash", "-c", request.command or ""], request.working_directory
    if request.ray is not None:
        return _run_on_ray(
            request,
            ray_client,
            argv[-1],
            cwd,
            experiment_id,
            run_id,
            lambda tags: tag_run(run_id, tags),
            cancellation,
        )
    env = _child_environment(request, experiment_id, run_id)
    return run_supervised(argv, cwd, env, cancellation), ""


def _train(
    request: TrainRequest, tags: Mapping[str, str], cancellation: Cancellation
) -> TrainResult:
    uri = request.tracking_uri
    mlflow_client = tracking.client(uri, request.registry_uri)
    experiment_id = tracking.ensure_experiment(mlflow_client, request.experiment, uri)
    all_tags = {**tags, **request.tags}
    ray_client = _ray_client(request) if request.ray is not None else None

    def tag_run(run_id: str, tags: Mapping[str, str] = all_tags) -> None:
        with tracking.tracking_server(uri, "tagging the run"):
            for key, value in tags.items():
                mlflow_client.set_tag(run_id, key, value)

    project = request.project
    run_id: str | None = None
    exit_code = 1
    status = "FAILED"
    metrics: dict[str, float] = {}
    models: list[tracking.LoggedModelRef] = []
    job_id = ""
    try:
        try:
            if project is None or project.backend == LOCAL_BACKEND or request.ray is not None:
                # A signal during the request must not lose the run: it is closed KILLED below.
                with cancellation.deferred(), tracking.tracking_server(uri, "creating the run"):
                    run_id = mlflow_client.create_run(
                        experiment_id, run_name=request.run_name, tags=all_tags
                    ).info.run_id
            if project is not None and not project.runs_here and request.ray is None:
                run_id, exit_code = _run_delegated(
                    project, request, experiment_id, run_id, tag_run, cancellation
                )
            else:
                assert run_id is not None
                exit_code, job_id = _run_in_our_run(
                    request, mlflow_client, experiment_id, run_id, tag_run, cancellation, ray_client
                )
            if run_id and not cancellation.cancelled:
                with tracking.tracking_server(uri, "reading the run's results"):
                    metrics = tracking.metric_values(mlflow_client.get_run(run_id).data.metrics)
                    models = tracking.logged_models(mlflow_client, experiment_id, run_id)
        except Cancelled:
            if not run_id:
                raise  # nothing was created: run_training reports the cancellation
    finally:
        # Whatever happened above, the run must not stay RUNNING.
        if run_id:
            status = _close_run(mlflow_client, uri, run_id, exit_code, cancellation)
    if not run_id:
        assert cancellation.signum is not None  # a remote backend cancelled before its run existed
        raise Cancelled(cancellation.signum)
    if cancellation.signum is not None:
        exit_code = EXIT_CANCELLED + cancellation.signum
    return TrainResult(
        run_id=run_id,
        experiment_id=experiment_id,
        status=status,
        exit_code=exit_code,
        run_url=tracking.run_ui_url(uri, experiment_id, run_id),
        model_uri=models[0].uri if models else "",
        model_uris=tuple(m.uri for m in models),
        metrics=metrics,
        ray_job_id=job_id,
    )


def failure(result: TrainResult) -> CommandFailed | StepCancelled | None:
    """The error to raise for a run that did not finish, or None."""
    if result.succeeded:
        return None
    if result.status == "KILLED" and result.exit_code > EXIT_CANCELLED:
        return StepCancelled(
            f"training was cancelled with exit status {result.exit_code}; MLflow run "
            f"{result.run_id} is KILLED",
            result.exit_code - EXIT_CANCELLED,
        )
    return CommandFailed(
        f"training failed with exit status {result.exit_code}; MLflow run {result.run_id} "
        f"is {result.status}",
        result.exit_code,
        "the training output is in the log above",
    )
