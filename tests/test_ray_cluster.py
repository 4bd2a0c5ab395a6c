"""The Ray head node the Ray-backend tests run against: jobs through the Job Submission SDK."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.ray_services import RayCluster

pytest_plugins = ["tests.ray_services"]

pytestmark = pytest.mark.services


def wait_for_end(client: Any, job_id: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            return status
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {status} after {timeout} s")


def test_a_job_with_a_working_dir_and_env_vars_succeeds_and_logs(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    from ray.job_submission import JobStatus

    workdir = tmp_path / "project"
    workdir.mkdir()
    workdir.joinpath("hello.py").write_text(
        "import os\nprint('hello from', os.environ['GREETING'], open('data.txt').read())\n"
    )
    workdir.joinpath("data.txt").write_text("the working dir")
    client = ray_cluster.client()
    job_id = client.submit_job(
        entrypoint="python hello.py",
        runtime_env={"working_dir": str(workdir), "env_vars": {"GREETING": "the tests"}},
        entrypoint_num_cpus=1,
    )
    assert wait_for_end(client, job_id) == JobStatus.SUCCEEDED, client.get_job_logs(job_id)
    assert "hello from the tests the working dir" in client.get_job_logs(job_id)
    assert client.get_job_info(job_id).driver_exit_code == 0


def test_a_job_that_exits_3_fails_with_its_exit_code(ray_cluster: RayCluster) -> None:
    from ray.job_submission import JobStatus

    client = ray_cluster.client()
    job_id = client.submit_job(entrypoint="echo about to fail; exit 3")
    assert wait_for_end(client, job_id) == JobStatus.FAILED
    info = client.get_job_info(job_id)
    assert info.driver_exit_code == 3, info
    assert "about to fail" in client.get_job_logs(job_id)
