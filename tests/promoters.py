"""Many `mlops-actions` runs at once, each a real process, without paying for MLflow's import
each time: a fork server imports the CLI and MLflow once, then forks one child per run.

The stress and fault tests run hundreds of promotions; a fresh interpreter costs seconds of
imports apiece, a fork a few milliseconds. Each child is a separate process with its own
environment, working directory, stdout and stderr, and a pid a test may kill.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import BIN, CliResult

# Runs in the fork server (the venv's Python): one JSON job per stdin line; it answers
# {"id", "pid"} when the child started and {"id", "code"} when it ended.
SERVER = r"""
import json, os, sys, threading
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
import importlib, pkgutil
import mlflow, mlflow.tracking, mlflow.exceptions, github  # the imports every child shares
import mlops_actions
from mlops_actions import cli
for module in pkgutil.walk_packages(mlops_actions.__path__, "mlops_actions."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)

out = os.fdopen(os.dup(1), "w", buffering=1)
lock = threading.Lock()
jobs = {}

def say(message):
    with lock:
        out.write(json.dumps(message) + "\n")
        out.flush()

def reap():
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            threading.Event().wait(0.05)
            continue
        say({"id": jobs.pop(pid), "code": os.waitstatus_to_exitcode(status)})

threading.Thread(target=reap, daemon=True).start()
for line in sys.stdin:
    job = json.loads(line)
    with lock:
        pid = os.fork()
        if pid == 0:
            os.chdir(job["cwd"])
            os.environ.clear()
            os.environ.update(job["env"])
            for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
                target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(target, fd)
                os.close(target)
            sys.stdout = open(1, "w", buffering=1, closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            try:
                code = cli.main(job["args"])
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 2
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        jobs[pid] = job["id"]
    say({"id": job["id"], "pid": pid})
"""


class Promoters:
    """A fork server for `mlops-actions` runs; use as a context manager."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._next = 0
        self._pids: dict[int, int] = {}
        self._codes: dict[int, int] = {}
        self._changed = threading.Condition()
        self._server: subprocess.Popen[str] | None = None

    def __enter__(self) -> Promoters:
        self._server = subprocess.Popen(
            [str(BIN / "python"), "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        )
        threading.Thread(target=self._listen, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        assert self._server.stdin is not None
        self._server.stdin.close()
        self._server.kill()
        self._server.wait()

    def _listen(self) -> None:
        assert self._server is not None
        assert self._server.stdout is not None
        for line in self._server.stdout:
            message = json.loads(line)
            with self._changed:
                if "pid" in message:
                    self._pids[message["id"]] = message["pid"]
                else:
                    self._codes[message["id"]] = message["code"]
                self._changed.notify_all()

    def start(self, args: list[str], env: dict[str, str], cwd: Path | None = None) -> int:
        """Start one run; returns its job id (see pid, wait)."""
        assert self._server is not None
        assert self._server.stdin is not None
        self._next += 1
        job = self._next
        job_dir = self.workdir / f"job-{job}"
        job_dir.mkdir(parents=True)
        message = {
            "id": job,
            "args": args,
            "env": env,
            "cwd": str(cwd or job_dir),
            "stdout": str(job_dir / "stdout"),
            "stderr": str(job_dir / "stderr"),
        }
        self._server.stdin.write(json.dumps(message) + "\n")
        self._server.stdin.flush()
        return job

    def pid(self, job: int, timeout: float = 30) -> int:
        with self._changed:
            if not self._changed.wait_for(lambda: job in self._pids, timeout):
                raise TimeoutError(f"job {job} did not start")
            return self._pids[job]

    def wait(self, job: int, timeout: float = 300) -> CliResult:
        with self._changed:
            if not self._changed.wait_for(lambda: job in self._codes, timeout):
                raise TimeoutError(f"job {job} did not end in {timeout} s")
            code = self._codes[job]
        job_dir = self.workdir / f"job-{job}"
        return CliResult(
            code,
            (job_dir / "stdout").read_text(errors="replace"),
            (job_dir / "stderr").read_text(errors="replace"),
        )

    def run(self, args: list[str], env: dict[str, str], timeout: float = 300) -> CliResult:
        return self.wait(self.start(args, env), timeout)


class CpuLoad:
    """Busy processes on every core, for as long as the context lasts."""

    def __enter__(self) -> CpuLoad:
        self._burners = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 2)
        ]
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: Any) -> None:
        for burner in self._burners:
            burner.kill()
            burner.wait()
