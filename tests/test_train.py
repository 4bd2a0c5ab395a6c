"""train against a real MLflow tracking server: tags, statuses, exit codes, signals, projects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_actions.errors import EXIT_REJECTED, EXIT_TRAINING_FAILED
from tests.conftest import BIN, assert_one_line_error, clean_env, run_cli
from tests.fault_proxy import Fault, FaultProxy

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


def test_project_parameters_are_recorded_as_given_not_shell_quoted(
    housing: Path, tmp_path: Path, mlflow_server: str
) -> None:
    """MLflow quotes values for the command line; the run must hold what the script received."""
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    runs = {}
    for name, parameters in (("default", "alpha=0.5"), ("spaced", "drop=rooms, area_m2")):
        result = run_cli(
            ["train", "--experiment", "train-quoting", "--parameters", parameters], housing, env
        )
        assert result.returncode == 0, result.output
        runs[name] = mlflow_client(mlflow_server).get_run(result.outputs()["run-id"])
    assert runs["default"].data.params["drop"] == ""  # the MLproject's empty default, not "''"
    assert runs["default"].data.params["alpha"] == "0.5"
    assert runs["spaced"].data.params["drop"] == "rooms, area_m2"
    assert runs["spaced"].data.params["features"] == "age_years,distance_km"


def test_infinite_metrics_reach_the_metrics_output_as_infinite(
    example: Path, tmp_path: Path, mlflow_server: str
) -> None:
    """The SQL store keeps inf as float max; the output says inf, in JSON that parses."""
    script = tmp_path / "log.py"
    script.write_text(
        "import mlflow\n"
        "with mlflow.start_run():\n"
        "    mlflow.log_metrics({'loss': float('inf'), 'gain': float('-inf'), 'acc': 0.5})\n"
    )
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    command = f"{BIN / 'python'} {script}"
    result = run_cli(["train", "--experiment", "train-inf", "--command", command], example, env)
    assert result.returncode == 0, result.output
    metrics = json.loads(result.outputs()["metrics"])
    assert metrics == {"loss": "inf", "gain": "-inf", "acc": 0.5}
    assert "1.79" not in result.outputs()["metrics"]


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
    assert result.returncode == 2  # refused before any request: see tests/test_inputs.py
    assert_one_line_error(result, "input 'tracking-uri' has credentials", "MLFLOW_TRACKING_USER")
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


# ----------------------------------------------------------------------------- cancellation
#
# The signal is sent by the fault proxy just before it forwards a chosen request, so it lands
# while that request is in flight, or by the test once a file the training writes exists:
# deterministic points, no sleeps to guess them.


class Cli:
    """The CLI started in the background. Its output goes to files, not pipes: a process it
    failed to end would hold a pipe open, and reading it would hang instead of failing."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.out, self.err = logs / "stdout", logs / "stderr"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(
                [str(BIN / "mlops-actions"), *args], cwd=cwd, env=env, stdout=out, stderr=err
            )

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def poll(self) -> int | None:
        return self.process.poll()

    def finish(self, timeout: float = 600) -> tuple[str, str]:
        try:
            self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        return self.out.read_text(), self.err.read_text()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode


def _wait_for(path: Path, process: Cli) -> None:
    """Until the training wrote `path` (bounded, so a broken start fails instead of hanging)."""
    deadline = time.monotonic() + 300
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.exists(), "the training never got that far"


def _statuses(client, experiment: str) -> list[str]:  # type: ignore[no-untyped-def]
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return [r.info.status for r in client.search_runs([found.experiment_id])]


@pytest.fixture
def proxy(mlflow_server: str) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the session's tracking server."""
    proxied = FaultProxy(mlflow_server)
    server = proxied.serve()
    yield proxied
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("request_pattern", "runs"),
    [
        # Before the run exists: the step ends at once and creates nothing.
        (r"^GET /api/2\.0/mlflow/experiments/get-by-name", []),
        # The run is being created: the request finishes, then the run is closed KILLED.
        (r"^POST /api/2\.0/mlflow/runs/create", ["KILLED"]),
        # The training is over and its results are read, or the run is being closed FINISHED.
        (r"^GET /api/2\.0/mlflow/runs/get", ["KILLED"]),
        (r"^POST /api/2\.0/mlflow/runs/update", ["KILLED"]),
    ],
    ids=["looking-up-experiment", "creating-run", "reading-results", "closing-run"],
)
def test_sigterm_while_a_request_is_in_flight_never_leaves_a_run_running(
    request_pattern: str,
    runs: list[str],
    tmp_path: Path,
    mlflow_server: str,
    proxy: FaultProxy,
) -> None:
    experiment = f"train-sigterm-{tmp_path.name}"
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=proxy.url)
    started: list[Cli] = []
    proxy.faults.append(
        Fault(request_pattern, before=lambda: started[0].send_signal(signal.SIGTERM))
    )
    started.append(
        Cli(
            ["train", "--experiment", experiment, "--command", "true"],
            tmp_path,
            env,
            tmp_path / "cli",
        )
    )
    stdout, stderr = started[0].finish()
    assert proxy.faults[0].times == 0, proxy.seen  # the signal came during that request
    assert _statuses(mlflow_client(mlflow_server), experiment) == runs, stdout + stderr
    assert started[0].returncode == 128 + signal.SIGTERM, stdout + stderr
    assert "Traceback" not in stderr
    if runs:
        assert "status: KILLED" in stdout


def _start_time(pid: int) -> str | None:
    """The process's start time (tells it from a later process with its pid), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]


# Each writes "pid start-time" of a `sleep 1000` in a session of its own to orphan.pid, then
# goes on. The start time is read by the spawner: the step may end the orphan before we look.
SETSID = (
    'setsid sh -c \'echo $$ $(cut -d" " -f22 /proc/$$/stat) > orphan.tmp && '
    "mv orphan.tmp orphan.pid; exec sleep 1000' & "
    "while [ ! -e orphan.pid ]; do sleep 0.1; done"
)
# The parent exits at once: the orphan is re-parented, out of any walk of the training's tree.
NEW_SESSION = (
    'python -c "import os, subprocess; '
    "p = subprocess.Popen(['sleep', '1000'], start_new_session=True); "
    "s = open('/proc/%d/stat' % p.pid).read(); "
    "open('orphan.tmp', 'w').write('%d %s' % (p.pid, s[s.rfind(')') + 2 :].split()[19])); "
    "os.replace('orphan.tmp', 'orphan.pid')\""
)


@pytest.mark.parametrize(
    ("spawn", "cancel"),
    [(SETSID, True), (NEW_SESSION, True), (SETSID, False), (NEW_SESSION, False)],
    ids=["setsid-cancelled", "new-session-cancelled", "setsid-exited", "new-session-exited"],
)
def test_processes_in_a_new_session_do_not_outlive_the_step(
    spawn: str, cancel: bool, tmp_path: Path, mlflow_server: str
) -> None:
    experiment = f"train-orphans-{tmp_path.name}"
    orphan_file = tmp_path / "orphan.pid"
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    command = f"{spawn}; sleep 120" if cancel else spawn
    process = Cli(
        ["train", "--experiment", experiment, "--command", command], tmp_path, env, tmp_path / "cli"
    )
    orphan: int | None = None
    try:
        _wait_for(orphan_file, process)
        pid, born = orphan_file.read_text().split()
        orphan = int(pid)
        if cancel:
            process.send_signal(signal.SIGTERM)
        stdout, stderr = process.finish()
        assert process.returncode == (128 + signal.SIGTERM if cancel else 0), stdout + stderr
        assert _start_time(orphan) != born, "the process in a new session outlived the step"
        expected = "KILLED" if cancel else "FINISHED"
        assert _statuses(mlflow_client(mlflow_server), experiment) == [expected]
    finally:
        if process.poll() is None:
            process.process.kill()
        if orphan is not None and _start_time(orphan) is not None:
            os.kill(orphan, signal.SIGKILL)  # do not leave it behind when the test fails


# ----------------------------------------------------------------------------- `run`

QUICK_METRICS = (
    'python -c "import mlflow; mlflow.start_run(); '
    "mlflow.log_metrics({'accuracy': 0.95, 'log_loss': 0.1})\""
)


def test_run_tells_a_failed_training_from_a_rejected_gate(
    example: Path, tmp_path: Path, mlflow_server: str
) -> None:
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    model = f"run-codes-{tmp_path.name}"
    crashed = run_cli(
        ["run", "--experiment", model, "--model-name", model, "--command", "exit 3"], example, env
    )
    assert crashed.returncode == EXIT_TRAINING_FAILED, crashed.output
    assert_one_line_error(crashed, "exit status 3", "FAILED")
    strict = json.dumps([{"metric": "accuracy", "direction": "higher", "threshold": 1.01}])
    rejected = run_cli(
        ["run", "--experiment", model, "--model-name", model, "--rules", strict], example, env
    )
    assert rejected.returncode == EXIT_REJECTED, rejected.output
    assert EXIT_TRAINING_FAILED not in {EXIT_REJECTED, 2, 3, 4, 70, 130, 143}


def test_run_help_documents_its_exit_codes(tmp_path: Path) -> None:
    result = run_cli(["run", "--help"], tmp_path, clean_env(tmp_path))
    assert result.returncode == 0
    assert f"{EXIT_TRAINING_FAILED}        the training command failed" in result.stdout
    assert "130/143  cancelled" in result.stdout


@pytest.mark.parametrize("verb", ["train", "run"])
def test_sigint_exits_130_and_marks_the_run_killed(
    verb: str, example: Path, tmp_path: Path, mlflow_server: str
) -> None:
    """Ctrl-C reports 130 (not the 143 of the SIGTERM forwarded to the child), alone or in run."""
    experiment = f"{verb}-sigint-{tmp_path.name}"
    marker = tmp_path / "started"
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    process = Cli(
        [verb, "--experiment", experiment, "--command", f"touch {marker}; sleep 120"],
        example,
        env,
        tmp_path / "cli",
    )
    _wait_for(marker, process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.finish()
    assert process.returncode == 128 + signal.SIGINT, stdout + stderr
    assert _statuses(mlflow_client(mlflow_server), experiment) == ["KILLED"]
    if verb == "train":
        assert "status: KILLED" in stdout


def test_run_cancelled_in_the_evaluate_stage_exits_143_on_sigterm(
    example: Path, tmp_path: Path, proxy: FaultProxy
) -> None:
    model = f"run-sigterm-{tmp_path.name}"
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=proxy.url)
    started: list[Cli] = []
    champion_lookup = r"^GET /api/2\.0/mlflow/registered-models/"  # the gate's first registry call
    proxy.faults.append(
        Fault(champion_lookup, before=lambda: started[0].send_signal(signal.SIGTERM))
    )
    started.append(
        Cli(
            ["run", "--experiment", model, "--model-name", model, "--command", QUICK_METRICS],
            example,
            env,
            tmp_path / "cli",
        )
    )
    stdout, stderr = started[0].finish()
    assert proxy.count(champion_lookup) >= 1, stderr
    assert started[0].returncode == 128 + signal.SIGTERM, stdout + stderr
    assert "stage 3/4: evaluate" in stderr
    assert "stage 4/4" not in stderr
    assert "Traceback" not in stderr
