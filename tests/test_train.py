"""train against a real MLflow tracking server: tags, statuses, exit codes, signals, projects."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, assert_one_line_error, clean_env, run_cli

GITHUB = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
    "GITHUB_REF_NAME": "main",
    "GITHUB_REPOSITORY": "acme/iris",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_RUN_ID": "4242",
    "GITHUB_RUN_ATTEMPT": "1",
    "GITHUB_ACTOR": "octocat",
    "GITHUB_WORKFLOW": "train",
    "GITHUB_EVENT_NAME": "push",
}


def mlflow_client(uri: str):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.fixture
def pulled_example(example: Path, tmp_path: Path) -> Path:
    assert run_cli(["dvc-pull"], example, clean_env(tmp_path)).returncode == 0
    return example


def test_command_run_is_tagged_finished_and_its_model_loads(
    pulled_example: Path, tmp_path: Path, mlflow_server: str
) -> None:
    env = clean_env(tmp_path, **GITHUB, MLFLOW_TRACKING_URI=mlflow_server)
    result = run_cli(
        ["train", "--experiment", "train-ok", "--tags", "owner=tests"], pulled_example, env
    )
    assert result.returncode == 0, result.output
    out = result.outputs()
    run = mlflow_client(mlflow_server).get_run(out["run-id"])
    assert run.info.status == "FINISHED"
    assert out["status"] == "FINISHED"
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == GITHUB["GITHUB_SHA"]
    assert tags["mlops.git.branch"] == "main"
    assert (
        tags["mlops.github.run_url"] == "https://github.com/acme/iris/actions/runs/4242/attempts/1"
    )
    assert tags["mlops.github.actor"] == "octocat"
    assert tags["owner"] == "tests"
    assert tags["team"] == "example"
    assert len(tags["mlops.data.fingerprint"]) == 64
    assert out["data-fingerprint"] == tags["mlops.data.fingerprint"]
    assert out["run-url"] == (
        f"{mlflow_server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    )
    assert json.loads(out["metrics"]) == run.data.metrics
    assert run.data.metrics["accuracy"] > 0.8
    assert run.data.params["C"] == "1.0"

    import mlflow.pyfunc
    import pandas as pd

    assert out["model-uri"].startswith("models:/m-")
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(out["model-uri"])  # through the server's artifact proxy
    frame = pd.read_csv(pulled_example / "data" / "iris.csv").drop(columns=["species"]).head(3)
    assert list(model.predict(frame)) == [0, 0, 0]


def test_failing_command_marks_the_run_failed_and_keeps_its_exit_status(
    example: Path, tmp_path: Path, mlflow_server: str
) -> None:
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    script = (
        "import mlflow; mlflow.start_run(); mlflow.log_metric('loss', 9.5); raise SystemExit(3)"
    )
    result = run_cli(
        ["train", "--experiment", "train-fail", "--command", f'python -c "{script}"'], example, env
    )
    assert result.returncode == 3
    assert_one_line_error(result, "exit status 3", "FAILED")
    run = mlflow_client(mlflow_server).get_run(result.outputs()["run-id"])
    assert run.info.status == "FAILED"
    assert run.data.metrics == {"loss": 9.5}  # the user's code logged into our run


def test_sigterm_kills_the_training_and_marks_the_run_killed(
    example: Path, tmp_path: Path, mlflow_server: str
) -> None:
    client = mlflow_client(mlflow_server)
    experiment = f"train-cancel-{tmp_path.name}"
    marker = tmp_path / "child.pid"
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    process = subprocess.Popen(
        [
            str(BIN / "mlops-actions"),
            "train",
            "--experiment",
            experiment,
            "--command",
            f"echo $$ > {marker}; sleep 120",
        ],
        cwd=example,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "training never started"
    child = int(marker.read_text())
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stdout + stderr
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]
    assert (
        not Path(f"/proc/{child}").exists()
        or "zombie" in Path(f"/proc/{child}/status").read_text().lower()
    )


def test_mlflow_project_entry_point_with_parameters(
    pulled_example: Path, tmp_path: Path, mlflow_server: str
) -> None:
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    result = run_cli(
        [
            "train",
            "--experiment",
            "train-project",
            "--project-uri",
            ".",
            "--parameters",
            "C=0.25\nmax_iter=300",
        ],
        pulled_example,
        env,
    )
    assert result.returncode == 0, result.output
    run = mlflow_client(mlflow_server).get_run(result.outputs()["run-id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["C"] == "0.25"
    assert run.data.params["max_iter"] == "300"
    assert run.data.tags["mlflow.project.entryPoint"] == "main"
    assert run.data.tags["mlops.train.mode"] == "project"
    assert result.outputs()["model-uri"].startswith("models:/m-")


def test_project_with_unknown_entry_point(
    example: Path, tmp_path: Path, mlflow_server: str
) -> None:
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    result = run_cli(
        ["train", "--experiment", "train-bad-entry", "--project-uri", ".", "--entry-point", "nope"],
        example,
        env,
    )
    assert result.returncode == 2
    assert_one_line_error(result, "entry point 'nope'")
    runs = mlflow_client(mlflow_server).search_runs(
        [mlflow_client(mlflow_server).get_experiment_by_name("train-bad-entry").experiment_id]
    )
    assert [r.info.status for r in runs] == ["FAILED"]  # closed, never left RUNNING


def test_unreachable_tracking_server_names_it(example: Path, tmp_path: Path) -> None:
    from tests.conftest import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    env = clean_env(tmp_path, MLFLOW_HTTP_REQUEST_MAX_RETRIES="1")
    result = run_cli(["train", "--tracking-uri", uri, "--command", "true"], example, env)
    assert result.returncode == 3
    assert_one_line_error(result, uri, "connection refused")


def test_credentials_in_the_tracking_uri_are_never_printed(example: Path, tmp_path: Path) -> None:
    from tests.conftest import free_port

    uri = f"http://user:pa55word-xyz@127.0.0.1:{free_port()}"
    env = clean_env(tmp_path, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    result = run_cli(["train", "--tracking-uri", uri, "--command", "true"], example, env)
    assert result.returncode == 3
    assert "pa55word-xyz" not in result.output


def test_missing_training_command_names_the_input(tmp_path: Path) -> None:
    result = run_cli(["train"], tmp_path, clean_env(tmp_path))
    assert result.returncode == 2
    assert_one_line_error(result, "`command` input", "train.command")


def test_embedded_sqlite_store_by_default(pulled_example: Path, tmp_path: Path) -> None:
    result = run_cli(["train"], pulled_example, clean_env(tmp_path))
    assert result.returncode == 0, result.output
    store = pulled_example / "mlflow.db"
    assert store.is_file()
    run = mlflow_client(f"sqlite:///{store}").get_run(result.outputs()["run-id"])
    assert run.info.status == "FINISHED"
    assert result.outputs()["run-url"] == ""
