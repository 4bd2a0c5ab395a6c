"""Start the model server: `python -m mlops_actions.serving` (the image's entrypoint).

Settings come from the environment, so `docker run -e` changes them without a rebuild:

  MLSERVING_MODEL_DIR        model directory (default /opt/ml/model)
  MLSERVING_HOST / _PORT     listen address (default 0.0.0.0:8080)
  MLSERVING_WORKERS          worker processes: a number, or `auto` (default): one per CPU the
                             container may use (its CPU quota, else its CPU set), at most 8
  MLSERVING_MAX_BODY_BYTES   largest request body (default 52428800, 50 MiB)
  MLSERVING_TIMEOUT_SECONDS  longest prediction before 504 (default 60)
  MLSERVING_GRACEFUL_SECONDS time given to in-flight requests on SIGTERM (default 30)
  MLSERVING_LOG_LEVEL        log level (default info)
  MLSERVING_MODEL_NAME / _VERSION  the model's name and version (/version, V2 routes, metrics)
  MLSERVING_PROTOCOL_MODEL_NAME    another name the V2 routes answer to
"""

from __future__ import annotations

import gc
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
# `auto` stops here: a pod without a CPU limit sees every CPU of its node, and each worker
# holds its own copy of what it touches. More workers than this is a decision, not a default.
AUTO_WORKERS_CAP = 8


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: the cgroup v2 quota (`docker run --cpus`, Kubernetes limits)
    when there is one, else the CPUs it may run on."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


def worker_count(value: str, cpus: Callable[[], int] = available_cpus) -> int:
    if value.strip().lower() in ("", "auto"):
        return min(cpus(), AUTO_WORKERS_CAP)
    if not value.strip().isdigit() or int(value) < 1:
        raise SystemExit(f"MLSERVING_WORKERS must be at least 1, or auto; got {value!r}")
    return int(value)


def load_app() -> Any:
    """The app with its model loaded. The cyclic garbage collector is off meanwhile: loading
    creates many objects and few cycles, and its passes cost ~15 % of the time to /ping. The
    objects that exist then are frozen out of its way, so forked workers do not copy their
    pages when it runs."""
    from .app import create_app

    gc.disable()
    try:
        return create_app()
    finally:
        gc.freeze()
        gc.enable()


def main() -> int:
    env = os.environ
    workers = worker_count(env.get("MLSERVING_WORKERS", "auto"))
    host = env.get("MLSERVING_HOST", "0.0.0.0")  # noqa: S104 - a server in a container
    port = int(env.get("MLSERVING_PORT", "8080"))
    graceful_seconds = int(env.get("MLSERVING_GRACEFUL_SECONDS", "30"))
    log_level = env.get("MLSERVING_LOG_LEVEL", "info")
    if workers == 1:
        import uvicorn

        uvicorn.run(
            load_app(),
            host=host,
            port=port,
            timeout_graceful_shutdown=graceful_seconds,
            log_level=log_level,
            access_log=False,
            server_header=False,
        )
        return 0
    # Every worker writes its samples here and /metrics adds them up. Stale files from a
    # previous start would be counted again, so a given directory is emptied first. It must
    # be set before prometheus_client is first imported.
    directory = env.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)
    else:
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mlserving-metrics-")
    from . import prefork

    prefork.run(
        load_app,
        host=host,
        port=port,
        workers=workers,
        graceful_seconds=graceful_seconds,
        log_level=log_level,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
