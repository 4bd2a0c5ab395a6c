"""What the Ray backend submits and how it reads a job's end (ray_jobs.py: pure, no cluster)."""

from __future__ import annotations

import shlex

import pytest

from mlops_actions import ray_jobs
from mlops_actions.errors import ConfigError

TOKEN = "s3cr3t-token-value"


def settings(**ray: object) -> ray_jobs.RaySettings:
    return ray_jobs.RaySettings.from_config({"address": "http://head:8265", **ray})


def test_the_job_logs_into_our_run_and_gets_no_secret_it_was_not_given() -> None:
    environ = {"MLFLOW_TRACKING_TOKEN": TOKEN, "AWS_SECRET_ACCESS_KEY": "aws", "HOME": "/root"}
    coordinates = {
        "tracking_uri": "https://alice:pa55@mlflow.example.com",
        "registry_uri": "",
        "experiment": "iris",
        "experiment_id": "7",
        "run_id": "abc",
        "environ": environ,
    }
    env = ray_jobs.job_environment(settings(), **coordinates)
    assert env["MLFLOW_RUN_ID"] == "abc"
    assert env["MLFLOW_EXPERIMENT_ID"] == "7"
    assert env["MLFLOW_TRACKING_URI"] == "https://mlflow.example.com"  # credentials taken out
    assert TOKEN not in str(env)
    assert "aws" not in env.values()
    assert "HOME" not in env

    forwarded = settings(forward_secrets=["MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI"])
    env = ray_jobs.job_environment(forwarded, **coordinates)
    assert env["MLFLOW_TRACKING_TOKEN"] == TOKEN
    assert env["MLFLOW_TRACKING_URI"] == "https://alice:pa55@mlflow.example.com"

    missing = settings(forward_secrets=["WANDB_API_KEY"])
    with pytest.raises(ConfigError, match="forward_secrets names WANDB_API_KEY"):
        ray_jobs.job_environment(missing, **coordinates)


def test_the_submission_names_the_run_and_asks_for_what_was_configured() -> None:
    chosen = settings(
        excludes=["data/raw"],
        pip=["scikit-learn==1.5.0"],
        entrypoint={"num_cpus": 1, "num_gpus": 0.5, "memory": 2**30, "resources": {"tpu": 1}},
        job_id_prefix="iris-",
    )
    command = ray_jobs.entrypoint("python train.py --C 'a, b'", chosen)
    arguments = ray_jobs.submission(
        chosen,
        command=command,
        working_dir="/checkout",
        env_vars={"MLFLOW_RUN_ID": "abc"},
        run_id="abc",
        metadata={"workflow_run": "https://github.com/o/r/actions/runs/1"},
    )
    assert arguments["submission_id"] == "iris-abc"
    assert arguments["entrypoint_num_cpus"] == 1
    assert arguments["entrypoint_num_gpus"] == 0.5
    assert arguments["entrypoint_memory"] == 2**30
    assert arguments["entrypoint_resources"] == {"tpu": 1}
    runtime_env = arguments["runtime_env"]
    assert runtime_env["working_dir"] == "/checkout"
    assert {".git", ".dvc/cache", "data/raw"} <= set(runtime_env["excludes"])
    assert runtime_env["pip"] == ["scikit-learn==1.5.0"]
    assert arguments["metadata"]["mlflow_run_id"] == "abc"
    # The command reaches bash intact, commas and quotes included.
    assert shlex.split(command) == ["bash", "-c", "python train.py --C 'a, b'"]

    bare = ray_jobs.submission(settings(), command="x", working_dir="/w", env_vars={}, run_id="r")
    assert "pip" not in bare["runtime_env"]  # the cluster's own environment
    assert not any(key.startswith("entrypoint_") for key in bare)


def test_the_cluster_pulls_the_data_and_the_job_has_its_own_time_limit() -> None:
    chosen = settings(pull_data=True, timeout_seconds=3600)
    command = ray_jobs.entrypoint("python train.py", chosen, ["data/iris.csv.dvc"])
    words = shlex.split(command)
    assert words[:5] == ["timeout", "--signal=TERM", "--kill-after=30", "3600", "bash"]
    script = words[-1]
    assert script.startswith("{ [ -d .git ] || dvc config --local core.no_scm true; } && ")
    assert "dvc pull data/iris.csv.dvc && { dvc status --quiet data/iris.csv.dvc" in script
    assert script.endswith("exit 1; }; } && python train.py")


@pytest.mark.parametrize(
    ("status", "driver_exit_code", "expected"),
    [("SUCCEEDED", 0, 0), ("FAILED", 3, 3), ("FAILED", None, 1), ("STOPPED", None, 143)],
)
def test_the_steps_exit_status_is_the_jobs(
    status: str, driver_exit_code: int | None, expected: int
) -> None:
    assert ray_jobs.exit_status(status, driver_exit_code) == expected


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"train\.ray\.address is not set"):
        ray_jobs.RaySettings.from_config({})
    for address in ("ray://head:10001", "head:8265"):
        with pytest.raises(ConfigError, match="job server's HTTP address"):
            ray_jobs.job_server_url(address)
    assert ray_jobs.job_server_url("http://127.0.0.1:8265/") == "http://127.0.0.1:8265"
    proxied = settings(headers={"Authorization": "RAY_PROXY_AUTH"})
    with pytest.raises(ConfigError, match=r"train\.ray\.headers\.Authorization: .*RAY_PROXY_AUTH"):
        ray_jobs.headers(proxied, {})
    assert ray_jobs.headers(proxied, {"RAY_PROXY_AUTH": "Bearer x"}) == {
        "Authorization": "Bearer x"
    }
    gpu = settings(entrypoint={"num_gpus": 1})
    assert ray_jobs.requested_resources(gpu) == "train.ray.entrypoint.num_gpus: 1"
    assert ray_jobs.dashboard_url("http://u:p@head:8265/", "mlops-abc") == (
        "http://head:8265/#/jobs/mlops-abc"
    )
