"""A real `mlflow server` on loopback for the benchmarks that talk to a tracking server."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(workdir: Path, store_uri: str = "") -> tuple[subprocess.Popen[bytes], str]:
    """`mlflow server` with one worker, serving artifacts itself; SQLite in `workdir` by default.
    Its output goes to `workdir`/server.log.

    As in the tests, MLflow's server-side job runner (five consumer processes polling for GenAI
    jobs) is off: nothing here submits a job, and on two cores it takes CPU from the measurement.
    """
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = workdir / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                str(mlflow),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                store_uri or f"sqlite:///{workdir / 'store.db'}",
                "--artifacts-destination",
                str(workdir / "artifacts"),
                "--workers",
                "1",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit(f"mlflow server did not start:\n{log.read_text(errors='replace')[-3000:]}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def machine(**versions: str) -> dict[str, Any]:
    """The machine a benchmark ran on, with MLflow's version and any other `versions` given."""
    import mlflow

    memory = Path("/proc/meminfo").read_text().split()[1]
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(int(memory) / 1024 / 1024),
        "python": platform.python_version(),
        **versions,
        "mlflow": mlflow.__version__,
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
