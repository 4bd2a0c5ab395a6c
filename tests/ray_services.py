"""A real Ray head node on loopback, for the tests of training on a Ray cluster.

Load it as a plugin in a test module, like tests/prom_services.py:

    pytest_plugins = ["tests.ray_services"]

The `ray_cluster` fixture (session-scoped: one node for the whole run) -> `RayCluster`:
`.address` is the job server (the dashboard, http://127.0.0.1:<port>) that
`ray.job_submission.JobSubmissionClient` and `train.ray.address` take; `.gcs_address` the GCS
(`ray.init(address=...)`); `.client()` a `JobSubmissionClient`; `.temp_dir` the node's own temp
dir (its session logs are under `session_latest/logs`); `.processes()` the live processes of
the node (its daemons, workers and job drivers). `start_ray_cluster(env=...)` starts another
one, e.g. with `RAY_JOB_START_TIMEOUT_SECONDS` for a short start timeout; stop it with `.stop()`.

Each node gets its own free ports and its own temp dir, and `stop()` ends only the processes
this node started (never `ray stop`, which ends every Ray process of the user on the machine):
those of the `ray start` process's session, and their descendants (job drivers start sessions
of their own). A head node takes about 1 GB of memory and 2 CPUs (`--num-cpus 2`).

Ray missing (the dev extra not installed) skips the test locally and fails it in CI
(MLOPS_ACTIONS_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, free_port, service_unavailable

START_TIMEOUT = 180.0


def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, session id, start time) of a live process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has ended; its parent reaps it
        return None
    return int(fields[1]), int(fields[3]), int(fields[19])


def _all_processes() -> dict[int, tuple[int, int, int]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _proc_stat(int(entry))) is not None:
            found[int(entry)] = stat
    return found


@dataclass
class RayCluster:
    address: str
    gcs_address: str
    temp_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    # (pid, start time) of every process seen: a job driver whose supervisor ended is
    # re-parented and lost from the tree; the start time tells a reused pid from it.
    _known: set[tuple[int, int]] = field(default_factory=set)

    def client(self) -> Any:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address)

    def processes(self) -> set[int]:
        """The node's live processes: its session's, their descendants, and any seen before."""
        table = _all_processes()
        family = {pid for pid, (_, sid, _) in table.items() if sid == self.process.pid}
        family |= {pid for pid, (_, _, start) in table.items() if (pid, start) in self._known}
        grew = True
        while grew:
            children = {pid for pid, (ppid, _, _) in table.items() if ppid in family} - family
            family |= children
            grew = bool(children)
        self._known |= {(pid, table[pid][2]) for pid in family}
        return family

    def stop(self, grace: float = 3) -> None:
        """End every process of this node and check that none is left.

        TERM, then KILL after `grace` seconds: the raylet, the GCS and the job supervisor take
        20 s and more to end on TERM alone, and nothing of a test node needs to be kept.
        """
        self.processes()
        for sig, timeout in ((signal.SIGTERM, grace), (signal.SIGKILL, 20.0)):
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while self.processes() and time.monotonic() < deadline:
                self.process.poll()  # reap the `ray start` process, our child
                time.sleep(0.2)
            if not self.processes():
                break
        if self.process.poll() is None:
            self.process.wait(timeout=5)
        left = self.processes()
        assert not left, f"Ray processes left after stop: {sorted(left)}"
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_ray_cluster(env: dict[str, str] | None = None, num_cpus: int = 2) -> RayCluster:
    """Start a head node with free ports and a temp dir of its own; wait for its job server."""
    ray = BIN / "ray"
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        service_unavailable("Ray (install the dev dependencies: ray[default])")
    if not ray.exists():
        service_unavailable(f"Ray's command line ({ray})")
    # Short: Ray's Unix sockets live under it and a socket path has at most 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    gcs_port, dashboard_port = free_port(), free_port()
    ports = {
        "--port": gcs_port,
        "--dashboard-port": dashboard_port,
        "--ray-client-server-port": free_port(),
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    argv = [
        str(ray),
        "start",
        "--head",
        "--block",  # the process stays: its session holds the node's processes
        "--node-ip-address",
        "127.0.0.1",
        "--dashboard-host",
        "127.0.0.1",
        "--num-cpus",
        str(num_cpus),
        "--num-gpus",
        "0",
        "--object-store-memory",
        str(256 * 1024 * 1024),
        "--disable-usage-stats",
        "--temp-dir",
        str(temp_dir),
        *(item for option, port in ports.items() for item in (option, str(port))),
    ]
    log = temp_dir / "ray-start.log"
    environment = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **(env or {}),
    }
    environment.pop("RAY_ADDRESS", None)
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, env=environment, start_new_session=True
        )
    cluster = RayCluster(
        f"http://127.0.0.1:{dashboard_port}", f"127.0.0.1:{gcs_port}", temp_dir, process, log
    )
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        cluster.processes()  # remember them, for stop() after a failed start
        if process.poll() is not None:
            output = log.read_text()[-3000:]
            cluster.stop()
            raise RuntimeError(f"ray start exited with {process.returncode}:\n{output}")
        try:
            JobSubmissionClient(cluster.address).get_version()
            return cluster
        except Exception as error:  # ConnectionError, or the job module still starting
            if time.monotonic() > deadline:
                output = log.read_text()[-3000:]
                cluster.stop()
                raise RuntimeError(
                    f"Ray's job server {cluster.address} did not answer in {START_TIMEOUT} s "
                    f"({error}):\n{output}"
                ) from error
            time.sleep(0.5)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A real Ray head node on loopback (2 CPUs, no GPU), stopped after the session."""
    cluster = start_ray_cluster()
    yield cluster
    cluster.stop()
