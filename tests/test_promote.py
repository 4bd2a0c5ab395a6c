"""Promotion against a real MLflow server: registration, history, rollback, idempotency and
concurrent promotions from several processes."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.composite import run_action
from tests.conftest import (
    BIN,
    ROOT,
    Service,
    assert_one_line_error,
    clean_env,
    run_cli,
    start_mlflow_server,
    stop,
)
from tests.fault_proxy import Fault, FaultProxy
from tests.github_fake import FakeGitHub
from tests.test_evaluate import TOKEN, client, unique


@pytest.fixture(params=["sqlite", "postgresql"])
def store_server(request: pytest.FixtureRequest) -> str:
    """The tracking server, once with a SQLite store and once with a PostgreSQL store."""
    name = "mlflow_server" if request.param == "sqlite" else "postgres_mlflow_server"
    return str(request.getfixturevalue(name))


def logged_model_run(
    tracking_uri: str,
    experiment: str,
    metrics: dict[str, float] | None = None,
    *,
    infer_requirements: bool = False,
) -> str:
    """A run with a (tiny) logged model, as training leaves it. Its requirements are inferred
    (seconds, in a subprocess) only when asked: an image installs them, promotion never reads
    them."""
    import mlflow
    from sklearn.dummy import DummyClassifier

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.log_metrics(metrics or {})
        mlflow.sklearn.log_model(
            DummyClassifier().fit([[0.0], [1.0]], [0, 1]),
            name="model",
            pip_requirements=None if infer_requirements else ["scikit-learn"],
        )
    return str(run.info.run_id)


def promote(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mlops-actions"), "promote", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def outputs(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)


def test_promote_twice_then_roll_back(tmp_path: Path, store_server: str) -> None:
    mlflow_server = store_server
    model, experiment = unique("promote"), unique("exp")
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    first_run, second_run = (logged_model_run(mlflow_server, experiment) for _ in range(2))

    first = promote(tmp_path, env, "--candidate", first_run, "--model-name", model)
    assert first.returncode == 0, first.stderr
    out = outputs(first.stdout)
    assert out["version"] == "1"
    assert out["previous-version"] == ""
    assert out["registered"] == "true"
    assert out["model-uri"] == f"models:/{model}/1"
    assert out["alias-uri"] == f"models:/{model}@champion"

    again = promote(tmp_path, env, "--candidate", first_run, "--model-name", model)
    assert again.returncode == 0, again.stderr
    assert outputs(again.stdout)["changed"] == "false"
    assert "already points at version 1: nothing to do" in again.stderr

    second = promote(
        tmp_path, env, "--candidate", second_run, "--model-name", model, "--expected-version", "1"
    )
    assert second.returncode == 0, second.stderr
    assert outputs(second.stdout)["previous-version"] == "1"

    mlflow_client = client(mlflow_server)
    version = mlflow_client.get_model_version(model, "2")
    assert version.tags["mlops.source.run_id"] == second_run
    assert version.description.startswith("Promoted to @champion by mlops-actions")

    rolled = run_cli(["rollback", "--model-name", model], tmp_path, env)
    assert rolled.returncode == 0, rolled.output
    assert rolled.outputs()["version"] == "1"
    assert rolled.outputs()["previous-version"] == "2"
    assert mlflow_client.get_registered_model(model).aliases == {"champion": "1"}

    shown = run_cli(["registry", "history", "--model-name", model, "--json"], tmp_path, env)
    assert shown.returncode == 0, shown.output
    moves = json.loads(shown.stdout)
    assert [(m["from_version"], m["to_version"], m["reason"]) for m in moves] == [
        (None, "1", "promote"),
        ("1", "2", "promote"),
        ("2", "1", "rollback"),
    ]
    assert all(m["state"] == "done" for m in moves)
    names = [m.name for m in mlflow_client.search_registered_models()]
    assert not [n for n in names if n.startswith("mlops-lock--")], "no lock left behind"


def test_a_moved_alias_fails_instead_of_overwriting(tmp_path: Path, mlflow_server: str) -> None:
    model, experiment = unique("promote-race"), unique("exp")
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    runs = [logged_model_run(mlflow_server, experiment) for _ in range(2)]
    assert promote(tmp_path, env, "--candidate", runs[0], "--model-name", model).returncode == 0
    stale = promote(
        tmp_path, env, "--candidate", runs[1], "--model-name", model, "--expected-version", "none"
    )
    assert stale.returncode == 4, stale.stderr
    assert_one_line_error(
        run_cli(
            ["promote", "--candidate", runs[1], "--model-name", model, "--expected-version", "7"],
            tmp_path,
            env,
        ),
        "points at version 1, not at the expected version 7",
    )
    mlflow_client = client(mlflow_server)
    assert mlflow_client.get_registered_model(model).aliases == {"champion": "1"}
    versions = mlflow_client.search_model_versions(f"name = '{model}'")
    assert len(versions) == 1, "a lost race registers nothing"


def test_gate_rejected_candidate_is_refused(tmp_path: Path, mlflow_server: str) -> None:
    model, experiment = unique("promote-gated"), unique("exp")
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    run_id = logged_model_run(mlflow_server, experiment)
    client(mlflow_server).set_tag(run_id, "mlops.gate.verdict", "rejected")
    refused = run_cli(["promote", "--candidate", run_id, "--model-name", model], tmp_path, env)
    assert refused.returncode == 1
    assert_one_line_error(refused, "the gate rejected")


def test_a_runs_uri_promotes_the_model_it_names_or_nothing(
    tmp_path: Path, mlflow_server: str
) -> None:
    """runs:/<id>/<name> is that model of the run, never the run's newest; a wrong name fails."""
    import mlflow
    from sklearn.dummy import DummyClassifier

    model, experiment = unique("promote-runs-uri"), unique("exp")
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment(experiment)
    fitted = DummyClassifier().fit([[0.0], [1.0]], [0, 1])
    with mlflow.start_run() as run:
        first = mlflow.sklearn.log_model(fitted, name="model", pip_requirements=["scikit-learn"])
        mlflow.sklearn.log_model(
            fitted, name="other", pip_requirements=["scikit-learn"]
        )  # the newest
    run_id = run.info.run_id

    missing = run_cli(
        ["promote", "--candidate", f"runs:/{run_id}/nosuch", "--model-name", model], tmp_path, env
    )
    assert missing.returncode == 2, missing.output
    assert_one_line_error(missing, "logged no model named 'nosuch'")
    assert client(mlflow_server).search_registered_models(f"name = '{model}'") == []

    named = run_cli(
        ["promote", "--candidate", f"runs:/{run_id}/model", "--model-name", model], tmp_path, env
    )
    assert named.returncode == 0, named.output
    version = client(mlflow_server).get_model_version(model, named.outputs()["version"])
    assert version.tags["mlops.source.model_uri"] == f"models:/{first.model_id}"


def test_promote_action_then_rollback_mode(tmp_path: Path, mlflow_server: str) -> None:
    model, experiment = unique("promote-action"), unique("exp")
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    runs = [logged_model_run(mlflow_server, experiment) for _ in range(2)]
    action = ROOT / "actions" / "promote"
    for index, run in enumerate(runs):
        moved = run_action(
            action,
            {"candidate": run, "model-name": model, "alias": "challenger"},
            workspace=tmp_path,
            env=env,
        )
        assert moved.outcome == "success", moved.log
        assert moved.outputs["version"] == str(index + 1)
        assert moved.outputs["alias-uri"] == f"models:/{model}@challenger"
        assert "### 🚀 promote" in moved.summary
    back = run_action(
        action,
        {"mode": "rollback", "model-name": model, "alias": "challenger"},
        workspace=tmp_path,
        env=env,
    )
    assert back.outcome == "success", back.log
    assert back.outputs["version"] == "1"
    assert back.outputs["previous-version"] == "2"
    assert "| 3 |" in back.summary
    assert "| rollback | 2 | 1 |" in back.summary
    wrong = run_action(action, {"mode": "demote", "model-name": model}, workspace=tmp_path, env=env)
    assert wrong.outcome == "failure"
    assert "input 'mode' must be promote or rollback" in wrong.log


# ----------------------------------------------------------------------------- faults


@pytest.fixture
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A tracking server of this test's own, which it may kill and restart."""
    workdir = tmp_path_factory.mktemp("mlflow-own")
    service = start_mlflow_server(f"sqlite:///{workdir / 'store.db'}", workdir)
    yield service
    stop(service.process)


def restart_in_background(service: Service) -> Callable[[], None]:
    """Kill the server now and start it again on the same port, without waiting for it."""

    def kill_and_restart() -> None:
        stop(service.process)
        port = int(service.url.rsplit(":", 1)[1])

        def start() -> None:
            restarted = start_mlflow_server(
                f"sqlite:///{service.workdir / 'store.db'}", service.workdir, port
            )
            service.process = restarted.process

        threading.Thread(target=start, daemon=True).start()

    return kill_and_restart


ALIAS_MOVE = r"POST /api/2\.0/mlflow/registered-models/alias"


def test_server_restarted_during_a_promotion(tmp_path: Path, own_server: Service) -> None:
    model, experiment = unique("promote-restart"), unique("exp")
    first_run, second_run = (logged_model_run(own_server.url, experiment) for _ in range(2))
    proxy = FaultProxy(own_server.url)
    server = proxy.serve()
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=proxy.url)
    try:
        # A 5xx on the first alias move is retried.
        proxy.faults.append(Fault(ALIAS_MOVE, status=503, times=2))
        first = promote(tmp_path, env, "--candidate", first_run, "--model-name", model)
        assert first.returncode == 0, first.stderr
        assert proxy.count(ALIAS_MOVE) == 3
        # The server is killed just as the second move is sent, and comes back later.
        proxy.faults.append(Fault(ALIAS_MOVE, before=restart_in_background(own_server)))
        second = promote(tmp_path, env, "--candidate", second_run, "--model-name", model)
        assert second.returncode == 0, second.stderr
    finally:
        server.shutdown()
    assert any(status == 502 for _, status in proxy.seen), "the server really was down"
    mlflow_client = client(own_server.url)
    assert mlflow_client.get_registered_model(model).aliases == {"champion": "2"}
    moves = json.loads(
        run_cli(
            ["registry", "history", "--model-name", model, "--json"],
            tmp_path,
            clean_env(tmp_path, MLFLOW_TRACKING_URI=own_server.url),
        ).stdout
    )
    assert [(m["from_version"], m["to_version"], m["state"]) for m in moves] == [
        (None, "1", "done"),
        ("1", "2", "done"),
    ]
    names = [m.name for m in mlflow_client.search_registered_models()]
    assert not [n for n in names if n.startswith("mlops-lock--")]


def test_a_server_that_stays_down_leaves_the_alias_unchanged(
    tmp_path: Path, own_server: Service
) -> None:
    model, experiment = unique("promote-down"), unique("exp")
    runs = [logged_model_run(own_server.url, experiment) for _ in range(2)]
    direct = clean_env(tmp_path, MLFLOW_TRACKING_URI=own_server.url)
    assert promote(tmp_path, direct, "--candidate", runs[0], "--model-name", model).returncode == 0
    proxy = FaultProxy(own_server.url, faults=[Fault(ALIAS_MOVE, status=503, times=-1)])
    server = proxy.serve()
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=proxy.url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="1")
    try:
        failed = run_cli(["promote", "--candidate", runs[1], "--model-name", model], tmp_path, env)
    finally:
        server.shutdown()
    assert failed.returncode == 3, failed.output
    assert_one_line_error(failed, f"MLflow tracking server {proxy.url}", "server error")
    mlflow_client = client(own_server.url)
    assert mlflow_client.get_registered_model(model).aliases == {"champion": "1"}
    # The history shows no move that did not happen, and the next promotion settles it.
    shown = run_cli(["registry", "history", "--model-name", model, "--json"], tmp_path, direct)
    assert [m["to_version"] for m in json.loads(shown.stdout)] == ["1"]
    retried = promote(tmp_path, direct, "--candidate", runs[1], "--model-name", model)
    assert retried.returncode == 0, retried.stderr
    moves = json.loads(
        run_cli(["registry", "history", "--model-name", model, "--json"], tmp_path, direct).stdout
    )
    assert [(m["from_version"], m["to_version"]) for m in moves] == [(None, "1"), ("1", "2")]


def test_gate_chart_follows_the_alias_history(tmp_path: Path, mlflow_server: str) -> None:
    model, experiment = unique("promote-chart"), unique("exp")
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    first, second, candidate = (
        logged_model_run(mlflow_server, experiment, {"accuracy": value})
        for value in (0.90, 0.95, 0.97)
    )
    assert promote(tmp_path, env, "--candidate", first, "--model-name", model).returncode == 0
    assert promote(tmp_path, env, "--candidate", second, "--model-name", model).returncode == 0
    assert run_cli(["rollback", "--model-name", model], tmp_path, env).returncode == 0
    rules = '[{"metric": "accuracy", "direction": "higher", "threshold": 0.5}]'
    gated = run_cli(
        ["evaluate", "--candidate", candidate, "--model-name", model, "--rules", rules],
        tmp_path,
        env,
    )
    assert gated.returncode == 0, gated.output
    text = Path(gated.outputs()["report-file"]).read_text()
    # v1 held the alias, then v2, then v1 again after the rollback: shown where it last took it.
    assert '  x-axis ["v2", "v1", "candidate"]' in text
    assert "  bar [0.95, 0.9, 0.97]" in text


def test_a_move_dispatches_a_deployment_event(
    tmp_path: Path, mlflow_server: str, github: FakeGitHub
) -> None:
    model, experiment = unique("promote-dispatch"), unique("exp")
    env = clean_env(
        tmp_path,
        MLFLOW_TRACKING_URI=mlflow_server,
        GITHUB_ACTIONS="true",
        GITHUB_REPOSITORY="acme/iris",
        GITHUB_API_URL=github.url,
        GITHUB_TOKEN=TOKEN,
        GITHUB_RUN_ID="5",
    )
    run = logged_model_run(mlflow_server, experiment)
    args = ["--candidate", run, "--model-name", model, "--dispatch-event", "deploy-model"]
    moved = promote(tmp_path, env, *args)
    assert moved.returncode == 0, moved.stderr
    promotion_id = outputs(moved.stdout)["promotion-id"]
    assert len(promotion_id) == 32
    (dispatch,) = github.dispatches
    moved_at = dispatch["client_payload"].pop("moved_at")
    assert abs(datetime.fromisoformat(moved_at).timestamp() - time.time()) < 120
    # The keys of the relay's payload (one deploy workflow takes both), GitHub's ten at most.
    assert dispatch == {
        "event_type": "deploy-model",
        "client_payload": {
            "model": model,
            "version": "1",
            "alias": "champion",
            "model_uri": f"models:/{model}/1",
            "event": "mlops-actions.promote",
            "moved_by": "mlops-actions promote (https://github.com/acme/iris/actions/runs/5)",
            "previous_version": "",
            "promotion_id": promotion_id,
            "reason": "promote",
        },
    }
    unchanged = promote(tmp_path, env, *args)
    assert unchanged.returncode == 0, unchanged.stderr
    assert len(github.dispatches) == 1, "no event when nothing moved"


def test_gate_provenance_default_expectation_and_legacy_stages(
    tmp_path: Path, mlflow_server: str
) -> None:
    model, experiment = unique("promote-stages"), unique("exp")
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    mlflow_client = client(mlflow_server)
    runs = [logged_model_run(mlflow_server, experiment) for _ in range(2)]
    for index, run in enumerate(runs):
        # What the gate leaves on a candidate it passed: the verdict and what it compared with.
        gate_tags = {
            "mlops.gate.verdict": "passed",
            "mlops.gate.alias": "champion",
            "mlops.gate.champion_version": str(index) if index else "none",
            "mlops.gate.workflow_run_url": f"https://github.com/acme/iris/actions/runs/{index}",
        }
        for key, value in gate_tags.items():
            mlflow_client.set_tag(run, key, value)
        moved = promote(
            tmp_path, env, "--candidate", run, "--model-name", model, "--stage", "Production"
        )
        assert moved.returncode == 0, moved.stderr
    first, second = (mlflow_client.get_model_version(model, v) for v in ("1", "2"))
    assert second.current_stage == "Production"
    assert first.current_stage == "Archived", "the previous holder is archived"
    assert second.tags["mlops.gate.verdict"] == "passed"
    assert second.tags["mlops.gate.link"] == "https://github.com/acme/iris/actions/runs/1"
    assert "gate: passed (https://github.com/acme/iris/actions/runs/1)" in second.description
    # A candidate gated against v1, which no longer holds the alias, is refused by default.
    late = logged_model_run(mlflow_server, experiment)
    for key, value in {"mlops.gate.alias": "champion", "mlops.gate.champion_version": "1"}.items():
        mlflow_client.set_tag(late, key, value)
    stale = promote(tmp_path, env, "--candidate", late, "--model-name", model)
    assert stale.returncode == 4, stale.stderr
    assert "not at the expected version 1" in stale.stderr


def test_locks_wait_expire_and_can_be_removed(tmp_path: Path, mlflow_server: str) -> None:
    model, experiment = unique("promote-lock"), unique("exp")
    mlflow_client = client(mlflow_server)
    run = logged_model_run(mlflow_server, experiment)
    lock = f"mlops-lock--{model}--champion"
    env = clean_env(
        tmp_path, MLFLOW_TRACKING_URI=mlflow_server, MLOPS_PROMOTE_LOCK_WAIT_SECONDS="0"
    )
    # A live lock (another promotion in progress) makes this one fail, naming the holder.
    mlflow_client.create_registered_model(
        lock,
        tags={
            "mlops.lock.token": "other",
            "mlops.lock.expires": str(time.time() + 600),
            "mlops.lock.holder": "https://github.com/acme/iris/actions/runs/1",
        },
    )
    busy = run_cli(["promote", "--candidate", run, "--model-name", model], tmp_path, env)
    assert busy.returncode == 4
    assert_one_line_error(busy, "another promotion", "actions/runs/1", "registry unlock")
    assert not mlflow_client.search_model_versions(f"name = '{model}'")
    unlocked = run_cli(["registry", "unlock", "--model-name", model], tmp_path, env)
    assert unlocked.returncode == 0, unlocked.output
    # A lock whose holder died (expired) is taken over.
    mlflow_client.create_registered_model(
        lock, tags={"mlops.lock.token": "dead", "mlops.lock.expires": str(time.time() - 1)}
    )
    moved = promote(tmp_path, env, "--candidate", run, "--model-name", model)
    assert moved.returncode == 0, moved.stderr
    names = [m.name for m in mlflow_client.search_registered_models()]
    assert lock not in names


# ----------------------------------------------------------------------------- registry history


def github_env(tmp_path: Path, tracking_uri: str, actor: str, sha: str) -> dict[str, str]:
    """A runner's variables, so that each move records a commit, an actor and a workflow run."""
    return clean_env(
        tmp_path,
        MLFLOW_TRACKING_URI=tracking_uri,
        GITHUB_ACTIONS="true",
        GITHUB_OUTPUT=str(tmp_path / "output"),
        GITHUB_STEP_SUMMARY=str(tmp_path / "summary"),
        GITHUB_SERVER_URL="https://github.com",
        GITHUB_REPOSITORY="acme/iris",
        GITHUB_RUN_ID="77",
        GITHUB_SHA=sha,
        GITHUB_ACTOR=actor,
    )


def test_history_table_has_a_header_for_every_column(tmp_path: Path, mlflow_server: str) -> None:
    from mlops_actions.cli.registry_cmds import HISTORY_COLUMNS

    model, experiment = unique("history"), unique("exp")
    runs = [logged_model_run(mlflow_server, experiment) for _ in range(2)]
    for number, run in enumerate(runs, 1):
        env = github_env(tmp_path, mlflow_server, f"dev{number}", f"{number}" * 40)
        moved = promote(tmp_path, env, "--candidate", run, "--model-name", model)
        assert moved.returncode == 0, moved.stderr
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    shown = run_cli(["registry", "history", "--model-name", model], tmp_path, env)
    assert shown.returncode == 0, shown.output
    header, *rows = shown.stdout.splitlines()
    # Every value stands under a header of its own: cut each row at the header's columns.
    starts = [header.index(name) for name in HISTORY_COLUMNS]
    assert starts == sorted(starts)
    cells = [
        [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)] for row in rows
    ]
    run_url = "https://github.com/acme/iris/actions/runs/77"
    assert [(c[0], c[2], c[3], c[4], c[5], c[6], c[7]) for c in cells] == [
        ("1", "promote", "-", "1", "1" * 12, "dev1", run_url),
        ("2", "promote", "1", "2", "2" * 12, "dev2", run_url),
    ]
    assert all(cell and "  " not in cell for row in cells for cell in row), shown.stdout


def test_history_is_read_without_importing_mlflow(tmp_path: Path, mlflow_server: str) -> None:
    """Importing mlflow takes seconds; over HTTP the history is one GET with the same result."""
    from mlops_actions import promote as promote_core

    model, experiment = unique("history-light"), unique("exp")
    runs = [logged_model_run(mlflow_server, experiment) for _ in range(2)]
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    for run in runs:
        assert promote(tmp_path, env, "--candidate", run, "--model-name", model).returncode == 0
    script = (
        "import sys\n"
        "from mlops_actions.cli import main\n"
        f"code = main(['registry', 'history', '--model-name', '{model}', '--json'])\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'mlflow'], 'mlflow imported'\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [str(BIN / "python"), "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    expected = promote_core.history_of(client(mlflow_server), model, "champion")
    assert json.loads(done.stdout) == promote_core.as_dicts(expected)
    assert [(m["from_version"], m["to_version"]) for m in json.loads(done.stdout)] == [
        (None, "1"),
        ("1", "2"),
    ]


HISTORY_READ = r"GET /api/2\.0/mlflow/registered-models/get"


def test_history_over_http_handles_auth_retries_and_absence(
    tmp_path: Path, mlflow_server: str
) -> None:
    model, experiment = unique("history-http"), unique("exp")
    run = logged_model_run(mlflow_server, experiment)
    direct = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    assert promote(tmp_path, direct, "--candidate", run, "--model-name", model).returncode == 0
    proxy = FaultProxy(mlflow_server, require_authorization="Bearer s3cret")
    server = proxy.serve()
    history = ["registry", "history", "--model-name", model, "--json"]
    try:
        # The token MLflow would send is sent; 5xx answers are retried.
        env = clean_env(tmp_path, MLFLOW_TRACKING_URI=proxy.url, MLFLOW_TRACKING_TOKEN="s3cret")
        proxy.faults.append(Fault(HISTORY_READ, status=503, times=2))
        shown = run_cli(history, tmp_path, {**env, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0.1"})
        assert shown.returncode == 0, shown.output
        assert [m["to_version"] for m in json.loads(shown.stdout)] == ["1"]
        assert proxy.count(HISTORY_READ) == 3
        # No token: 401, named as such.
        no_token = {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_TOKEN"}
        refused = run_cli(history, tmp_path, no_token)
        assert refused.returncode == 3, refused.output
        assert_one_line_error(refused, f"MLflow tracking server {proxy.url}", "HTTP 401")
        # A server that keeps failing is reported after the retries.
        proxy.faults.append(Fault(HISTORY_READ, status=503, times=-1))
        failing = run_cli(history, tmp_path, {**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"})
        assert failing.returncode == 3, failing.output
        assert_one_line_error(failing, "server error")
    finally:
        server.shutdown()
    missing = run_cli(["registry", "history", "--model-name", unique("nope")], tmp_path, direct)
    assert missing.returncode == 2, missing.output
    assert_one_line_error(missing, "MLflow found nothing", "RESOURCE_DOES_NOT_EXIST")
