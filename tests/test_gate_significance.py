"""The gate with a confidence, end to end through `mlops-actions evaluate` against a real MLflow
server: both models evaluated on the same rows, a paired bootstrap of the difference, and a
verdict that tells a real improvement from noise."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import CliResult, assert_one_line_error, clean_env, run_cli
from tests.test_evaluate import register, unique

ROWS = 400


def make_dataset(directory: Path) -> Path:
    """A binary problem with labels 'no' / 'yes' (MLflow scores the larger, 'yes') and a
    column no model uses."""
    import pandas as pd

    rng = np.random.default_rng(11)
    x = rng.normal(size=(ROWS, 3))
    signal = x @ np.array([1.5, -1.0, 0.5]) + rng.normal(0, 1.0, ROWS)
    frame = pd.DataFrame(x, columns=["height", "width", "depth"])
    frame["note"] = "unused"
    frame["label"] = np.where(signal > 0, "yes", "no")
    path = directory / "boxes.csv"
    frame.to_csv(path, index=False)
    return path


def fitted(data: Path) -> Any:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    frame = pd.read_csv(data)
    return LogisticRegression().fit(frame[["height", "width", "depth"]], frame["label"])


def accuracy(model: Any, data: Path) -> float:
    import pandas as pd

    frame = pd.read_csv(data)
    return float((model.predict(frame[["height", "width", "depth"]]) == frame["label"]).mean())


def slightly_worse(best: Any, data: Path) -> Any:
    """A copy of `best` with nudged weights that gets one to four more of the rows wrong: a
    difference that a plain comparison calls an improvement and that is noise."""
    best_accuracy = accuracy(best, data)
    for step in range(1, 200):
        nudged = copy.deepcopy(best)
        nudged.coef_ = best.coef_ + np.array([[0.0, 0.02 * step, -0.02 * step]])
        if 1 / ROWS <= best_accuracy - accuracy(nudged, data) <= 4 / ROWS:
            return nudged
    raise AssertionError("no nudge made a slightly worse model")


def much_worse(best: Any) -> Any:
    weak = copy.deepcopy(best)
    weak.coef_ = best.coef_ * np.array([[0.0, 0.0, 1.0]])  # only the weakest feature
    return weak


def log_model(model: Any, data: Path, tracking_uri: str, experiment: str) -> tuple[str, str]:
    """(run id, model URI) of a scikit-learn model logged with a signature of its columns."""
    import mlflow
    import mlflow.sklearn
    import pandas as pd

    example = pd.read_csv(data)[["height", "width", "depth"]].head(3)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(
            model, name="model", input_example=example, pip_requirements=["scikit-learn"]
        )
    return run.info.run_id, str(info.model_uri)


BOXES = {"data": "boxes.csv", "targets": "label", "model_type": "classifier"}


def gate(
    cwd: Path,
    tracking_uri: str,
    model: str,
    candidate: str,
    rules: list[Any],
    *extra: str,
    evaluation: dict[str, str] = BOXES,
    **settings: Any,
) -> CliResult:
    """`mlops-actions evaluate` in compare: evaluate mode, reporting to files only."""
    env = clean_env(cwd, MLFLOW_TRACKING_URI=tracking_uri)
    config = {
        "version": 1,
        "model": {"name": model},
        "gate": {
            "compare": "evaluate",
            "evaluation": evaluation,
            "rules": rules,
            "report": {"pr_comment": False, "check_run": False},
            **settings,
        },
    }
    (cwd / "mlops.yaml").write_text(json.dumps(config))
    return run_cli(
        ["evaluate", "--candidate", candidate, "--decision-file", "decision.json", *extra],
        cwd,
        env,
        timeout=300,
    )


def decision_of(cwd: Path) -> dict[str, Any]:
    return json.loads((cwd / "decision.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def boxes(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> dict[str, str]:
    """A champion under @champion and three candidates: the same model (a tie), a slightly
    better one (noise) and a much better one."""
    work = tmp_path_factory.mktemp("significance")
    data = make_dataset(work)
    best = fitted(data)
    experiment, model = unique("boxes"), unique("boxes")
    champion = slightly_worse(best, data)
    champion_run, champion_uri = log_model(champion, data, mlflow_server, experiment)
    register(mlflow_server, model, champion_run, model_uri=champion_uri)
    weak_run, weak_uri = log_model(much_worse(best), data, mlflow_server, experiment)
    weak_model = unique("boxes-weak")
    register(mlflow_server, weak_model, weak_run, model_uri=weak_uri)
    _, best_uri = log_model(best, data, mlflow_server, experiment)
    return {
        "dir": str(work),
        "model": model,
        "weak_model": weak_model,
        "champion": champion_uri,
        "best": best_uri,
        "gap": str(accuracy(best, data) - accuracy(champion, data)),
    }


SUPERIORITY = {"metric": "accuracy_score", "direction": "higher", "min_improvement": 0.0}


def test_a_small_noisy_improvement_is_rejected_with_its_interval(
    boxes: dict[str, str], mlflow_server: str
) -> None:
    cwd = Path(boxes["dir"])
    plain = gate(cwd, mlflow_server, boxes["model"], boxes["best"], [SUPERIORITY])
    assert plain.returncode == 0, plain.output  # without a confidence, noise passes

    rules = [
        {**SUPERIORITY, "confidence": 0.95},
        {"metric": "f1_score", "direction": "higher", "max_regression": 0.05},
    ]
    rejected = gate(cwd, mlflow_server, boxes["model"], boxes["best"], rules, "--seed", "3")
    assert rejected.returncode == 1, rejected.output
    decision = decision_of(cwd)
    rule = decision["rules"][0]
    found = rule["significance"]
    assert found["difference"] == pytest.approx(float(boxes["gap"]))
    assert found["low"] < 0 < found["difference"] <= found["high"]
    assert (found["rows"], found["resamples"], found["seed"]) == (ROWS, 2000, 3)
    assert found["confidence"] == 0.95
    assert found["method"] == "paired bootstrap (multinomial counts)"
    assert 0.05 < found["p_value"] <= 1
    assert found["p_value_method"] == "McNemar exact"
    # The bootstrap's point estimates are MLflow's evaluator's, logged on the runs.
    assert found["candidate"] == pytest.approx(rule["candidate"], abs=1e-12)
    assert found["champion"] == pytest.approx(rule["champion"], abs=1e-12)
    reason = decision["reasons"][0]
    assert reason.startswith("accuracy_score: improvement +")
    assert "95% interval" in reason
    assert f"n={ROWS}" in reason
    assert "too small to tell" in reason
    assert "rows would decide" in reason
    assert "f1_score" not in " ".join(decision["reasons"])  # no confidence: point estimates
    assert decision["rules"][1]["significance"] is None
    summary = (cwd / "mlops-gate").glob("*.report.md")
    report = next(summary).read_text()
    assert "Is the difference real?" in report
    assert "McNemar exact" in report
    assert "paired bootstrap of accuracy_score: 400 rows, 2000 resamples, seed 3" in (
        rejected.stdout
    )

    again = gate(cwd, mlflow_server, boxes["model"], boxes["best"], rules, "--seed", "3")
    assert again.returncode == 1
    assert decision_of(cwd)["rules"][0]["significance"] == found  # seeded: reproducible


def test_a_clear_improvement_passes_at_95_percent(
    boxes: dict[str, str], mlflow_server: str
) -> None:
    cwd = Path(boxes["dir"])
    rules = [
        {**SUPERIORITY, "min_improvement": 0.05},
        {"metric": "log_loss", "direction": "lower", "max_regression": 0.0},
        {"metric": "roc_auc", "direction": "higher", "threshold": 0.8},
    ]
    passed = gate(
        cwd, mlflow_server, boxes["weak_model"], boxes["best"], rules, "--confidence", "0.95"
    )
    assert passed.returncode == 0, passed.output
    decision = decision_of(cwd)
    assert decision["verdict"] == "passed"
    accuracy_rule, log_loss_rule, auc_rule = decision["rules"]
    assert accuracy_rule["significance"]["low"] > 0.05
    assert log_loss_rule["significance"]["high"] < 0  # lower is better: the loss fell
    assert log_loss_rule["significance"]["method"] == "paired bootstrap (Poisson)"
    # A threshold stays on the point estimate; the interval is reported beside it.
    assert auc_rule["checks"][0]["bound"] == "threshold"
    assert auc_rule["significance"]["high"] > 0
    assert auc_rule["significance"]["candidate"] == pytest.approx(auc_rule["candidate"])


def rejected_early(cwd: Path, result: CliResult, *needles: str) -> None:
    assert result.returncode == 2, result.output
    assert_one_line_error(result, *needles)
    assert not (cwd / "decision.json").exists(), "no decision for a gate that could not run"


def test_a_confidence_needs_rows_and_a_metric_the_gate_can_resample(
    tmp_path: Path, mlflow_server: str
) -> None:
    make_dataset(tmp_path)
    candidate = "0" * 32
    unknown = [{"metric": "precision_recall_auc", "direction": "higher", "min_improvement": 0}]
    result = gate(tmp_path, mlflow_server, "m", candidate, unknown, "--confidence", "0.9")
    rejected_early(tmp_path, result, "precision_recall_auc", "accuracy_score", "f1_score")

    regression = [{**SUPERIORITY, "metric": "r2_score", "confidence": 0.95}]
    result = gate(tmp_path, mlflow_server, "m", candidate, regression)
    rejected_early(tmp_path, result, "r2_score", "classifier")

    logged = gate(
        tmp_path,
        mlflow_server,
        "m",
        candidate,
        [SUPERIORITY],
        "--compare",
        "logged",
        "--confidence",
        "0.95",
    )
    rejected_early(tmp_path, logged, "accuracy_score", "compare: logged", "evaluate")

    for bad, where in (("1.5", "gate.confidence"), ("0.3", "gate.confidence")):
        result = gate(tmp_path, mlflow_server, "m", candidate, [SUPERIORITY], "--confidence", bad)
        rejected_early(tmp_path, result, where)

    # confidence: false keeps a rule on point estimates whatever the default says.
    opted_out = [{**SUPERIORITY, "metric": "precision_recall_auc", "confidence": False}]
    result = gate(tmp_path, mlflow_server, "m", candidate, opted_out, "--confidence", "0.9")
    error = assert_one_line_error(result, candidate)  # it got as far as the candidate
    assert "precision_recall_auc" not in error


def test_a_regressor_on_its_own_columns_gets_intervals_equal_to_mlflows_estimates(
    housing: Path, mlflow_server: str
) -> None:
    """A second project: a regressor, each model trained on different columns."""
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from sklearn.linear_model import Ridge

    frame = pd.read_csv(housing / "data" / "housing.csv")
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment(unique("housing"))
    uris, run_ids = [], []
    for dropped in (["age_years", "distance_km"], []):
        features = frame.drop(columns=["price", *dropped])
        with mlflow.start_run() as run:
            info = mlflow.sklearn.log_model(
                Ridge().fit(features, frame["price"]),
                name="model",
                input_example=features.head(3),
                pip_requirements=["scikit-learn"],
            )
        uris.append(str(info.model_uri))
        run_ids.append(run.info.run_id)
    model = unique("housing")
    register(mlflow_server, model, run_ids[0], model_uri=uris[0])
    rules = [
        {"metric": "root_mean_squared_error", "direction": "lower", "min_improvement": 0},
        {"metric": "r2_score", "direction": "higher", "max_regression": 0.0},
        {"metric": "mean_absolute_percentage_error", "direction": "lower", "threshold": 1.0},
    ]
    evaluation = {"data": "data/housing.csv", "targets": "price", "model_type": "regressor"}
    result = gate(
        housing,
        mlflow_server,
        model,
        uris[1],
        rules,
        evaluation=evaluation,
        confidence=0.9,
        resamples=3000,
    )
    assert result.returncode in (0, 1), result.output
    decision = decision_of(housing)
    logged = mlflow.MlflowClient(mlflow_server).get_run(run_ids[1]).data.metrics
    for rule in decision["rules"]:
        found = rule["significance"]
        assert found["method"] == "paired bootstrap (Poisson)"
        assert (found["rows"], found["resamples"], found["confidence"]) == (len(frame), 3000, 0.9)
        assert found["candidate"] == pytest.approx(logged[f"eval_{rule['metric']}"], rel=1e-9)
        assert found["champion"] == pytest.approx(rule["champion"], rel=1e-9)
        assert found["low"] <= found["difference"] <= found["high"]
    rmse, r2, _ = decision["rules"]
    # The verdict follows the intervals: superiority on the error's upper bound, non-inferiority
    # of R² on the regression's upper bound.
    expected = rmse["significance"]["high"] <= 0 and r2["significance"]["low"] >= 0
    assert decision["verdict"] == ("passed" if expected else "rejected"), decision["reasons"]
