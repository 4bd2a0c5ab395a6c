"""The CLI as a user meets it: the example pipeline, config commands, errors."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import assert_one_line_error, clean_env, run_cli


def test_run_executes_the_example_pipeline_offline(example: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    result = run_cli(["run"], example, clean_env(tmp_path))
    assert result.returncode == 0, result.output
    for stage in ("1/4: dvc-pull", "2/4: train", "3/4: evaluate", "4/4: promote to @champion"):
        assert f"stage {stage}" in result.stderr
    assert (example / "data" / "iris.csv").is_file()
    client = MlflowClient(f"sqlite:///{example / 'mlflow.db'}")
    outputs = result.outputs()
    run = client.get_run(outputs["run-id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlops.data.fingerprint"] == outputs["data-fingerprint"]
    assert client.get_experiment(run.info.experiment_id).name == "iris"
    # The gate ran on the new run: no champion yet, so the thresholds decided; then promote.
    assert outputs["verdict"] == "passed"
    assert run.data.tags["mlops.gate.verdict"] == "passed"
    decision = (example / "mlops-gate" / "iris-classifier.decision.json").read_text()
    assert '"first_model": true' in decision
    assert "not running in a GitHub workflow" in result.stderr
    assert outputs["version"] == "1"
    assert str(client.get_registered_model("iris-classifier").aliases["champion"]) == "1"

    # Run again: now the gate compares with the champion, and promote replaces it.
    again = run_cli(["run"], example, clean_env(tmp_path))
    assert again.returncode == 0, again.output
    assert again.outputs()["champion-version"] == "1"
    assert again.outputs()["previous-version"] == "1"
    assert str(client.get_registered_model("iris-classifier").aliases["champion"]) == "2"


def test_config_validate_and_show(example: Path, tmp_path: Path) -> None:
    env = clean_env(tmp_path, MLFLOW_EXPERIMENT_NAME="from-env")
    valid = run_cli(["config", "validate"], example, env)
    assert valid.returncode == 0
    assert "mlops.yaml: valid" in valid.stdout
    shown = run_cli(["config", "show", "--remote", "bundled"], example, env)
    assert shown.returncode == 0
    assert 'experiment: "from-env"  # environment MLFLOW_EXPERIMENT_NAME' in shown.stdout
    assert 'remote: "bundled"  # input remote' in shown.stdout
    assert 'command: "python train.py --C 1.0 --max-iter 200"  # file mlops.yaml' in shown.stdout


def test_unknown_key_is_one_error_line_with_the_file_line(tmp_path: Path) -> None:
    (tmp_path / "mlops.yaml").write_text("version: 1\ntrain:\n  comand: python train.py\n")
    result = run_cli(["train"], tmp_path, clean_env(tmp_path, GITHUB_ACTIONS="true"))
    assert result.returncode == 2
    line = assert_one_line_error(result, "$.train.comand", "did you mean 'command'")
    assert line.startswith("::error file=mlops.yaml,line=3,title=configuration error::")


def test_wrong_type_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "mlops.yaml").write_text("data:\n  jobs: lots\n")
    result = run_cli(["dvc-pull"], tmp_path, clean_env(tmp_path))
    assert result.returncode == 2
    assert_one_line_error(result, "$.data.jobs", "expected integer")


def test_wrong_input_type_names_the_input(tmp_path: Path) -> None:
    result = run_cli(["dvc-pull"], tmp_path, clean_env(tmp_path, INPUT_JOBS="many"))
    assert result.returncode == 2
    assert_one_line_error(result, "input 'jobs'")


def test_named_config_file_must_exist(tmp_path: Path) -> None:
    result = run_cli(["config", "validate", "--config", "nope.yaml"], tmp_path, clean_env(tmp_path))
    assert result.returncode == 2
    assert_one_line_error(result, "nope.yaml does not exist")


def test_version(tmp_path: Path) -> None:
    from mlops_actions import __version__

    result = run_cli(["--version"], tmp_path, clean_env(tmp_path))
    assert result.stdout.strip() == f"mlops-actions {__version__}"


def test_run_outside_a_dvc_repository_skips_the_pull_and_honours_train_flags(
    tmp_path: Path,
) -> None:
    from mlflow import MlflowClient

    project = tmp_path / "plain"
    project.mkdir()
    result = run_cli(
        ["run", "--command", "echo trained", "--experiment", "plain"], project, clean_env(tmp_path)
    )
    assert result.returncode == 0, result.output
    assert "dvc-pull skipped (not a DVC repository)" in result.stderr
    run = MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(result.outputs()["run-id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.source.name"] == "echo trained"
