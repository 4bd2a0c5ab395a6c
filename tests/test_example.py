"""The example project as a new user first runs it: its training prints no warnings of MLflow's."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import clean_env, run_cli


def test_example_training_logs_its_model_without_an_integer_column_warning(
    example: Path, tmp_path: Path
) -> None:
    import mlflow

    env = clean_env(tmp_path)
    pulled = run_cli(["dvc-pull"], example, env)
    assert pulled.returncode == 0, pulled.output
    trained = run_cli(["train"], example, env)
    assert trained.returncode == 0, trained.output
    # MLflow's hint when it infers an integer column from the predictions (the class id).
    assert "integer column" not in trained.stderr, trained.stderr
    assert "UserWarning" not in trained.stderr, trained.stderr
    mlflow.set_tracking_uri(f"sqlite:///{example / 'mlflow.db'}")
    signature = mlflow.models.get_model_info(trained.outputs()["model-uri"]).signature
    assert [t.name for t in signature.inputs.input_types()] == ["double"] * 4
    assert [t.name for t in signature.outputs.input_types()] == ["long"]
