"""The evaluate gate against a real MLflow server with a registered champion, in both comparison
modes, reporting to a local stand-in for GitHub's API."""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.composite import run_action
from tests.conftest import (
    GITHUB_TEST_TOKEN,
    ROOT,
    CliResult,
    assert_one_line_error,
    clean_env,
    free_port,
    run_cli,
)
from tests.github_fake import FakeGitHub

HEAD_SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = GITHUB_TEST_TOKEN
RULES = [
    {"metric": "accuracy", "direction": "higher", "threshold": 0.85, "min_improvement": 0.0},
    {"metric": "latency_ms", "direction": "lower", "max_regression": 5},
]


T = TypeVar("T")


def client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def log_run(tracking_uri: str, experiment: str, metrics: dict[str, float]) -> str:
    mlflow_client = client(tracking_uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else mlflow_client.create_experiment(experiment)
    run = mlflow_client.create_run(experiment_id)
    for key, value in metrics.items():
        mlflow_client.log_metric(run.info.run_id, key, value)
    mlflow_client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def register(
    tracking_uri: str, name: str, run_id: str, alias: str = "champion", model_uri: str = ""
) -> str:
    """A registry version of a run (a metrics-only stand-in) or of a real logged model."""
    import mlflow

    mlflow_client = client(tracking_uri)
    if model_uri:
        mlflow.set_tracking_uri(tracking_uri)
        version = mlflow.register_model(model_uri, name)
    else:
        with contextlib.suppress(Exception):
            mlflow_client.create_registered_model(name)
        version = mlflow_client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    if alias:
        mlflow_client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def write_config(directory: Path, model: str, **gate: Any) -> None:
    document = {"version": 1, "model": {"name": model}, "gate": {"rules": RULES, **gate}}
    (directory / "mlops.yaml").write_text(json.dumps(document))


def runner_env(
    home: Path, tracking_uri: str, github: FakeGitHub | None, **extra: str
) -> dict[str, str]:
    """The variables a runner sets for a pull_request job, with the API on loopback."""
    event = home / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7, "head": {"sha": HEAD_SHA}}}))
    for name in ("output", "summary"):
        (home / name).write_text("")
    env = clean_env(
        home,
        GITHUB_ACTIONS="true",
        GITHUB_OUTPUT=str(home / "output"),
        GITHUB_STEP_SUMMARY=str(home / "summary"),
        GITHUB_REPOSITORY="acme/iris",
        GITHUB_SHA="fedcba9876543210fedcba9876543210fedcba98",
        GITHUB_EVENT_NAME="pull_request",
        GITHUB_EVENT_PATH=str(event),
        GITHUB_WORKFLOW="pull request",
        GITHUB_RUN_ID="99",
        GITHUB_SERVER_URL="https://github.com",
        MLFLOW_TRACKING_URI=tracking_uri,
        RUNNER_TEMP=str(home / "runner-temp"),
    )
    if github is not None:
        env.update(GITHUB_API_URL=github.url, GITHUB_TOKEN=TOKEN)
    env.update(extra)
    return env


def evaluate(cwd: Path, env: dict[str, str], *args: str) -> CliResult:
    return run_cli(["evaluate", *args], cwd, env, timeout=300)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------------------- logged metrics


def test_logged_mode_passes_an_improvement_and_rejects_a_regression(
    tmp_path: Path, mlflow_server: str, github: FakeGitHub
) -> None:
    model, experiment = unique("gate-logged"), unique("exp")
    champion_run = log_run(mlflow_server, experiment, {"accuracy": 0.90, "latency_ms": 100.0})
    version = register(mlflow_server, model, champion_run)
    # A newer version that is not the champion must not be what the gate compares with.
    register(mlflow_server, model, log_run(mlflow_server, experiment, {"accuracy": 0.99}), "")
    write_config(tmp_path, model)

    better = log_run(mlflow_server, experiment, {"accuracy": 0.92, "latency_ms": 104.0})
    env = runner_env(tmp_path, mlflow_server, github)
    passed = evaluate(tmp_path, env, "--candidate", better)
    assert passed.returncode == 0, passed.output
    outputs = passed.outputs()
    assert outputs["passed"] == "true"
    assert outputs["verdict"] == "passed"
    assert outputs["champion-version"] == version
    assert outputs["champion-model-uri"] == f"models:/{model}/{version}"
    decision = json.loads(Path(outputs["decision-file"]).read_text())
    assert decision["model"] == model
    assert decision["alias"] == "champion"
    assert decision["champion"]["run_id"] == champion_run
    accuracy, latency = decision["rules"]
    assert accuracy["candidate"] == 0.92
    assert accuracy["champion"] == 0.90
    assert accuracy["delta"] == pytest.approx(0.02)
    assert latency["improvement"] == pytest.approx(-4.0)
    assert latency["passed"] is True
    assert Path(outputs["decision-file"]).parent == tmp_path / "runner-temp" / "mlops-gate"
    summary = (tmp_path / "summary").read_text()
    assert summary.startswith(f"### ✅ Gate passed: `{model}`")
    assert f"against the champion [`{model}` v{version}]" in summary
    assert f"{mlflow_server}/#/experiments/" in summary  # links to both runs
    assert f'  x-axis ["v{version}", "candidate"]' in summary  # champions only, not v2
    assert "::notice title=gate passed::" in passed.stdout
    recorded = client(mlflow_server).get_run(better)
    assert recorded.data.tags["mlops.gate.verdict"] == "passed"
    assert recorded.data.tags["mlops.gate.champion_version"] == version
    assert recorded.data.tags["mlops.gate.model"] == model  # the model whose alias was read
    assert recorded.data.tags["mlops.gate.alias"] == "champion"

    worse = log_run(mlflow_server, experiment, {"accuracy": 0.95, "latency_ms": 106.0})
    rejected = evaluate(tmp_path, runner_env(tmp_path, mlflow_server, github), "--candidate", worse)
    assert rejected.returncode == 1, rejected.output
    assert rejected.outputs()["passed"] == "false"
    assert "::error title=gate::" in rejected.stdout
    assert "latency_ms: regression 6 > 5" in rejected.stdout
    decision = json.loads(Path(rejected.outputs()["decision-file"]).read_text())
    assert decision["verdict"] == "rejected"
    assert [rule["passed"] for rule in decision["rules"]] == [True, False]
    artifacts = client(mlflow_server).list_artifacts(worse, "mlops-gate")
    assert sorted(a.path for a in artifacts) == ["mlops-gate/decision.json", "mlops-gate/report.md"]
    assert [c.body["conclusion"] for c in github.calls("POST", "check-runs")] == [
        "success",
        "failure",
    ]


def test_first_model_policy_and_advisory_mode(
    tmp_path: Path, mlflow_server: str, github: FakeGitHub
) -> None:
    model, experiment = unique("gate-first"), unique("exp")
    candidate = log_run(mlflow_server, experiment, {"accuracy": 0.9, "latency_ms": 50.0})
    write_config(tmp_path, model)
    env = runner_env(tmp_path, mlflow_server, github)
    first = evaluate(tmp_path, env, "--candidate", candidate)
    assert first.returncode == 0, first.output
    assert first.outputs()["champion-version"] == ""
    assert "with no champion yet" in (tmp_path / "summary").read_text()

    refused = evaluate(tmp_path, env, "--candidate", candidate, "--first-model", "fail")
    assert refused.returncode == 1, refused.output
    assert "no champion yet and gate.first_model is 'fail'" in refused.stdout

    advisory = evaluate(
        tmp_path, env, "--candidate", candidate, "--first-model", "fail", "--advisory", "true"
    )
    assert advisory.returncode == 0, advisory.output
    assert advisory.outputs()["passed"] == "false"
    assert "::warning title=gate::" in advisory.stdout
    assert github.check_runs[-1]["conclusion"] == "neutral"
    assert github.check_runs[-1]["output"]["title"].startswith("advisory, would be rejected")


# ----------------------------------------------------------------------------- GitHub


def test_one_comment_updated_in_place_and_a_check_run(
    tmp_path: Path, mlflow_server: str, github: FakeGitHub
) -> None:
    model, experiment = unique("gate-comment"), unique("exp")
    register(mlflow_server, model, log_run(mlflow_server, experiment, {"accuracy": 0.9}))
    write_config(tmp_path, model, rules=[RULES[0]])
    env = runner_env(tmp_path, mlflow_server, github)
    # Another workflow's comment on the same PR stays untouched.
    github.comments[1] = github._comment("acme/iris", 7, "<!-- other tool -->\nhello")

    first = evaluate(
        tmp_path, env, "--candidate", log_run(mlflow_server, experiment, {"accuracy": 0.8})
    )
    assert first.returncode == 1, first.output
    second = evaluate(
        tmp_path, env, "--candidate", log_run(mlflow_server, experiment, {"accuracy": 0.95})
    )
    assert second.returncode == 0, second.output

    created = github.calls("POST", r"/repos/acme/iris/issues/7/comments$")
    updated = github.calls("PATCH", r"/repos/acme/iris/issues/comments/\d+$")
    assert len(created) == 1
    assert len(updated) == 1
    ours = [c for c in github.comments.values() if "mlops-actions:gate" in c["body"]]
    assert len(ours) == 1, "one comment per workflow and model"
    assert updated[0].path.endswith(f"/comments/{ours[0]['id']}")
    assert f'workflow="pull request" model="{model}"' in ours[0]["body"]
    assert "### ✅ Gate passed" in ours[0]["body"]  # the latest decision
    assert github.comments[1]["body"] == "<!-- other tool -->\nhello"
    assert second.outputs()["comment-url"] == ours[0]["html_url"]

    runs = github.check_runs
    assert [r["conclusion"] for r in runs] == ["failure", "success"]
    assert all(r["head_sha"] == HEAD_SHA for r in runs), "on the PR's head, not the merge commit"
    assert runs[1]["name"] == f"model gate: {model}"
    assert runs[1]["details_url"] == "https://github.com/acme/iris/actions/runs/99"
    assert runs[1]["output"]["title"] == "passed: 1 of 1 rules"
    assert all(r.headers["Authorization"] == f"token {TOKEN}" for r in github.requests)
    shown = [
        line
        for line in (first.output + second.output).splitlines()
        if not line.startswith("::add-mask::")  # the runner's masking command, never displayed
    ]
    assert not [line for line in shown if TOKEN in line]


def test_check_run_refused_falls_back_to_a_commit_status(
    tmp_path: Path, mlflow_server: str, github: FakeGitHub
) -> None:
    model, experiment = unique("gate-status"), unique("exp")
    write_config(tmp_path, model, rules=[RULES[0]])
    github.forbidden.add("POST check-runs")
    env = runner_env(tmp_path, mlflow_server, github)
    done = evaluate(
        tmp_path, env, "--candidate", log_run(mlflow_server, experiment, {"accuracy": 0.9})
    )
    assert done.returncode == 0, done.output
    assert len(github.statuses) == 1
    status = github.statuses[0]
    assert status["state"] == "success"
    assert status["context"] == f"model gate: {model}"
    assert status["sha"] == HEAD_SHA
    assert "commit status: success" in (tmp_path / "summary").read_text()


@pytest.mark.parametrize(
    ("forbidden", "permission"),
    [
        ({"POST comments"}, "pull-requests: write"),
        ({"POST check-runs", "POST statuses"}, "checks: write"),
    ],
)
def test_missing_permission_names_the_grant(
    tmp_path: Path,
    mlflow_server: str,
    github: FakeGitHub,
    forbidden: set[str],
    permission: str,
) -> None:
    model, experiment = unique("gate-403"), unique("exp")
    write_config(tmp_path, model, rules=[RULES[0]])
    github.forbidden.update(forbidden)
    env = runner_env(tmp_path, mlflow_server, github)
    done = evaluate(
        tmp_path, env, "--candidate", log_run(mlflow_server, experiment, {"accuracy": 0.9})
    )
    assert done.returncode == 2, done.output
    error = assert_one_line_error(done, "HTTP 403", permission)
    assert "permissions:" in error
    assert done.outputs()["passed"] == "true", "the decision itself stands and is reported"
    assert "### ✅ Gate passed" in (tmp_path / "summary").read_text()


def test_without_a_token_the_gate_decides_and_says_it_skipped(
    tmp_path: Path, mlflow_server: str
) -> None:
    model, experiment = unique("gate-notoken"), unique("exp")
    write_config(tmp_path, model, rules=[RULES[0]])
    env = runner_env(tmp_path, mlflow_server, None)
    done = evaluate(
        tmp_path, env, "--candidate", log_run(mlflow_server, experiment, {"accuracy": 0.7})
    )
    assert done.returncode == 1, done.output
    summary = (tmp_path / "summary").read_text()
    assert "### ❌ Gate rejected" in summary
    assert "PR comment and check run skipped: no GitHub token" in summary


# ----------------------------------------------------------------------------- bad input


def test_bad_input_gets_one_clear_error(tmp_path: Path, mlflow_server: str) -> None:
    model = unique("gate-bad")
    write_config(tmp_path, model)
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    missing = evaluate(tmp_path, env, "--candidate", "0" * 32)
    assert missing.returncode == 2
    assert_one_line_error(missing, "0" * 32)
    nonsense = evaluate(tmp_path, env, "--candidate", "best-model")
    assert nonsense.returncode == 2
    assert_one_line_error(nonsense, "'best-model' is neither a run id nor a model URI")
    empty = evaluate(tmp_path, env)
    assert empty.returncode == 2
    assert_one_line_error(empty, "candidate")
    no_rules = evaluate(tmp_path, env, "--candidate", "0" * 32, "--rules", "[]")
    assert no_rules.returncode == 2
    assert_one_line_error(no_rules, "gate.rules is empty")
    bad_rule = evaluate(
        tmp_path, env, "--candidate", "0" * 32, "--rules", "[{metric: acc, direction: up}]"
    )
    assert bad_rule.returncode == 2
    assert_one_line_error(bad_rule, "input rules", "'up' is not one of")
    no_bound = evaluate(
        tmp_path, env, "--candidate", "0" * 32, "--rules", "[{metric: a, direction: higher}]"
    )
    assert_one_line_error(no_bound, "set at least one of threshold, min_improvement")
    no_data = evaluate(tmp_path, env, "--candidate", "0" * 32, "--compare", "evaluate")
    assert no_data.returncode == 2
    assert_one_line_error(no_data, "gate.evaluation.data", "gate.evaluation.targets")

    down = f"http://127.0.0.1:{free_port()}"
    unreachable = evaluate(
        tmp_path, clean_env(tmp_path, MLFLOW_TRACKING_URI=down), "--candidate", "0" * 32
    )
    assert unreachable.returncode == 3
    assert_one_line_error(unreachable, down, "connection refused")


# ----------------------------------------------------------------------------- re-evaluation


def train(example: Path, env: dict[str, str], c: float) -> dict[str, str]:
    done = run_cli(["train", "--command", f"python train.py --C {c}"], example, env, timeout=600)
    assert done.returncode == 0, done.output
    return done.outputs()


def side_by_side(*calls: Callable[[], T]) -> list[T]:
    """Independent steps (trainings, each in processes of its own) run at the same time; their
    results in the order given. Two trainings that would create the same experiment race to
    create it: create it first."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]


def test_evaluate_mode_action_compares_like_for_like(
    example: Path, tmp_path: Path, mlflow_server: str, github: FakeGitHub
) -> None:
    model = unique("iris-eval")
    env = runner_env(tmp_path, mlflow_server, github, MLFLOW_EXPERIMENT_NAME=unique("iris"))
    assert run_cli(["dvc-pull"], example, env).returncode == 0
    # A weakly fitted champion, registered under the alias, and a better candidate.
    client(mlflow_server).create_experiment(env["MLFLOW_EXPERIMENT_NAME"])
    champion, candidate = side_by_side(
        lambda: train(example, env, 0.01), lambda: train(example, env, 1.0)
    )
    version = register(mlflow_server, model, champion["run-id"], model_uri=champion["model-uri"])
    (example / "data" / "iris.csv").unlink()  # the gate pulls its dataset when it is absent

    inputs = {
        "candidate": candidate["model-uri"],
        "model-name": model,
        "compare": "evaluate",
        "evaluation-data": "data/iris.csv",
        "evaluation-targets": "species",
        "model-type": "classifier",
        "rules": json.dumps(
            [
                {"metric": "accuracy_score", "direction": "higher", "min_improvement": 0.0},
                {"metric": "log_loss", "direction": "lower", "threshold": 1.0},
            ]
        ),
    }
    result = run_action(
        ROOT / "actions" / "evaluate", inputs, workspace=example, env=env, github_token=TOKEN
    )
    assert result.outcome == "success", result.log
    outputs = result.outputs
    assert outputs["passed"] == "true"
    assert outputs["champion-version"] == version
    assert outputs["candidate-run-id"] == candidate["run-id"]
    assert outputs["comment-url"].startswith("https://github.com/acme/iris/pull/7#issuecomment-")
    decision = json.loads(Path(outputs["decision-file"]).read_text())
    assert decision["compare"] == "evaluate"
    accuracy = decision["rules"][0]
    assert accuracy["candidate"] > accuracy["champion"], accuracy

    mlflow_client = client(mlflow_server)
    logged = mlflow_client.get_run(candidate["run-id"]).data.metrics
    assert logged["eval_accuracy_score"] == pytest.approx(accuracy["candidate"])
    assert logged["accuracy"] == float(
        candidate["metrics"] and json.loads(candidate["metrics"])["accuracy"]
    )
    nested = mlflow_client.get_run(decision["champion_evaluation_run_id"])
    assert nested.data.tags["mlflow.parentRunId"] == candidate["run-id"]
    assert nested.data.tags["mlops.gate.model"] == model
    assert nested.data.tags["mlops.gate.champion_version"] == version
    assert mlflow_client.get_run(candidate["run-id"]).data.tags["mlops.gate.model"] == model
    assert nested.data.metrics["eval_accuracy_score"] == pytest.approx(accuracy["champion"])
    champion_run = mlflow_client.get_run(champion["run-id"]).data.metrics
    assert "eval_accuracy_score" not in champion_run, "the champion's own run is not modified"
    assert "### ✅ Gate passed" in result.summary
    assert "both models evaluated on the same dataset" in result.summary
    assert len(github.check_runs) == 1
    assert github.check_runs[0]["conclusion"] == "success"


# ----------------------------------------------------------------------------- infinities

INF_RULES = [
    {"metric": "accuracy", "direction": "higher", "threshold": 0.5},
    {"metric": "rmse", "direction": "lower", "threshold": 5, "min_improvement": 0.0},
]


@pytest.mark.parametrize("server", ["mlflow_server", "postgres_mlflow_server"])
def test_infinite_logged_metrics_fail_the_rules_that_read_them(
    tmp_path: Path, server: str, request: pytest.FixtureRequest
) -> None:
    """SQL stores keep ±inf as ±float max; the gate must not read that as a finite number."""
    tracking_uri = request.getfixturevalue(server)
    model, experiment = unique("gate-inf"), unique("exp")
    write_config(tmp_path, model, rules=INF_RULES)

    # A candidate that logged accuracy = inf and rmse = -inf: no threshold may pass it.
    infinite = log_run(tracking_uri, experiment, {"accuracy": math.inf, "rmse": -math.inf})
    env = runner_env(tmp_path, tracking_uri, None)
    rejected = evaluate(tmp_path, env, "--candidate", infinite)
    assert rejected.returncode == 1, rejected.output
    decision = json.loads(Path(rejected.outputs()["decision-file"]).read_text())
    assert decision["reasons"] == [
        "accuracy: candidate's accuracy is inf",
        "rmse: candidate's rmse is -inf",
        "rmse: candidate's rmse is -inf",
    ]
    assert [rule["candidate"] for rule in decision["rules"]] == [None, None]
    summary = (tmp_path / "summary").read_text()
    assert "| ❌ | `accuracy` (higher is better) | ∞ |" in summary
    assert "| ❌ | `rmse` (lower is better) | -∞ |" in summary

    # History: v1 once logged rmse = inf, v2 is the champion. v1 has no bar but is named.
    register(tracking_uri, model, log_run(tracking_uri, experiment, {"rmse": math.inf}), "")
    register(tracking_uri, model, log_run(tracking_uri, experiment, {"rmse": 2.0}))
    better = log_run(tracking_uri, experiment, {"accuracy": 0.9, "rmse": 1.5})
    write_config(tmp_path, model, rules=INF_RULES, primary_metric="rmse")
    env = runner_env(tmp_path, tracking_uri, None)
    passed = evaluate(tmp_path, env, "--candidate", better)
    assert passed.returncode == 0, passed.output
    summary = (tmp_path / "summary").read_text()
    assert '  x-axis ["v2", "candidate"]' in summary
    assert "  bar [2, 1.5]" in summary
    assert "Not charted (not a finite number): v1 (∞)." in summary

    # A champion whose rmse is inf: no candidate is "no worse" than that.
    client(tracking_uri).set_registered_model_alias(model, "champion", "1")
    env = runner_env(tmp_path, tracking_uri, None)
    refused = evaluate(tmp_path, env, "--candidate", better)
    assert refused.returncode == 1, refused.output
    assert refused.outputs()["champion-version"] == "1"
    assert "rmse: champion's rmse is inf" in refused.stdout
    decision = json.loads(Path(refused.outputs()["decision-file"]).read_text())
    assert decision["reasons"] == ["rmse: champion's rmse is inf"]
    assert decision["rules"][1]["champion"] is None
    assert "| ❌ | `rmse` (lower is better) | 1.5 | ∞ | — |" in (tmp_path / "summary").read_text()


# ----------------------------------------------------------------------------- housing


def train_housing(project: Path, env: dict[str, str], drop: str = "") -> dict[str, str]:
    command = f"python train.py --drop {drop}" if drop else "python train.py"
    done = run_cli(["train", "--command", command], project, env, timeout=600)
    assert done.returncode == 0, done.output
    return done.outputs()


def housing_env(home: Path, tracking_uri: str) -> dict[str, str]:
    # No MLFLOW_EXPERIMENT_NAME: the experiment comes from the train step's own input, as
    # when the gate runs in a job of its own.
    return runner_env(home, tracking_uri, None)


def test_evaluate_mode_gives_each_model_the_columns_it_was_trained_on(
    housing: Path, tmp_path: Path, mlflow_server: str
) -> None:
    model, experiment = unique("housing"), unique("housing")
    env = housing_env(tmp_path, mlflow_server)
    train_env = {**env, "MLFLOW_EXPERIMENT_NAME": experiment}
    # Champion and candidate each left different columns out before fitting; a third model
    # (every column) is the better candidate below.
    client(mlflow_server).create_experiment(experiment)
    champion, worse, better = side_by_side(
        lambda: train_housing(housing, train_env, drop="age_years"),
        lambda: train_housing(housing, train_env, drop="rooms,area_m2"),
        lambda: train_housing(housing, train_env),
    )
    version = register(mlflow_server, model, champion["run-id"], model_uri=champion["model-uri"])

    rejected = evaluate(housing, env, "--candidate", worse["model-uri"], "--model-name", model)
    assert rejected.returncode == 1, rejected.output
    assert "Feature names" not in rejected.output
    outputs = rejected.outputs()
    assert outputs["champion-version"] == version
    decision = json.loads(Path(outputs["decision-file"]).read_text())
    assert decision["compare"] == "evaluate"
    rmse = decision["rules"][0]
    assert rmse["metric"] == "root_mean_squared_error"
    assert rmse["candidate"] > rmse["champion"] > 0, rmse
    assert "root_mean_squared_error: improvement -" in rejected.stdout

    # The champion's evaluation run sits in the candidate's experiment, under the candidate.
    mlflow_client = client(mlflow_server)
    candidate_run = mlflow_client.get_run(worse["run-id"])
    nested = mlflow_client.get_run(decision["champion_evaluation_run_id"])
    assert nested.data.tags["mlflow.parentRunId"] == worse["run-id"]
    assert nested.info.experiment_id == candidate_run.info.experiment_id
    assert mlflow_client.get_experiment(nested.info.experiment_id).name == experiment

    passed = evaluate(housing, env, "--candidate", better["model-uri"], "--model-name", model)
    assert passed.returncode == 0, passed.output
    decision = json.loads(Path(passed.outputs()["decision-file"]).read_text())
    assert decision["rules"][0]["candidate"] < decision["rules"][0]["champion"]


def log_overflowing_model(project: Path, tracking_uri: str, experiment: str) -> str:
    """A regressor whose predictions (~1e202) overflow its squared error to inf."""
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from sklearn.linear_model import Ridge

    frame = pd.read_csv(project / "data" / "housing.csv")
    features = frame.drop(columns=["price"])
    model = Ridge().fit(features, frame["price"])
    model.coef_ = model.coef_ * 1e200
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", input_example=features.head(3))
    return str(info.model_uri)


def test_evaluate_mode_reports_an_infinite_score_as_infinite(
    housing: Path, tmp_path: Path, mlflow_server: str
) -> None:
    model, experiment = unique("housing-inf"), unique("housing")
    env = housing_env(tmp_path, mlflow_server)
    good = train_housing(housing, {**env, "MLFLOW_EXPERIMENT_NAME": experiment})
    first = evaluate(housing, env, "--candidate", good["model-uri"], "--model-name", model)
    assert first.returncode == 0, first.output  # a first model, logs eval_* on its run
    register(mlflow_server, model, good["run-id"], model_uri=good["model-uri"])

    overflowing = log_overflowing_model(housing, mlflow_server, experiment)
    env = housing_env(tmp_path, mlflow_server)
    rejected = evaluate(housing, env, "--candidate", overflowing, "--model-name", model)
    assert rejected.returncode == 1, rejected.output
    assert "root_mean_squared_error: candidate's root_mean_squared_error is inf" in rejected.stdout

    # Promoted anyway (by hand): re-evaluated, and read back from its run for the chart.
    mlflow_client = client(mlflow_server)
    overflow_run = mlflow_client.get_logged_model(overflowing.split("/")[-1]).source_run_id
    register(mlflow_server, model, overflow_run, model_uri=overflowing)
    env = housing_env(tmp_path, mlflow_server)
    refused = evaluate(housing, env, "--candidate", good["model-uri"], "--model-name", model)
    assert refused.returncode == 1, refused.output
    assert refused.outputs()["champion-version"] == "2"
    decision = json.loads(Path(refused.outputs()["decision-file"]).read_text())
    assert decision["reasons"] == [
        "root_mean_squared_error: champion's root_mean_squared_error is inf"
    ]
    summary = (tmp_path / "summary").read_text()
    assert '  x-axis ["v1", "candidate"]' in summary
    assert "Not charted (not a finite number): v2 (∞)." in summary
