"""Pipeline metrics against a real Pushgateway and Prometheus: the push-metrics verb and action,
the hook that pushes every stage's outcome, authentication, and a gateway that is down."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.composite import run_action
from tests.conftest import ROOT, CliResult, assert_one_line_error, clean_env, run_cli
from tests.fault_proxy import Fault, FaultProxy
from tests.test_evaluate import log_run, register, unique
from tests.test_promote import logged_model_run

if TYPE_CHECKING:
    from tests.prom_services import Prometheus, Pushgateway

# The pushgateway, auth_pushgateway, bearer_pushgateway and prometheus_factory fixtures.
pytest_plugins = ["tests.prom_services"]

STAGE_METRICS = {
    "mlops_stage_duration_seconds",
    "mlops_stage_success",
    "mlops_stage_exit_code",
    "mlops_stage_last_run_timestamp_seconds",
    "mlops_stage_last_success_timestamp_seconds",
}


def runner_env(home: Path, **extra: str) -> dict[str, str]:
    """A runner's step environment: annotations as workflow commands, output and summary files."""
    for name in ("output", "summary"):
        (home / name).write_text("")
    return clean_env(
        home,
        GITHUB_ACTIONS="true",
        GITHUB_OUTPUT=str(home / "output"),
        GITHUB_STEP_SUMMARY=str(home / "summary"),
        **extra,
    )


def warnings(result: CliResult) -> list[str]:
    return [
        line for line in result.output.splitlines() if line.startswith(("::warning", "warning:"))
    ]


def push_metrics(cwd: Path, env: dict[str, str], *args: str) -> CliResult:
    return run_cli(["push-metrics", *args], cwd, env, timeout=120)


def group_of(gateway: Pushgateway, stage: str) -> dict[str, float]:
    """Every series of one stage's group, by metric name (and labels, when it has some)."""
    found = {}
    for sample in gateway.samples():
        labels = dict(sample.labels)
        if labels.pop("stage", None) != stage or sample.name.startswith(("push_", "pushgateway_")):
            continue
        extra = {k: v for k, v in labels.items() if k not in ("job", "pipeline", "instance")}
        key = sample.name + (json.dumps(extra, sort_keys=True) if extra else "")
        found[key] = sample.value
    return found


# ----------------------------------------------------------------------------- push-metrics


def test_push_metrics_keeps_the_last_success_after_a_failure(
    tmp_path: Path, pushgateway: Pushgateway
) -> None:
    env = clean_env(tmp_path, MLOPS_PUSHGATEWAY_URL=pushgateway.url)
    ok = push_metrics(
        tmp_path,
        env,
        *("--stage", "deploy", "--status", "success", "--duration-seconds", "12.5"),
        *("--pipeline", "iris", "--metric", "rows_scored=1200", "--metric", "batches=3"),
    )
    assert ok.returncode == 0, ok.output
    assert ok.outputs()["pushed"] == "true"
    assert f"to {pushgateway.url} (job=mlops-actions, pipeline=iris)" in ok.stderr
    first = group_of(pushgateway, "deploy")
    assert set(first) == {*STAGE_METRICS, "rows_scored", "batches"}
    assert first["mlops_stage_success"] == 1
    assert first["mlops_stage_exit_code"] == 0
    assert first["mlops_stage_duration_seconds"] == 12.5
    assert first["rows_scored"] == 1200
    last_success = first["mlops_stage_last_success_timestamp_seconds"]
    assert last_success == first["mlops_stage_last_run_timestamp_seconds"]
    # One group per job, pipeline and stage: no run id, no instance.
    (group,) = pushgateway.groups()
    assert group["labels"] == {"job": "mlops-actions", "pipeline": "iris", "stage": "deploy"}
    assert {group[name]["type"] for name in first} == {"GAUGE"}

    failed = push_metrics(
        tmp_path, env, "--stage", "deploy", "--exit-code", "3", "--pipeline", "iris"
    )
    assert failed.returncode == 0, failed.output
    second = group_of(pushgateway, "deploy")
    assert second["mlops_stage_success"] == 0
    assert second["mlops_stage_exit_code"] == 3
    assert second["mlops_stage_last_success_timestamp_seconds"] == last_success
    assert second["mlops_stage_last_run_timestamp_seconds"] > last_success
    assert len(pushgateway.groups()) == 1


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--metric", "rows-scored=1"], "--metric 'rows-scored=1'"),
        (["--metric", "rows=many"], "--metric 'rows=many'"),
        (["--metric", "rows"], "--metric 'rows'"),
        (["--metric", "mlops_stage_success=1"], "--metric 'mlops_stage_success=1'"),
        (["--metric", "rows=1", "--stage", "de ploy"], "--stage"),
        (["--metric", "rows=1", "--status", "green"], "--status"),
        (["--metric", "rows=1", "--exit-code", "0", "--status", "failure"], "contradicts"),
        (["--metric", "rows=1", "--duration-seconds", "-1"], "--duration-seconds"),
        (["--metric", "rows=1", "--metric", "rows=2"], "metric rows is given twice"),
    ],
)
def test_bad_input_is_exit_2_naming_the_flag(
    tmp_path: Path, pushgateway: Pushgateway, args: list[str], named: str
) -> None:
    env = clean_env(tmp_path, MLOPS_PUSHGATEWAY_URL=pushgateway.url)
    for flag, value in {"--stage": "deploy", "--status": "success"}.items():
        if flag not in args:
            args = [*args, flag, value]
    result = push_metrics(tmp_path, env, *args)
    assert result.returncode == 2
    assert_one_line_error(result, named)
    assert pushgateway.groups() == []


def test_metrics_input_and_file_name_the_input(tmp_path: Path, pushgateway: Pushgateway) -> None:
    (tmp_path / "good.json").write_text('{"rows_scored": 5, "auc": 0.91}')
    (tmp_path / "bad.json").write_text('{"auc": "high"}')
    env = clean_env(tmp_path, MLOPS_PUSHGATEWAY_URL=pushgateway.url)
    bad_line = push_metrics(
        tmp_path,
        {**env, "INPUT_METRICS": "ok=1\nnot valid=2"},
        "--stage",
        "s",
        "--status",
        "success",
    )
    assert bad_line.returncode == 2
    assert_one_line_error(bad_line, "input 'metrics'", "'not valid'")
    bad_file = push_metrics(
        tmp_path, env, "--stage", "s", "--status", "success", "--metrics-file", "bad.json"
    )
    assert bad_file.returncode == 2
    assert_one_line_error(bad_file, "--metrics-file", "auc")
    (tmp_path / "twice.json").write_text('{"auc": 0.9, "auc": 0.5}')  # json keeps the last
    twice = push_metrics(
        tmp_path, env, "--stage", "s", "--status", "success", "--metrics-file", "twice.json"
    )
    assert twice.returncode == 2
    assert_one_line_error(twice, "--metrics-file", "twice.json has 'auc' twice")
    across = push_metrics(
        tmp_path,
        {**env, "INPUT_METRICS": "auc=1"},
        *("--stage", "s", "--status", "success", "--metrics-file", "good.json"),
    )
    assert across.returncode == 2
    assert_one_line_error(across, "--metrics-file", "metric auc is given twice (also by input")
    good = push_metrics(
        tmp_path,
        {**env, "INPUT_METRICS": "ok=1"},
        *("--stage", "s", "--status", "success", "--metrics-file", "good.json"),
    )
    assert good.returncode == 0, good.output
    assert {k: v for k, v in group_of(pushgateway, "s").items() if k in ("ok", "auc")} == {
        "ok": 1,
        "auc": 0.91,
    }


def test_gateway_down_is_one_warning_and_success(tmp_path: Path, pushgateway: Pushgateway) -> None:
    pushgateway.stop()
    env = runner_env(tmp_path, MLOPS_PUSHGATEWAY_URL=pushgateway.url)
    result = push_metrics(tmp_path, env, "--stage", "deploy", "--status", "success")
    assert result.returncode == 0, result.output
    (warning,) = warnings(result)
    assert warning.startswith("::warning title=push-metrics::")
    assert pushgateway.url in warning
    assert "Connection refused" in warning
    assert "Fix: check that the Pushgateway is running" in warning
    assert "pushed<<" in (tmp_path / "output").read_text()
    assert "\nfalse\n" in (tmp_path / "output").read_text()
    assert "metrics not pushed" in (tmp_path / "summary").read_text()


def test_a_gateway_that_never_answers_times_out(tmp_path: Path) -> None:
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        env = clean_env(tmp_path, MLOPS_PUSHGATEWAY_URL=url)
        result = push_metrics(
            tmp_path, env, "--stage", "s", "--status", "success", "--timeout-seconds", "1"
        )
    assert result.returncode == 0, result.output
    (warning,) = warnings(result)
    assert f"not pushed to {url}: no answer within 1 s" in warning


@pytest.fixture
def slow_gateway(pushgateway: Pushgateway) -> Iterator[FaultProxy]:
    """A real Pushgateway whose answers to pushes arrive one byte every 2 s (each read in time)."""
    proxy = FaultProxy(
        pushgateway.url, faults=[Fault(r"^(POST|PUT) ", times=-1, trickle_seconds=2)]
    )
    server = proxy.serve()
    yield proxy
    server.shutdown()
    server.server_close()


@pytest.mark.timeout(120)  # without a whole-push deadline: about 4 minutes
def test_a_gateway_that_trickles_its_answer_is_cut_off_at_the_timeout(
    tmp_path: Path, slow_gateway: FaultProxy
) -> None:
    env = runner_env(tmp_path, MLOPS_PUSHGATEWAY_URL=slow_gateway.url)
    started = time.monotonic()
    result = push_metrics(
        tmp_path, env, "--stage", "s", "--status", "success", "--timeout-seconds", "3"
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.output
    (warning,) = warnings(result)
    assert f"not pushed to {slow_gateway.url}: no answer within 3 s" in warning
    assert "Fix: check that the Pushgateway is running" in warning
    assert elapsed < 3 + 20, elapsed  # the deadline plus the CLI's start-up, generously
    assert slow_gateway.count("^POST ") == 1


def test_a_skipped_stage_pushes_nothing(tmp_path: Path, pushgateway: Pushgateway) -> None:
    env = clean_env(tmp_path, MLOPS_PUSHGATEWAY_URL=pushgateway.url)
    result = push_metrics(tmp_path, env, "--stage", "deploy", "--status", "skipped")
    assert result.returncode == 0, result.output
    assert result.outputs()["pushed"] == "false"
    assert "was skipped" in result.stderr
    assert pushgateway.groups() == []


def test_no_gateway_configured_is_a_warning(tmp_path: Path) -> None:
    result = push_metrics(tmp_path, clean_env(tmp_path), "--stage", "s", "--status", "success")
    assert result.returncode == 0
    (warning,) = warnings(result)
    assert "no Pushgateway URL" in warning
    assert result.outputs()["pushed"] == "false"


# ----------------------------------------------------------------------------- credentials


def leaks(text: str, *secrets: str) -> list[str]:
    """Secrets found in `text` outside the runner's own ::add-mask:: commands."""
    shown = "\n".join(line for line in text.splitlines() if not line.startswith("::add-mask::"))
    return [secret for secret in secrets if secret in shown]


def test_basic_auth_pushes_and_leaks_nothing(tmp_path: Path, auth_pushgateway: Pushgateway) -> None:
    user, password = auth_pushgateway.username, auth_pushgateway.password
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    env = runner_env(
        tmp_path,
        MLOPS_PUSHGATEWAY_URL=auth_pushgateway.url,
        MLOPS_PUSHGATEWAY_USERNAME=user,
        MLOPS_PUSHGATEWAY_PASSWORD=password,
    )
    result = push_metrics(tmp_path, env, "--stage", "deploy", "--status", "success")
    assert result.returncode == 0, result.output
    assert warnings(result) == []
    assert f"::add-mask::{password}" in result.stdout
    assert auth_pushgateway.value("mlops_stage_success", stage="deploy") == 1
    logs = result.output + (tmp_path / "output").read_text() + (tmp_path / "summary").read_text()
    assert leaks(logs, password, basic) == []

    wrong = runner_env(
        tmp_path,
        MLOPS_PUSHGATEWAY_URL=auth_pushgateway.url,
        MLOPS_PUSHGATEWAY_USERNAME=user,
        MLOPS_PUSHGATEWAY_PASSWORD="not-the-password-42",
    )
    refused = push_metrics(tmp_path, wrong, "--stage", "deploy", "--status", "failure")
    assert refused.returncode == 0, refused.output
    (warning,) = warnings(refused)
    assert auth_pushgateway.url in warning
    assert "refused the credentials (HTTP 401)" in warning
    assert "MLOPS_PUSHGATEWAY_PASSWORD" in warning
    logs = refused.output + (tmp_path / "output").read_text() + (tmp_path / "summary").read_text()
    assert leaks(logs, "not-the-password-42", password) == []
    assert auth_pushgateway.value("mlops_stage_success", stage="deploy") == 1  # unchanged


def test_bearer_token_pushes_and_leaks_nothing(
    tmp_path: Path, bearer_pushgateway: Pushgateway
) -> None:
    env = runner_env(
        tmp_path,
        MLOPS_PUSHGATEWAY_URL=bearer_pushgateway.url,
        MLOPS_PUSHGATEWAY_TOKEN=bearer_pushgateway.token,
    )
    result = push_metrics(tmp_path, env, "--stage", "deploy", "--status", "success")
    assert result.returncode == 0, result.output
    assert warnings(result) == []
    assert bearer_pushgateway.value("mlops_stage_success", stage="deploy") == 1
    logs = result.output + (tmp_path / "output").read_text() + (tmp_path / "summary").read_text()
    assert leaks(logs, bearer_pushgateway.token) == []

    without = runner_env(tmp_path, MLOPS_PUSHGATEWAY_URL=bearer_pushgateway.url)
    refused = push_metrics(tmp_path, without, "--stage", "deploy", "--status", "failure")
    assert refused.returncode == 0
    (warning,) = warnings(refused)
    assert "HTTP 401" in warning
    assert bearer_pushgateway.value("mlops_stage_success", stage="deploy") == 1


def test_credentials_in_the_url_are_refused_and_masked(tmp_path: Path) -> None:
    url = "http://someone:url-pw-never-print-me@127.0.0.1:9/"
    result = push_metrics(
        tmp_path,
        runner_env(tmp_path),
        *("--stage", "s", "--status", "success", "--pushgateway-url", url),
    )
    assert result.returncode == 2
    assert leaks(result.output, "url-pw-never-print-me") == []
    assert_one_line_error(result, "pushgateway_url")


# ----------------------------------------------------------------------------- the action


def test_push_metrics_action(tmp_path: Path, pushgateway: Pushgateway) -> None:
    env = clean_env(tmp_path)
    action = ROOT / "actions" / "push-metrics"
    inputs = {
        "stage": "load-test",
        "status": "failure",
        "duration-seconds": "42",
        "metrics": "requests_per_second=310.5\nerrors=2",
        "pushgateway-url": pushgateway.url,
        "pipeline": "iris",
        "job": "nightly",
    }
    pushed = run_action(action, inputs, workspace=tmp_path, env=env)
    assert pushed.outcome == "success", pushed.log
    assert pushed.outputs == {"pushed": "true"}
    assert "### 📈 metrics pushed" in pushed.summary
    assert "`requests_per_second` | 310.5" in pushed.summary
    (group,) = pushgateway.groups()
    assert group["labels"] == {"job": "nightly", "pipeline": "iris", "stage": "load-test"}
    assert pushgateway.value("mlops_stage_success", stage="load-test") == 0
    assert pushgateway.value("mlops_stage_exit_code", stage="load-test") == 1
    assert pushgateway.value("requests_per_second", stage="load-test") == 310.5
    assert pushgateway.value("mlops_stage_last_success_timestamp_seconds") is None

    pushgateway.stop()
    down = run_action(action, inputs, workspace=tmp_path, env=env)
    assert down.outcome == "success", down.log
    assert down.outputs == {"pushed": "false"}
    assert down.log.count("::warning") == 1
    bad = run_action(action, {**inputs, "metrics": "9lives=1"}, workspace=tmp_path, env=env)
    assert bad.outcome == "failure"
    assert "::error title=configuration error::input 'metrics'" in bad.log


# ----------------------------------------------------------------------------- the hook


def test_every_stage_of_run_pushes_and_prometheus_scrapes_it(
    example: Path,
    tmp_path: Path,
    pushgateway: Pushgateway,
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    pushgateway.stop()
    env = runner_env(tmp_path, MLOPS_PUSHGATEWAY_URL=pushgateway.url)
    down = run_cli(["run"], example, env)
    assert down.returncode == 0, down.output
    (warning,) = warnings(down)  # one, although four stages ran
    assert "metrics of stage 'dvc-pull' not pushed to" in warning
    assert down.stderr.count("failed earlier") == 3  # train, evaluate, promote: not tried again

    pushgateway.start()
    up = run_cli(["run"], example, runner_env(tmp_path, MLOPS_PUSHGATEWAY_URL=pushgateway.url))
    assert up.returncode == 0, up.output
    assert warnings(up) == []
    stages = ("dvc-pull", "train", "evaluate", "promote")
    groups = {tuple(sorted(g["labels"].items())) for g in pushgateway.groups()}
    assert groups == {
        (("job", "mlops-actions"), ("pipeline", "iris-classifier"), ("stage", s)) for s in stages
    }
    for stage in stages:
        assert pushgateway.value("mlops_stage_success", stage=stage) == 1, stage
        assert pushgateway.value("mlops_stage_exit_code", stage=stage) == 0, stage
    pulled = group_of(pushgateway, "dvc-pull")
    assert pulled["mlops_data_fetched_files"] == 0  # the first run's pull filled the cache
    assert "mlops_data_fetched_bytes" in pulled
    trained = group_of(pushgateway, "train")
    assert (
        0 < trained["mlops_train_run_duration_seconds"] <= trained["mlops_stage_duration_seconds"]
    )

    gate = group_of(pushgateway, "evaluate")
    decision = json.loads((example / "mlops-gate" / "iris-classifier.decision.json").read_text())
    assert gate["mlops_gate_passed"] == 1
    for rule in decision["rules"]:
        metric = rule["metric"]
        assert (
            gate[f'mlops_gate_metric_value{{"metric": "{metric}", "model": "candidate"}}']
            == (rule["candidate"])
        )
        assert (
            gate[f'mlops_gate_metric_value{{"metric": "{metric}", "model": "champion"}}']
            == (rule["champion"])
        )
        for check in rule["checks"]:
            key = f'mlops_gate_threshold{{"bound": "{check["bound"]}", "metric": "{metric}"}}'
            assert gate[key] == check["limit"]
    promoted = group_of(pushgateway, "promote")
    assert promoted['mlops_model_version{"alias": "champion"}'] == 2
    assert "mlops_promotion_timestamp_seconds" + '{"alias": "champion"}' in promoted

    prometheus = prometheus_factory(pushgateway=pushgateway.url)
    scraped = prometheus.wait_for('mlops_stage_success{stage="evaluate"}')
    assert scraped[0]["metric"]["job"] == "mlops-actions"  # honor_labels: the pushed job label
    assert scraped[0]["metric"]["pipeline"] == "iris-classifier"
    assert scraped[0]["value"][1] == "1"
    assert len(prometheus.query("mlops_stage_success")) == 4


@pytest.mark.timeout(300)  # without a whole-push deadline: four pushes of about 4 minutes each
def test_run_with_a_slow_gateway_warns_once_and_tries_it_once(
    example: Path, tmp_path: Path, slow_gateway: FaultProxy
) -> None:
    # The default timeout, 5 s: every read gets its byte in time, only a deadline stops it.
    env = runner_env(tmp_path, MLOPS_PUSHGATEWAY_URL=slow_gateway.url)
    result = run_cli(["run"], example, env)
    assert result.returncode == 0, result.output
    (warning,) = warnings(result)
    assert f"metrics of stage 'dvc-pull' not pushed to {slow_gateway.url}" in warning
    assert "no answer within 5 s" in warning
    assert result.stderr.count("failed earlier") == 3  # train, evaluate, promote
    assert slow_gateway.count("^POST ") == 1


@pytest.fixture
def gate_project(tmp_path: Path, mlflow_server: str, pushgateway: Pushgateway) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    document = {
        "version": 1,
        "model": {"name": unique("pushed-gate")},
        "gate": {
            "rules": [
                {"metric": "accuracy", "direction": "higher", "threshold": 0.8},
                {"metric": "latency_ms", "direction": "lower", "max_regression_pct": 10},
            ],
            "report": {"pr_comment": False, "check_run": False},
        },
        "monitoring": {"pushgateway_url": pushgateway.url, "job": "gates"},
    }
    (project / "mlops.yaml").write_text(json.dumps(document))
    return project


def test_a_rejected_gate_after_a_pass_keeps_the_last_success(
    gate_project: Path, tmp_path: Path, mlflow_server: str, pushgateway: Pushgateway
) -> None:
    model = json.loads((gate_project / "mlops.yaml").read_text())["model"]["name"]
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    experiment = unique("exp")
    champion = log_run(mlflow_server, experiment, {"accuracy": 0.9, "latency_ms": 10})
    register(mlflow_server, model, champion)
    good = log_run(mlflow_server, experiment, {"accuracy": 0.93, "latency_ms": 10.5})
    passed = run_cli(["evaluate", "--candidate", good], gate_project, env)
    assert passed.returncode == 0, passed.output
    first = group_of(pushgateway, "evaluate")
    assert first["mlops_gate_passed"] == 1
    assert first["mlops_stage_success"] == 1
    assert first['mlops_gate_metric_value{"metric": "accuracy", "model": "candidate"}'] == 0.93
    assert first['mlops_gate_metric_value{"metric": "latency_ms", "model": "champion"}'] == 10
    assert first['mlops_gate_threshold{"bound": "threshold", "metric": "accuracy"}'] == 0.8
    assert (
        first['mlops_gate_threshold{"bound": "max_regression_pct", "metric": "latency_ms"}'] == 10
    )

    bad = log_run(mlflow_server, experiment, {"accuracy": 0.7, "latency_ms": 10})
    rejected = run_cli(["evaluate", "--candidate", bad], gate_project, env)
    assert rejected.returncode == 1
    second = group_of(pushgateway, "evaluate")
    assert second["mlops_gate_passed"] == 0
    assert second["mlops_stage_success"] == 0
    assert second["mlops_stage_exit_code"] == 1
    assert second['mlops_gate_metric_value{"metric": "accuracy", "model": "candidate"}'] == 0.7
    assert (
        second["mlops_stage_last_success_timestamp_seconds"]
        == first["mlops_stage_last_success_timestamp_seconds"]
    )
    assert (
        second["mlops_gate_decision_timestamp_seconds"]
        > first["mlops_stage_last_run_timestamp_seconds"]
    )
    (group,) = pushgateway.groups()
    assert group["labels"] == {"job": "gates", "pipeline": model, "stage": "evaluate"}

    # A stage that fails before it decides still pushes its outcome: a bad input, exit 2.
    broken = run_cli(["evaluate"], gate_project, env)
    assert broken.returncode == 2
    assert pushgateway.value("mlops_stage_exit_code", stage="evaluate") == 2
    assert pushgateway.value("mlops_gate_passed", stage="evaluate") == 0  # the last decision


def test_promote_and_rollback_push_the_alias_holder(
    tmp_path: Path, mlflow_server: str, pushgateway: Pushgateway
) -> None:
    model, experiment = unique("pushed-promote"), unique("exp")
    env = clean_env(
        tmp_path, MLFLOW_TRACKING_URI=mlflow_server, MLOPS_PUSHGATEWAY_URL=pushgateway.url
    )
    runs = [logged_model_run(mlflow_server, experiment) for _ in range(2)]
    for run in runs:
        moved = run_cli(["promote", "--candidate", run, "--model-name", model], tmp_path, env)
        assert moved.returncode == 0, moved.output
    promoted = group_of(pushgateway, "promote")
    assert promoted['mlops_model_version{"alias": "champion"}'] == 2
    moved_at = promoted['mlops_promotion_timestamp_seconds{"alias": "champion"}']
    again = run_cli(["promote", "--candidate", runs[1], "--model-name", model], tmp_path, env)
    assert again.outputs()["changed"] == "false"
    unchanged = group_of(pushgateway, "promote")
    assert unchanged['mlops_promotion_timestamp_seconds{"alias": "champion"}'] == moved_at
    assert unchanged["mlops_stage_last_run_timestamp_seconds"] > moved_at

    back = run_cli(["rollback", "--model-name", model], tmp_path, env)
    assert back.returncode == 0, back.output
    rolled = group_of(pushgateway, "rollback")
    assert rolled['mlops_model_version{"alias": "champion"}'] == 1
    assert rolled["mlops_stage_success"] == 1
    assert {g["labels"]["pipeline"] for g in pushgateway.groups()} == {model}


def test_a_failed_training_pushes_its_exit_status(tmp_path: Path, pushgateway: Pushgateway) -> None:
    env = clean_env(tmp_path, MLOPS_PUSHGATEWAY_URL=pushgateway.url)
    failed = run_cli(["train", "--command", "exit 7", "--experiment", "e"], tmp_path, env)
    assert failed.returncode == 7
    trained = group_of(pushgateway, "train")
    assert trained["mlops_stage_success"] == 0
    assert trained["mlops_stage_exit_code"] == 7
    assert "mlops_stage_last_success_timestamp_seconds" not in trained
    assert (
        0 < trained["mlops_train_run_duration_seconds"] <= trained["mlops_stage_duration_seconds"]
    )
    assert pushgateway.groups()[0]["labels"]["pipeline"] == tmp_path.name  # no model, no repo


def test_config_section_and_environment(tmp_path: Path) -> None:
    (tmp_path / "mlops.yaml").write_text(
        "version: 1\nmonitoring:\n  pushgateway_url: pushgateway:9091\n"
    )
    invalid = run_cli(["config", "validate"], tmp_path, clean_env(tmp_path))
    assert invalid.returncode == 2
    assert_one_line_error(invalid, "$.monitoring.pushgateway_url")
    (tmp_path / "mlops.yaml").write_text("version: 1\nmonitoring:\n  job: ml\n")
    env = clean_env(tmp_path, MLOPS_PUSHGATEWAY_URL="https://pgw.example.com")
    shown = run_cli(["config", "show"], tmp_path, env)
    assert shown.returncode == 0, shown.output
    assert 'pushgateway_url: "https://pgw.example.com"  # environment MLOPS_PUSHGATEWAY_URL' in (
        shown.stdout
    )
    assert 'job: "ml"  # file mlops.yaml' in shown.stdout
    assert "timeout_seconds: 5  # default" in shown.stdout


def test_catalogue_passes_promtool(tmp_path: Path) -> None:
    """Every gauge the suite can push, as one exposition, passes `promtool check metrics`."""
    import shutil

    from prometheus_client import generate_latest

    from mlops_actions import gate, monitor
    from mlops_actions.promote import MoveResult

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (apt-get install prometheus)")
    rules = gate.parse_rules([{"metric": "accuracy", "direction": "higher", "threshold": 0.9}])
    decision = gate.decide(rules, {"accuracy": 0.95}, {"accuracy": 0.93})
    samples = [
        *monitor.stage_samples(0, 1.5, 1700000000.0),
        *monitor.pull_samples(3, 4096),
        *monitor.train_samples(1.2),
        *monitor.gate_samples(decision, 1700000000.0),
        *monitor.move_samples(MoveResult("m", "champion", "3", "2", True, False, ""), 1.0),
        *monitor.image_samples(123456789, "3"),
    ]
    exposition = generate_latest(monitor.registry_for(samples))
    assert {s.name for s in samples} == set(monitor.CATALOGUE)
    assert b" gauge\n" in exposition
    assert b"counter" not in exposition
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_image_gauges_reach_the_gateway(pushgateway: Pushgateway) -> None:
    """build-push's gauges through the core (the verb itself needs Docker: see test_image)."""
    from mlops_actions import monitor

    target = monitor.Target(pushgateway.url, "mlops-actions", "iris", 2.0)
    samples = [*monitor.stage_samples(0, 80.0, 1700000000.0), *monitor.image_samples(5_000, "4")]
    assert monitor.push(target, "build-push", samples) == monitor.PushResult(True, pushgateway.url)
    assert pushgateway.value("mlops_image_size_bytes", stage="build-push") == 5_000
    assert pushgateway.value("mlops_image_model_version", stage="build-push") == 4
    logged_model = monitor.image_samples(5_000, "")  # models:/m-...: no registry version
    assert [s.name for s in logged_model] == ["mlops_image_size_bytes"]


def test_a_bug_in_the_push_is_raised_not_reported_as_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The push runs in a worker thread; a bug there must still reach the caller's handler."""
    from mlops_actions import monitor

    def broken(*args: object) -> monitor.PushResult:
        raise RuntimeError("a bug")

    monkeypatch.setattr(monitor, "_push_now", broken)
    target = monitor.Target("http://127.0.0.1:9", "mlops-actions", "iris", 30.0)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="a bug"):
        monitor.push(target, "s", monitor.stage_samples(0, 1.0, 1700000000.0))
    assert time.monotonic() - started < 20  # not after the 30 s deadline
