"""The composite actions, executed step by step the way the runner does."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.composite import run_action
from tests.conftest import ROOT, S3Server, clean_env

GITHUB = {
    "GITHUB_SHA": "fedcba9876543210fedcba9876543210fedcba98",
    "GITHUB_REF_NAME": "7/merge",
    "GITHUB_HEAD_REF": "feature/better-model",
    "GITHUB_REPOSITORY": "acme/iris",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_RUN_ID": "99",
    "GITHUB_RUN_ATTEMPT": "2",
    "GITHUB_ACTOR": "hubot",
    "GITHUB_EVENT_NAME": "pull_request",
}


def test_dvc_pull_then_train_actions(
    example: Path, tmp_path: Path, mlflow_server: str, s3_server: S3Server
) -> None:
    from mlflow import MlflowClient

    env = clean_env(tmp_path, **GITHUB, MLFLOW_TRACKING_URI=mlflow_server)
    pulled = run_action(ROOT / "actions" / "dvc-pull", {"jobs": "2"}, workspace=example, env=env)
    assert pulled.outcome == "success", pulled.log
    # The suite is already on PATH in this job, so the setup steps find it and do nothing.
    assert pulled.step("plan").outputs["installed"] == "true"
    assert pulled.outputs["files-fetched"] == "1"
    assert int(pulled.outputs["bytes-fetched"]) == (example / "data" / "iris.csv").stat().st_size
    assert len(pulled.outputs["data-fingerprint"]) == 64
    cache_step = next(s for s in pulled.steps if s.id == "dvc-cache")
    assert cache_step.with_["path"] == str(example / ".dvc" / "cache" / "files" / "md5")
    assert cache_step.with_["key"] == f"Linux-mlops-dvc-{pulled.outputs['data-fingerprint']}"
    assert "### 📦 dvc-pull" in pulled.summary

    trained = run_action(
        ROOT / "actions" / "train",
        {
            "experiment": "actions",
            "data-fingerprint": pulled.outputs["data-fingerprint"],
            "run-name": "pr-7",
        },
        workspace=example,
        env=env,
    )
    assert trained.outcome == "success", trained.log
    outputs = trained.outputs
    run = MlflowClient(mlflow_server).get_run(outputs["run-id"])
    assert run.info.status == "FINISHED" == outputs["status"]
    assert run.info.run_name == "pr-7"
    assert run.data.tags["mlops.git.branch"] == "feature/better-model"
    assert run.data.tags["mlops.data.fingerprint"] == pulled.outputs["data-fingerprint"]
    assert run.data.tags["mlops.github.run_url"].endswith("/acme/iris/actions/runs/99/attempts/2")
    assert outputs["model-uri"].startswith("models:/m-")
    assert outputs["run-url"].startswith(mlflow_server)
    assert '"accuracy"' in outputs["metrics"]
    assert "train: finished" in trained.summary
    assert outputs["run-id"] in trained.summary


def test_train_action_failure_sets_outputs_and_fails_the_step(
    example: Path, tmp_path: Path, mlflow_server: str
) -> None:
    from mlflow import MlflowClient

    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    result = run_action(
        ROOT / "actions" / "train",
        {"command": "echo training; exit 7", "experiment": "actions-fail"},
        workspace=example,
        env=env,
    )
    assert result.outcome == "failure"
    step = result.step("train")
    assert step.returncode == 7
    assert result.outputs["status"] == "FAILED"
    assert MlflowClient(mlflow_server).get_run(result.outputs["run-id"]).info.status == "FAILED"
    assert "::error title=command failed::training failed with exit status 7" in step.stdout
    assert "command failed" in result.summary


def test_dvc_pull_action_keeps_s3_credentials_out_of_every_log(
    example: Path, tmp_path: Path, s3_server: S3Server
) -> None:
    """A bad endpoint fails the pull; the secret must appear nowhere but in the mask command."""
    env = clean_env(tmp_path, **s3_server.credentials())
    example.joinpath(".dvc", "config").write_text(
        example.joinpath(".dvc", "config").read_text()
        + "['remote \"s3store\"']\n    url = s3://missing-bucket/x\n"
        + f"    endpointurl = {s3_server.endpoint}\n"
    )
    result = run_action(
        ROOT / "actions" / "dvc-pull", {"remote": "s3store"}, workspace=example, env=env
    )
    assert result.outcome == "failure"
    text = result.log + result.summary + "".join(result.outputs.values())
    assert text.count(s3_server.secret_key) == text.count(f"::add-mask::{s3_server.secret_key}")
    assert "'s3store'" in result.log


IMPORT_EVERY_MODULE = """
import importlib, pkgutil, mlops_actions
for module in pkgutil.walk_packages(mlops_actions.__path__, "mlops_actions."):
    # __main__ runs the CLI; serving runs in the serving image, with its own requirements.
    if not module.name.endswith("__main__") and ".serving" not in module.name:
        importlib.import_module(module.name)
        print(module.name)
import mlops_actions.significance as s, numpy as np
s.compare([0, 1, 1], {"predictions": [0, 1, 0]}, {"predictions": [0, 1, 1]}, ["accuracy_score"])
s.compare([1.0, 2, 3], {"predictions": [1, 2, 2]}, {"predictions": [1, 2, 3.0]}, ["r2_score"])
"""


def machine_without_the_suite(tmp_path: Path) -> tuple[Path, str, dict[str, str], Path]:
    """(the suite's home, a PATH without mlops-actions, the environment, a workspace)."""
    home = tmp_path / "suite-home"
    path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "mlops-actions").exists()
    )
    env = clean_env(tmp_path, MLOPS_ACTIONS_HOME=str(home), PATH=path)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    return home, path, env, workspace


@pytest.mark.timeout(900)
def test_setup_action_installs_once_and_reuses_the_environment(tmp_path: Path) -> None:
    """The root action on a machine without the suite: a real install, then a cache hit."""
    home, path, env, workspace = machine_without_the_suite(tmp_path)
    first = run_action(ROOT, {}, workspace=workspace, env=env)
    assert first.outcome == "success", first.log
    assert first.step("plan").outputs["installed"] == "false"
    cache = next(s for s in first.steps if s.uses.startswith("actions/cache@"))
    assert cache.with_["key"].startswith("mlops-actions-linux-")
    assert cache.with_["path"].startswith(str(home))
    assert first.outputs["cache-hit"] == "false"
    from mlops_actions import __version__

    assert first.outputs["version"] == __version__
    assert first.path_added == [str(home / "bin")]
    assert not (home / "bin" / "python").exists()  # the user's python is not shadowed
    # Every module imports with the runtime lock alone (the tests' venv has more, e.g. numpy
    # came with the full mlflow there, not with mlflow-skinny here).
    (venv,) = home.glob("venv-*")
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c", IMPORT_EVERY_MODULE],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert imported.returncode == 0, imported.stderr
    assert "mlops_actions.significance" in imported.stdout

    # A later job whose cache restored the venv: nothing is installed again.
    second = run_action(ROOT, {}, workspace=workspace, env=env)
    assert second.outputs["cache-hit"] == "true", second.log
    # Within the same job the verb actions find the suite on PATH and skip setup entirely.
    env["PATH"] = f"{home / 'bin'}{os.pathsep}{path}"
    third = run_action(ROOT, {}, workspace=workspace, env=env)
    assert third.step("plan").outputs["installed"] == "true"


@pytest.mark.timeout(900)
def test_setup_action_installs_the_ray_extra_from_its_own_lock(tmp_path: Path) -> None:
    """`extras: ray` installs requirements-ray.lock into a venv with a cache key of its own."""
    home, path, env, workspace = machine_without_the_suite(tmp_path)

    refused = run_action(ROOT, {"extras": "ray, gpu"}, workspace=workspace, env=env)
    assert refused.outcome == "failure"
    assert refused.step("plan").returncode == 2
    assert (
        "::error title=mlops-actions setup::unknown extra 'gpu' in the 'extras' input: "
        "the known extras are ray" in refused.log
    )
    assert not home.exists()

    plain = run_action(ROOT, {"cache": "false"}, workspace=workspace, env=env)
    first = run_action(ROOT, {"extras": "ray"}, workspace=workspace, env=env)
    assert first.outcome == "success", first.log
    assert first.outputs["cache-hit"] == "false"
    key = next(s for s in first.steps if s.uses.startswith("actions/cache@")).with_["key"]
    assert key.startswith("mlops-actions-linux-")
    assert "-ray-" in key
    assert plain.step("plan").outputs["cache-key"] != key  # the extras change the key
    venv = Path(first.step("plan").outputs["venv-path"])
    assert venv.name.startswith("venv-")
    assert "-ray-" in venv.name
    # The suite itself and the Job Submission SDK import in the installed environment.
    imported = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import ray, ray.job_submission, mlops_actions.cli; print(ray.__version__)",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "2.60.0"

    # The same extras, written another way, find the same environment.
    second = run_action(ROOT, {"extras": " ray,ray "}, workspace=workspace, env=env)
    assert second.outputs["cache-hit"] == "true", second.log
    assert second.step("plan").outputs["cache-key"] == key
    # A suite on PATH without the extra does not count as set up for `extras: ray`; with the
    # extra it does.
    (plain_venv,) = (v for v in home.glob("venv-*") if "-ray-" not in v.name)
    launcher = tmp_path / "plain-bin" / "mlops-actions"
    launcher.parent.mkdir()
    launcher.write_text(
        home.joinpath("bin", "mlops-actions").read_text().replace(str(venv), str(plain_venv))
    )
    launcher.chmod(0o755)
    env["PATH"] = f"{launcher.parent}{os.pathsep}{path}"
    assert (
        run_action(ROOT, {}, workspace=workspace, env=env).step("plan").outputs["installed"]
        == "true"
    )
    assert (
        run_action(ROOT, {"extras": "ray"}, workspace=workspace, env=env)
        .step("plan")
        .outputs["installed"]
        == "false"
    )
    env["PATH"] = f"{home / 'bin'}{os.pathsep}{path}"
    third = run_action(ROOT, {"extras": "ray"}, workspace=workspace, env=env)
    assert third.step("plan").outputs["installed"] == "true"


def test_setup_rejects_a_python_that_is_too_old_or_missing(tmp_path: Path) -> None:
    env = clean_env(tmp_path, MLOPS_ACTIONS_HOME=str(tmp_path / "h"), PATH="/usr/bin:/bin")
    result = run_action(ROOT, {"python": "python-does-not-exist"}, workspace=tmp_path, env=env)
    assert result.outcome == "failure"
    assert "Python interpreter 'python-does-not-exist' not found" in result.log
