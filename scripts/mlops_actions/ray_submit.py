"""Submit a training to a Ray cluster's job server and follow it to its end (Ray's SDK).

`ray[default]` is an optional extra (`mlops-actions[ray]`, the setup action's `extras: ray`):
imported here only, when `train.backend` is ray. The arguments come from `ray_jobs`.

Following a job: its log streams into the step's log as it comes (the SDK's `tail_job_logs`,
in a thread of its own), its status is polled, and the step's signals are watched. A job that
is still PENDING after `train.ray.start_timeout_seconds` (no node has the resources it asked
for, or its runtime environment cannot be set up) is stopped and reported with what it asked
for. A cancelled step stops the job and waits, within the runner's grace, for Ray to say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from .cancellation import Cancellation
from .errors import ConfigError, ServiceError
from .ray_jobs import (
    TERMINAL,
    RaySettings,
    exit_status,
    headers,
    job_server_url,
    requested_resources,
)
from .tracking import redact

POLL_SECONDS = 0.5
# Ray's error types of a job that failed before its entrypoint ran (JobErrorType).
SET_UP_FAILURES = frozenset(
    {
        "RUNTIME_ENV_SETUP_FAILURE",
        "JOB_SUPERVISOR_ACTOR_START_FAILURE",
        "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE",
        "JOB_ENTRYPOINT_COMMAND_START_ERROR",
    }
)
STOP_GRACE_SECONDS = 5.0  # GitHub sends SIGKILL 7.5 s after it cancels a step
LOG_DRAIN_SECONDS = 5.0


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    status: str  # SUCCEEDED | FAILED | STOPPED (| PENDING / RUNNING: a stop not yet done)
    exit_code: int
    message: str
    run_id: str = ""  # the MLflow run the job logged into, from its metadata


def _import_sdk() -> Any:
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise ConfigError(
            "train.backend is ray, and Ray's SDK is not installed here",
            "install the extra: the setup action's `extras: ray` input, or "
            "pip install 'mlops-actions[ray]'",
        ) from None
    return JobSubmissionClient


def connect(settings: RaySettings, environ: Mapping[str, str]) -> Any:
    """A job client for the cluster; an unreachable job server is a ServiceError naming it."""
    client_class = _import_sdk()
    # One line per .gitignore Ray reads while packing the upload: noise in the step's log.
    logging.getLogger("ray._private.runtime_env.packaging").setLevel(logging.WARNING)
    url = job_server_url(settings.address)
    try:
        return client_class(url, headers=headers(settings, environ) or None)
    except (ConnectionError, RuntimeError) as error:
        raise ServiceError(
            f"Ray job server {redact(url)} (train.ray.address) could not be reached: "
            f"{_first_line(error)}",
            "check the address (the head's dashboard port, 8265 by default), that the "
            "cluster is up, and train.ray.headers for a proxy in front of it",
        ) from None


def _first_line(error: BaseException | str) -> str:
    """The useful line of an SDK error or a job's message (the job server sends whole
    tracebacks)."""
    text = error if isinstance(error, str) else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^(ValueError|TypeError|RuntimeError|[A-Za-z]+Error): ", line):
            return line.rstrip(".")
    if lines:
        return lines[0].rstrip(".")
    return "no message" if isinstance(error, str) else type(error).__name__


@contextlib.contextmanager
def _uploading(with_ignored_files: bool) -> Iterator[None]:
    """Ray's SDK leaves out of the upload what .gitignore files list, and DVC lists every
    file it tracks there: to send the pulled data with the checkout, the SDK is told (by the
    one switch it reads, in this process's environment) to upload them too."""
    switch = "RAY_RUNTIME_ENV_IGNORE_GITIGNORE"
    before = os.environ.get(switch)
    if with_ignored_files:
        os.environ[switch] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(switch, None)
        else:
            os.environ[switch] = before


def submit(
    client: Any, arguments: Mapping[str, Any], address: str, *, with_data: bool = True
) -> str:
    """The job id; a submission the job server refuses is a ConfigError naming train.ray.
    `with_data`: upload what .gitignore lists too (the data DVC pulled here)."""
    try:
        with _uploading(with_data):
            return str(client.submit_job(**arguments))
    except (TypeError, ValueError) as error:  # the SDK's own checks of the runtime env
        raise ConfigError(
            f"Ray refused the submission: {_first_line(error)}",
            "check train.ray (pip, excludes, entrypoint) and the size of the working "
            "directory (Ray uploads at most 500 MiB: exclude data the cluster pulls itself)",
        ) from None
    except RuntimeError as error:  # the job server's answer to a bad request
        text = str(error)
        refused = "status code 4" in text  # a 4xx: the request, not the server
        kind = ConfigError if refused else ServiceError
        raise kind(
            f"Ray job server {redact(address)} refused the submission: {_first_line(error)}",
            "check train.ray (pip, excludes, entrypoint resources, job_id_prefix)",
        ) from None
    except ConnectionError as error:
        raise ServiceError(
            f"Ray job server {redact(address)} failed during the submission: {error}"
        ) from None


def _stream_logs(client: Any, job_id: str, out: IO[str], stop: threading.Event) -> None:
    """Print the job's log as it comes, until it ends or `stop` is set."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()
            if stop.is_set():
                return

    with contextlib.suppress(Exception):  # the log is a courtesy: its end never fails the step
        asyncio.run(tail())


def follow(
    client: Any,
    job_id: str,
    settings: RaySettings,
    cancellation: Cancellation,
    out: IO[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> JobOutcome:
    """Wait for the job's end, streaming its log; stop it when the step is cancelled or it
    cannot start. Call inside `cancellation.deferred()`: signals are only recorded here."""
    stop = threading.Event()
    logs = threading.Thread(
        target=_stream_logs, args=(client, job_id, out or sys.stdout, stop), daemon=True
    )
    logs.start()
    submitted = clock()
    try:
        while True:
            status = str(client.get_job_status(job_id).value)
            if status in TERMINAL:
                break
            if cancellation.cancelled:
                return _stop(client, job_id, "the step was cancelled")
            if status == "PENDING" and clock() - submitted > settings.start_timeout_seconds:
                _stop(client, job_id, "it did not start")
                raise ConfigError(
                    f"Ray job {job_id} was still PENDING after "
                    f"{settings.start_timeout_seconds:g} s (train.ray.start_timeout_seconds): "
                    f"{_why_pending(settings)}; its stop is queued (Ray fails a job that never "
                    "starts after RAY_JOB_START_TIMEOUT_SECONDS on the head)",
                    "ask for resources the cluster has and requirements that install, or raise "
                    "start_timeout_seconds for a cluster that scales up",
                )
            time.sleep(POLL_SECONDS)
        info = client.get_job_info(job_id)
        error_type = str(getattr(info, "error_type", "") or "")
        if status == "FAILED" and error_type in SET_UP_FAILURES:
            # Not the training: the job never ran. What the job asked for is to blame.
            raise ConfigError(
                f"Ray could not set up job {job_id}'s environment ({error_type}): "
                f"{_first_line(str(info.message or ''))}",
                "check train.ray.pip (each requirement must install on the cluster), "
                "train.ray.excludes and train.ray.entrypoint",
            )
        code = exit_status(status, getattr(info, "driver_exit_code", None))
        return JobOutcome(job_id, status, code, str(info.message or ""))
    finally:
        logs.join(LOG_DRAIN_SECONDS)
        stop.set()


def _why_pending(settings: RaySettings) -> str:
    """What can keep a job from starting, among what it asked for."""
    reasons = []
    requested = requested_resources(settings)
    if requested:
        reasons.append(f"no node had what it asked for ({requested})")
    if settings.pip:
        reasons.append("its requirements (train.ray.pip) were still installing, or failed to")
    reasons.append("its runtime environment could not be set up")
    return ", or ".join(reasons)


def _stop(client: Any, job_id: str, why: str) -> JobOutcome:
    """Stop the job and wait, briefly, for Ray to confirm; the step's outcome is
    reported as stopped whatever Ray says within the grace."""
    print(f"stopping Ray job {job_id}: {why}", flush=True)
    with contextlib.suppress(Exception):
        client.stop_job(job_id)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    status = "PENDING"
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            status = str(client.get_job_status(job_id).value)
        if status in TERMINAL:
            break
        time.sleep(POLL_SECONDS / 2)
    return JobOutcome(job_id, "STOPPED", exit_status("STOPPED", None), why)


def stop(client: Any, job_id: str) -> JobOutcome:
    """Stop a job by id, from any machine (a runner that died left it): the job's status
    afterwards and the MLflow run it names. An unknown job is a ConfigError."""
    try:
        info = client.get_job_info(job_id)
    except RuntimeError as error:
        raise ConfigError(
            f"Ray job {job_id} is not known to the job server: {_first_line(error)}",
            "pass the train step's ray-job-id output (the run's mlops.ray.job_id tag)",
        ) from None
    run_id = str((info.metadata or {}).get("mlflow_run_id", ""))
    status = str(info.status.value)
    if status not in TERMINAL:
        status = _stop(client, job_id, "asked to by --stop-job").status
        with contextlib.suppress(Exception):
            status = str(client.get_job_status(job_id).value)
    return JobOutcome(job_id, status, exit_status(status, None), "", run_id)
