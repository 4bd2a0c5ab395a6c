"""`mlops-actions relay`: a real `mlflow server` (SQLite store, webhooks on loopback) sends its
webhooks to the relay the user runs (`relay serve`, the CLI), which dispatches to the GitHub fake.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlops_actions import relay
from tests.conftest import (
    BIN,
    GITHUB_TEST_TOKEN,
    Service,
    clean_env,
    free_port,
    run_cli,
    start_mlflow_server,
    stop,
    wait_http,
)
from tests.github_fake import FakeGitHub

pytestmark = pytest.mark.services

SECRET = "relay-secret-for-tests-0123456789abcdef"
MODEL = "Modèle 'relay' ✓"  # quotes and unicode: the name travels through JSON and patterns
REPOSITORY = "octo-org/models"


@pytest.fixture(scope="module")
def webhook_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """An MLflow server that delivers webhooks to loopback, re-reading them every second."""
    workdir = tmp_path_factory.mktemp("mlflow-webhooks")
    env = {
        **os.environ,
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",  # loopback has no TLS here
    }
    service = start_mlflow_server(f"sqlite:///{workdir / 'store.db'}", workdir, env=env)
    yield service
    stop(service.process)


@pytest.fixture(scope="module")
def registered(webhook_mlflow: Service) -> dict[str, str]:
    """Three versions of MODEL and one of another model, by version number."""
    from mlflow import MlflowClient

    client = MlflowClient(webhook_mlflow.url)
    experiment = client.create_experiment(f"relay-{uuid.uuid4().hex[:6]}")
    run = client.create_run(experiment)
    client.set_terminated(run.info.run_id)
    for name in (MODEL, "other-model"):
        client.create_registered_model(name)
    versions = {}
    for _ in range(3):
        version = client.create_model_version(
            MODEL, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
        versions[version.version] = version.version
    client.create_model_version(
        "other-model", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    return versions


@dataclass
class RelayProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def deliveries(self, state: str = "") -> list[dict[str, Any]]:
        query = f"?state={state}" if state else ""
        with urllib.request.urlopen(f"{self.url}/deliveries{query}", timeout=10) as answer:
            return list(json.load(answer)["deliveries"])

    def post(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"{self.url}/webhook", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def metric(self, name: str, outcome: str) -> float:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        for line in text.splitlines():
            if line.startswith(f'{name}_total{{outcome="{outcome}"}}'):
                return float(line.split()[-1])
        return 0.0


def relay_env(tmp_path: Path, github: FakeGitHub, **extra: str) -> dict[str, str]:
    return clean_env(
        tmp_path,
        MLOPS_RELAY_SECRET=SECRET,
        GITHUB_TOKEN=GITHUB_TEST_TOKEN,
        GITHUB_API_URL=github.url,
        **extra,
    )


@pytest.fixture
def start_relay(
    tmp_path: Path, github: FakeGitHub, webhook_mlflow: Service
) -> Iterator[Callable[..., RelayProcess]]:
    started: list[RelayProcess] = []

    def start(*extra: str, state: str = "state") -> RelayProcess:
        port = free_port()
        log = tmp_path / f"relay-{port}.log"
        argv = [
            str(BIN / "mlops-actions"),
            "relay",
            "serve",
            "--port",
            str(port),
            "--repository",
            REPOSITORY,
            "--model",
            "Modèle*",
            "--tracking-uri",
            webhook_mlflow.url,
            "--state-dir",
            str(tmp_path / state),
            *extra,
        ]
        with log.open("wb") as sink:
            process = subprocess.Popen(
                argv,
                cwd=tmp_path,
                env=relay_env(tmp_path, github),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", process, 60, log)
        started.append(RelayProcess(url, process, log))
        return started[-1]

    yield start
    for relay_process in started:
        if relay_process.process.poll() is None:
            stop(relay_process.process)
        assert SECRET not in relay_process.log.read_text()
        assert GITHUB_TEST_TOKEN not in relay_process.log.read_text()


def signed(
    body: dict[str, Any], secret: str = SECRET, at: float | None = None, delivery: str = ""
) -> tuple[dict[str, str], bytes]:
    """Headers and body as MLflow sends them, signed by MLflow's own signer."""
    from mlflow.webhooks.delivery import _generate_hmac_signature

    text = json.dumps(body)
    delivery_id = delivery or str(uuid.uuid4())
    timestamp = str(int(time.time() if at is None else at))
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, timestamp, text),
    }
    return headers, text.encode()


def alias_moved(version: str, model: str = MODEL, alias: str = "champion") -> dict[str, Any]:
    return {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "data": {"name": model, "alias": alias, "version": version},
    }


def wait_for(condition: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or condition}")


def settle(github: FakeGitHub, count: int, quiet: float = 3.0) -> list[dict[str, Any]]:
    """The dispatches once `count` have arrived and no more came for `quiet` seconds."""
    wait_for(lambda: len(github.dispatches) >= count, what=f"{count} dispatches")
    time.sleep(quiet)
    return list(github.dispatches)


def register(
    tmp_path: Path, github: FakeGitHub, mlflow_url: str, relay_url: str, *extra: str
) -> Any:
    return run_cli(
        [
            "relay",
            "register",
            "--url",
            f"{relay_url}/webhook",
            "--tracking-uri",
            mlflow_url,
            *extra,
        ],
        tmp_path,
        relay_env(tmp_path, github),
    )


def test_an_alias_moved_in_mlflow_starts_one_dispatch_and_suite_moves_none(
    tmp_path: Path,
    github: FakeGitHub,
    webhook_mlflow: Service,
    registered: dict[str, str],
    start_relay: Callable[..., RelayProcess],
) -> None:
    from mlflow import MlflowClient

    relay_process = start_relay()
    created = register(tmp_path, github, webhook_mlflow.url, relay_process.url, "--test")
    assert created.returncode == 0, created.output
    assert created.outputs()["webhook-action"] == "created"
    again = register(tmp_path, github, webhook_mlflow.url, relay_process.url)
    assert again.returncode == 0, again.output
    assert again.outputs() == {**created.outputs(), "webhook-action": "updated"}
    client = MlflowClient(webhook_mlflow.url)
    hooks = [h for h in client.list_webhooks() if h.name == "mlops-actions-relay"]
    assert len(hooks) == 1
    assert SECRET not in created.output + again.output
    # MLflow's test delivery (example_model) reached the relay, signed: ignored, not dispatched.
    assert relay_process.metric("mlops_relay_deliveries", "ignored") >= 1
    time.sleep(1.5)  # past MLFLOW_WEBHOOK_CACHE_TTL: the server reads the new webhook

    # A person moves @champion: one dispatch with what the deploy workflow needs.
    client.set_registered_model_alias(MODEL, "champion", "1")
    (dispatch,) = settle(github, 1)
    assert dispatch["event_type"] == relay.EVENT_TYPE
    payload = dispatch["client_payload"]
    assert {k: payload[k] for k in ("model", "version", "alias", "model_uri", "event")} == {
        "model": MODEL,
        "version": "1",
        "alias": "champion",
        "model_uri": f"models:/{MODEL}/1",
        "event": "model_version_alias.created",
    }
    assert payload["moved_by"] == "mlflow-webhook"
    assert payload["delivery_id"]
    assert github.calls("POST", f"^/repos/{REPOSITORY}/dispatches$")
    # Moves the rules leave out: another alias, another model.
    client.set_registered_model_alias(MODEL, "challenger", "2")
    client.set_registered_model_alias("other-model", "champion", "1")

    # The suite's own move (rollback here, promote alike) is not relayed: its workflow builds.
    rolled = run_cli(
        [
            "rollback",
            "--model-name",
            MODEL,
            "--to-version",
            "2",
            "--tracking-uri",
            webhook_mlflow.url,
        ],
        tmp_path,
        relay_env(tmp_path, github),
    )
    assert rolled.returncode == 0, rolled.output
    skipped = wait_for(lambda: relay_process.deliveries("skipped"), what="a skipped delivery")
    assert skipped[0]["version"] == "2"
    assert "moved by mlops-actions" in skipped[0]["detail"]
    # A person moving the alias back to a version the suite once promoted is relayed: the
    # suite's history entry explains one move only.
    client.set_registered_model_alias(MODEL, "champion", "3")
    settle(github, 2, quiet=0)  # MLflow delivers from a thread pool: keep the order known
    client.set_registered_model_alias(MODEL, "champion", "2")
    dispatches = settle(github, 3)
    assert [d["client_payload"]["version"] for d in dispatches] == ["1", "3", "2"]
    assert relay_process.metric("mlops_relay_dispatches", "suite_move") == 1
    assert relay_process.metric("mlops_relay_deliveries", "ignored") >= 3


def test_bad_stale_replayed_and_foreign_deliveries_make_no_dispatch(
    github: FakeGitHub, registered: dict[str, str], start_relay: Callable[..., RelayProcess]
) -> None:
    relay_process = start_relay("--include-suite-moves")
    cases = {
        "bad signature": (*signed(alias_moved("1"), secret="not-the-secret-0123456789"), 401),
        "stale": (*signed(alias_moved("1"), at=time.time() - 3600), 401),
        "from the future": (*signed(alias_moved("1"), at=time.time() + 3600), 401),
        "another model": (*signed(alias_moved("1", model="other-model")), 200),
        "another alias": (*signed(alias_moved("1", alias="challenger")), 200),
        "not a webhook payload": (*signed({"x": 1}), 400),
    }
    for what, (headers, body, status) in cases.items():
        answer = relay_process.post(headers, body)
        assert answer[0] == status, (what, answer)
        assert "refused" in answer[1]["status"] or answer[1]["status"] == "ignored", what
    tampered_headers, tampered = signed(alias_moved("1"))
    answer = relay_process.post(tampered_headers, tampered.replace(b'"1"', b'"3"'))
    assert answer == (401, {"status": "refused", "reason": "bad_signature"})
    unsigned = relay_process.post({"Content-Type": "application/json"}, b"{}")
    assert unsigned == (400, {"status": "refused", "reason": "unsigned"})

    # One good delivery, then the same delivery again (a replay, or MLflow's retry).
    headers, body = signed(alias_moved("2"))
    first = relay_process.post(headers, body)
    second = relay_process.post(headers, body)
    assert first[0] == 202
    assert second == (200, {"status": "duplicate", "delivery_id": headers["X-MLflow-Delivery-Id"]})
    dispatches = settle(github, 1)
    assert [d["client_payload"]["version"] for d in dispatches] == ["2"]
    assert relay_process.metric("mlops_relay_deliveries", "bad_signature") == 2
    assert relay_process.metric("mlops_relay_deliveries", "stale") == 2


def test_github_down_is_retried_then_reported_and_the_relay_stays_up(
    github: FakeGitHub, registered: dict[str, str], start_relay: Callable[..., RelayProcess]
) -> None:
    relay_process = start_relay("--include-suite-moves", "--retries", "4")
    github.unavailable = 2  # two 503s, then GitHub answers
    assert relay_process.post(*signed(alias_moved("1")))[0] == 202
    (dispatch,) = settle(github, 1, quiet=1)
    assert dispatch["client_payload"]["version"] == "1"
    sent = relay_process.deliveries("sent")
    assert sent[0]["attempts"] == 3

    github.unavailable = 1000  # down for good: 4 attempts (1 + 2 + 4 s apart), then reported
    headers, body = signed(alias_moved("2"))
    assert relay_process.post(headers, body)[0] == 202
    failed = wait_for(lambda: relay_process.deliveries("failed"), timeout=60, what="a failure")
    assert failed[0]["id"] == headers["X-MLflow-Delivery-Id"]
    assert failed[0]["attempts"] == 4
    assert "503" in failed[0]["detail"]
    log = relay_process.log.read_text()
    assert "NOT dispatched after 4 attempt(s)" in log
    # Still up, and the next delivery goes through once GitHub is back.
    github.unavailable = 0
    with urllib.request.urlopen(f"{relay_process.url}/healthz", timeout=10) as health:
        assert health.status == 200
    assert relay_process.post(*signed(alias_moved("3")))[0] == 202
    dispatches = settle(github, 2, quiet=1)
    assert [d["client_payload"]["version"] for d in dispatches] == ["1", "3"]

    # A token GitHub refuses is not retried: one attempt, reported.
    github.forbidden.add("POST dispatches")
    assert relay_process.post(*signed(alias_moved("2")))[0] == 202
    wait_for(lambda: len(relay_process.deliveries("failed")) == 2, what="a second failure")
    assert relay_process.deliveries("failed")[0]["attempts"] == 1


def test_a_delivery_accepted_before_a_crash_is_sent_after_the_restart_once(
    github: FakeGitHub, registered: dict[str, str], start_relay: Callable[..., RelayProcess]
) -> None:
    first = start_relay("--include-suite-moves", "--retries", "100")
    github.unavailable = 10_000
    headers, body = signed(alias_moved("1"))
    assert first.post(headers, body)[0] == 202
    wait_for(lambda: github.calls("POST", "/dispatches"), what="a first attempt")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    github.unavailable = 0
    second = start_relay("--include-suite-moves")  # the same state directory
    (dispatch,) = settle(github, 1)
    assert dispatch["client_payload"]["delivery_id"] == headers["X-MLflow-Delivery-Id"]
    # MLflow's retry of that delivery after the restart is still recognised.
    assert second.post(headers, body)[0] == 200
    time.sleep(1)
    assert len(github.dispatches) == 1


def test_a_burst_of_200_deliveries_and_their_retries_makes_200_dispatches(
    github: FakeGitHub, registered: dict[str, str], start_relay: Callable[..., RelayProcess]
) -> None:
    # GitHub wants a second between writes (the default); the fake does not.
    relay_process = start_relay("--include-suite-moves", "--dispatch-interval", "0.02")
    deliveries = [signed(alias_moved(str(1 + n % 3))) for n in range(200)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        # Every delivery twice, concurrently: MLflow retries a delivery whose answer was slow.
        answers = list(pool.map(lambda d: relay_process.post(*d), deliveries + deliveries))
    answered = time.monotonic() - started
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 200 + [202] * 200
    dispatches = wait_for(lambda: len(github.dispatches) >= 200 and github.dispatches, 120)
    took = time.monotonic() - started
    time.sleep(2)
    ids = [d["client_payload"]["delivery_id"] for d in github.dispatches]
    assert sorted(ids) == sorted(h["X-MLflow-Delivery-Id"] for h, _ in deliveries)
    assert len(dispatches) == 200
    print(f"400 posts answered in {answered:.1f} s; 200 dispatches sent in {took:.1f} s")


@pytest.mark.parametrize(
    ("environment", "arguments", "needles"),
    [
        ({"MLOPS_RELAY_SECRET": ""}, (), ("MLOPS_RELAY_SECRET is not set",)),
        ({"MLOPS_RELAY_SECRET": "short"}, (), ("shorter than 16",)),
        ({"GITHUB_TOKEN": ""}, (), ("GITHUB_TOKEN is not set",)),
        ({}, ("--repository", "not a repo"), ("repository is 'not a repo'", "owner/name")),
        ({}, ("--port", "99999"), ("port is '99999'",)),
        ({}, ("--tracking-uri", "http://127.0.0.1:9"), ("MLflow registry", "cannot be read")),
    ],
)
def test_the_relay_refuses_to_start_without_what_it_needs(
    tmp_path: Path,
    github: FakeGitHub,
    environment: dict[str, str],
    arguments: tuple[str, ...],
    needles: tuple[str, ...],
) -> None:
    env = relay_env(tmp_path, github, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    env.update(environment)
    argv = ["relay", "serve", "--repository", REPOSITORY, "--model", "*", "--port", "1"]
    result = run_cli([*argv, *arguments], tmp_path, env, timeout=120)
    assert result.returncode in (2, 3), result.output
    for needle in needles:
        assert needle in result.output
    assert SECRET not in result.output
    assert GITHUB_TEST_TOKEN not in result.output


def test_register_names_what_is_wrong(
    tmp_path: Path, github: FakeGitHub, webhook_mlflow: Service
) -> None:
    no_url = run_cli(
        ["relay", "register", "--tracking-uri", webhook_mlflow.url],
        tmp_path,
        relay_env(tmp_path, github),
    )
    assert no_url.returncode == 2
    assert "url is not set" in no_url.output
    unreachable = register(tmp_path, github, webhook_mlflow.url, "http://127.0.0.1:9", "--test")
    assert unreachable.returncode == 3, unreachable.output
    assert "test delivery" in unreachable.output
    assert SECRET not in unreachable.output


def test_many_threads_moving_aliases_each_move_dispatched_once(
    github: FakeGitHub,
    webhook_mlflow: Service,
    registered: dict[str, str],
    start_relay: Callable[..., RelayProcess],
    tmp_path: Path,
) -> None:
    """MLflow delivers from a thread pool: moves made quickly are each relayed once."""
    from mlflow import MlflowClient

    relay_process = start_relay("--include-suite-moves")
    done = register(tmp_path, github, webhook_mlflow.url, relay_process.url)
    assert done.returncode == 0, done.output
    time.sleep(1.5)
    client = MlflowClient(webhook_mlflow.url)
    lock = threading.Lock()
    moves: list[str] = []

    def move(version: str) -> None:
        client.set_registered_model_alias(MODEL, "champion", version)
        with lock:
            moves.append(version)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(move, ["1", "2", "3"] * 4))
    dispatches = settle(github, 12)
    assert len(dispatches) == 12
    assert sorted(d["client_payload"]["version"] for d in dispatches) == sorted(moves)
