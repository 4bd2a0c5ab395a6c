"""train.backend: ray against a real Ray head node on loopback and a real MLflow server: the
run is the suite's, the job logs into it, its end is the step's, and a cancelled step leaves
nothing running on the cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, CliResult, assert_one_line_error, clean_env, run_cli

pytest_plugins = ["tests.ray_services"]

TOKEN = "tracking-token-that-must-not-reach-the-cluster"


def mlflow_client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(uri)


def job_client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def configure(project: Path, address: str, **ray: Any) -> None:
    """mlops.yaml with train.backend: ray, keeping the project's other sections."""
    import yaml

    path = project / "mlops.yaml"
    document = yaml.safe_load(path.read_text()) if path.exists() else {"version": 1}
    document.setdefault("train", {})
    document["train"]["backend"] = "ray"
    document["train"]["ray"] = {"address": address, "start_timeout_seconds": 60, **ray}
    path.write_text(json.dumps(document))


def ray_env(home: Path, tracking_uri: str, **extra: str) -> dict[str, str]:
    return clean_env(
        home,
        MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_EXPERIMENT_NAME=f"ray-{uuid.uuid4().hex[:8]}",
        MLFLOW_TRACKING_TOKEN=TOKEN,
        **extra,
    )


def train(project: Path, env: dict[str, str], *args: str) -> CliResult:
    return run_cli(["train", *args], project, env, timeout=600)


def runs_of(tracking_uri: str, experiment: str) -> list[Any]:
    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def test_the_iris_example_trains_on_ray_and_the_gate_and_promotion_follow(
    example: Path, tmp_path: Path, mlflow_server: str, ray_cluster: Any
) -> None:
    env = ray_env(tmp_path, mlflow_server)
    assert run_cli(["dvc-pull"], example, env).returncode == 0
    configure(example, ray_cluster.address)
    model = f"iris-ray-{uuid.uuid4().hex[:6]}"

    trained = train(example, env, "--command", "python train.py --C 0.5")
    assert trained.returncode == 0, trained.output
    outputs = trained.outputs()
    job_id = outputs["ray-job-id"]
    assert job_id == f"mlops-{outputs['run-id']}"
    assert outputs["model-uri"].startswith("models:/")
    assert "accuracy" in json.loads(outputs["metrics"])
    # The job's own log came through the step's log.
    assert f"Running entrypoint for job {job_id}" in trained.output
    run = mlflow_client(mlflow_server).get_run(outputs["run-id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlops.ray.job_id"] == job_id
    assert run.data.tags["mlops.ray.dashboard_url"] == f"{ray_cluster.address}/#/jobs/{job_id}"
    assert run.data.tags["mlops.train.backend"] == "ray"
    assert run.data.params["C"] == "0.5"
    info = job_client(ray_cluster.address).get_job_info(job_id)
    assert info.status == "SUCCEEDED"
    # The job's environment has where to log, and not the token nobody forwarded.
    job_env = info.runtime_env["env_vars"]
    assert job_env["MLFLOW_RUN_ID"] == outputs["run-id"]
    assert "MLFLOW_TRACKING_TOKEN" not in job_env
    assert TOKEN not in json.dumps(info.runtime_env)
    assert {".git", ".dvc/cache"} <= set(info.runtime_env["excludes"])

    # The MLflow Project entry point on the cluster, then the gate and promote on that run.
    project = train(example, env, "--project-uri", ".", "--parameters", "C=1.0")
    assert project.returncode == 0, project.output
    candidate = project.outputs()
    assert candidate["ray-job-id"] == f"mlops-{candidate['run-id']}"
    gate = run_cli(
        ["evaluate", "--candidate", candidate["run-id"], "--model-name", model],
        example,
        env,
        timeout=300,
    )
    assert gate.returncode == 0, gate.output
    promoted = run_cli(
        ["promote", "--candidate", candidate["run-id"], "--model-name", model],
        example,
        env,
        timeout=300,
    )
    assert promoted.returncode == 0, promoted.output
    holder = mlflow_client(mlflow_server).get_model_version_by_alias(model, "champion")
    assert holder.run_id == candidate["run-id"]


def test_a_forwarded_secret_reaches_the_job_and_is_masked(
    tmp_path: Path, mlflow_server: str, ray_cluster: Any
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "show.py").write_text(
        f"import os\nprint('token seen:', os.environ.get('MLFLOW_TRACKING_TOKEN') == {TOKEN!r})\n"
    )
    configure(project, ray_cluster.address, forward_secrets=["MLFLOW_TRACKING_TOKEN"])
    env = ray_env(tmp_path, mlflow_server, GITHUB_ACTIONS="true")
    done = train(project, env, "--command", "python show.py")
    assert done.returncode == 0, done.output
    assert "token seen: True" in done.output
    assert f"::add-mask::{TOKEN}" in done.stdout


def test_a_failing_job_fails_the_step_with_its_exit_status(
    tmp_path: Path, mlflow_server: str, ray_cluster: Any
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    configure(project, ray_cluster.address)
    env = ray_env(tmp_path, mlflow_server)
    done = train(project, env, "--command", "echo about to fail; exit 3")
    assert done.returncode == 3, done.output
    assert_one_line_error(done, "exit status 3", "FAILED")
    assert "about to fail" in done.output
    (run,) = runs_of(mlflow_server, env["MLFLOW_EXPERIMENT_NAME"])
    assert run.info.status == "FAILED"
    info = job_client(ray_cluster.address).get_job_info(run.data.tags["mlops.ray.job_id"])
    assert (info.status, info.driver_exit_code) == ("FAILED", 3)


def training_that_runs(
    home: Path, env: dict[str, str], address: str
) -> tuple[str, subprocess.Popen[str]]:
    """`mlops-actions train` of a job that sleeps under a name of its own, once it runs on
    the cluster: (that name, the step's process)."""
    project = home / "project"
    project.mkdir()
    configure(project, address)
    marker = f"mlops-ray-job-{uuid.uuid4().hex[:8]}"
    process = subprocess.Popen(
        [str(BIN / "mlops-actions"), "train", "--command", f"exec -a {marker} sleep 300"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _running(marker):
        time.sleep(0.5)
    assert _running(marker), "the job never started"
    return marker, process


def test_a_cancelled_step_stops_the_job_and_kills_the_run(
    tmp_path: Path, mlflow_server: str, ray_cluster: Any
) -> None:
    env = ray_env(tmp_path, mlflow_server)
    marker, process = training_that_runs(tmp_path, env, ray_cluster.address)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stdout + stderr
    (run,) = runs_of(mlflow_server, env["MLFLOW_EXPERIMENT_NAME"])
    assert run.info.status == "KILLED"
    job_id = run.data.tags["mlops.ray.job_id"]
    assert job_client(ray_cluster.address).get_job_status(job_id).value == "STOPPED"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _running(marker):
        time.sleep(0.5)
    assert not _running(marker), "the training still runs on the cluster"


def _running(marker: str) -> bool:
    """The training's own process (`exec -a` named it), wherever Ray started it."""
    found = subprocess.run(["pgrep", "-f", f"^{marker} 300$"], capture_output=True, check=False)
    return found.returncode == 0


def test_an_unreachable_cluster_or_a_job_that_cannot_start_is_a_named_error(
    tmp_path: Path, mlflow_server: str, ray_cluster: Any
) -> None:
    from tests.conftest import free_port

    project = tmp_path / "project"
    project.mkdir()
    env = ray_env(tmp_path, mlflow_server)
    nowhere = f"http://127.0.0.1:{free_port()}"
    configure(project, nowhere)
    unreachable = train(project, env, "--command", "true")
    assert unreachable.returncode == 3, unreachable.output
    assert_one_line_error(unreachable, nowhere, "train.ray.address")
    assert runs_of(mlflow_server, env["MLFLOW_EXPERIMENT_NAME"]) == [], "no run for nothing"

    configure(project, ray_cluster.address, start_timeout_seconds=5, entrypoint={"num_gpus": 1})
    started = time.monotonic()
    pending = train(project, env, "--command", "true")
    assert pending.returncode == 2, pending.output
    assert_one_line_error(pending, "PENDING", "train.ray.entrypoint.num_gpus: 1")
    assert time.monotonic() - started < 60
    (run,) = runs_of(mlflow_server, env["MLFLOW_EXPERIMENT_NAME"])
    assert run.info.status == "FAILED", "never left RUNNING"

    # Requirements that cannot install: Ray fails the set-up, or it outlasts the start timeout.
    configure(
        project,
        ray_cluster.address,
        pip=["mlops-actions-no-such-package==0.0.0"],
        start_timeout_seconds=10,
    )
    refused = train(project, env, "--command", "true")
    assert refused.returncode == 2, refused.output
    assert_one_line_error(refused, "train.ray.pip")
    statuses = [r.info.status for r in runs_of(mlflow_server, env["MLFLOW_EXPERIMENT_NAME"])]
    assert statuses == ["FAILED", "FAILED"], "never left RUNNING"

    configure(project, ray_cluster.address)
    local = train(
        project, {**env, "MLFLOW_TRACKING_URI": "sqlite:///local.db"}, "--command", "true"
    )
    assert local.returncode == 2
    assert_one_line_error(local, "sqlite:///local.db", "tracking server the cluster")


@pytest.mark.parametrize("address", ["ray://head:10001", "head:8265"])
def test_an_address_that_is_not_the_job_server_is_refused_before_anything(
    tmp_path: Path, address: str
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    configure(project, address)
    done = train(
        project, clean_env(tmp_path, MLFLOW_TRACKING_URI="http://127.0.0.1:9"), "--command", "true"
    )
    assert done.returncode == 2, done.output
    assert_one_line_error(done, "train.ray.address")


def test_a_job_whose_runner_died_is_stopped_by_id_and_its_run_closed(
    tmp_path: Path, mlflow_server: str, ray_cluster: Any
) -> None:
    env = ray_env(tmp_path, mlflow_server)
    marker, process = training_that_runs(tmp_path, env, ray_cluster.address)
    project = tmp_path / "project"
    process.kill()  # the runner dies outright: no signal handler, no clean-up
    process.communicate(timeout=30)
    (run,) = runs_of(mlflow_server, env["MLFLOW_EXPERIMENT_NAME"])
    assert run.info.status == "RUNNING"
    job_id = run.data.tags["mlops.ray.job_id"]
    assert _running(marker), "the job outlives its runner"

    stopped = train(project, env, "--stop-job", job_id)
    assert stopped.returncode == 0, stopped.output
    assert stopped.outputs()["status"] == "STOPPED"
    assert stopped.outputs()["run-id"] == run.info.run_id
    assert mlflow_client(mlflow_server).get_run(run.info.run_id).info.status == "KILLED"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _running(marker):
        time.sleep(0.5)
    assert not _running(marker)

    unknown = train(project, env, "--stop-job", "mlops-no-such-job")
    assert unknown.returncode == 2
    assert_one_line_error(unknown, "mlops-no-such-job", "ray-job-id")


def test_the_cluster_pulls_the_data_itself_and_checks_it(
    example: Path, tmp_path: Path, mlflow_server: str, ray_cluster: Any
) -> None:
    """pull_data: the DVC outputs stay on the runner (here: a corrupted copy, which would
    fail the training if it were uploaded), the job pulls them from the remote and checks
    them against the checkout's DVC files."""
    env = ray_env(tmp_path, mlflow_server)
    assert run_cli(["dvc-pull"], example, env).returncode == 0
    data = example / "data" / "iris.csv"
    data.write_text("not,the,data\n")
    configure(example, ray_cluster.address, pull_data=True)
    done = train(example, env, "--command", "python train.py")
    assert done.returncode == 0, done.output
    assert json.loads(done.outputs()["metrics"])["accuracy"] > 0.8
    assert data.read_text() == "not,the,data\n", "the runner's copy is not touched"
    pulled = done.output.split("Running entrypoint", 1)[1]
    assert "1 file added" in pulled, "the job pulled the data"


def test_the_local_pipeline_runs_its_training_on_ray(
    example: Path, tmp_path: Path, mlflow_server: str, ray_cluster: Any
) -> None:
    """`mlops-actions run` with train.backend: ray from the environment alone (the template's
    repository variables do the same): pull, train on the cluster, gate, promote."""
    model = f"iris-ray-run-{uuid.uuid4().hex[:6]}"
    env = ray_env(
        tmp_path,
        mlflow_server,
        RAY_ADDRESS=ray_cluster.address,
        MLOPS_TRAIN_BACKEND="ray",
        MLOPS_MODEL_NAME=model,
    )
    done = run_cli(["run"], example, env, timeout=600)
    assert done.returncode == 0, done.output
    assert "Running entrypoint for job mlops-" in done.output
    holder = mlflow_client(mlflow_server).get_model_version_by_alias(model, "champion")
    run = mlflow_client(mlflow_server).get_run(holder.run_id)
    assert run.data.tags["mlops.ray.job_id"] == f"mlops-{holder.run_id}"
