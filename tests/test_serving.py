"""The model server that goes into serving images, run as a real process on a real model:
MLflow's scoring protocol, limits, /metrics (checked by promtool), several workers, shutdown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, save_iris_model, service_unavailable, wait_http

SLOW_MODEL = """
import time
import mlflow.pyfunc


class Slow(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        time.sleep(float(model_input["seconds"].iloc[0]))
        return [1.5] * len(model_input)


mlflow.models.set_model(Slow())
"""


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_iris_model(tmp_path_factory.mktemp("iris") / "model", example_rows=3)


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow.pyfunc

    directory = tmp_path_factory.mktemp("slow")
    (directory / "slow.py").write_text(SLOW_MODEL)
    path = directory / "model"
    mlflow.pyfunc.save_model(str(path), python_model=str(directory / "slow.py"))
    return path


class Server:
    def __init__(self, model: Path, workdir: Path, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "scripts"),
            "MLSERVING_MODEL_DIR": str(model),
            "MLSERVING_HOST": "127.0.0.1",
            "MLSERVING_PORT": str(self.port),
            "MLSERVING_MODEL_NAME": "iris-classifier",
            "MLSERVING_MODEL_VERSION": "7",
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),
            **settings,
        }
        if settings.get("MLSERVING_WORKERS", "1") == "1":
            env.pop("PROMETHEUS_MULTIPROC_DIR")
        self.log = workdir / f"server-{self.port}.log"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlops_actions.serving"],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        wait_http(f"{self.url}/ping", self.process, 120, self.log)

    def request(
        self, path: str, body: bytes | None = None, content_type: str = "application/json"
    ) -> tuple[int, str]:
        request = urllib.request.Request(
            self.url + path, data=body, headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metrics(self) -> str:
        return self.request("/metrics")[1]

    def stop(self) -> bool:
        """SIGTERM; True if the server shut down by itself (uvicorn re-raises the signal after
        a graceful shutdown, so the status is -SIGTERM, as `docker stop` expects)."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        return code in (0, -signal.SIGTERM) and "Finished server process" in self.log.read_text()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[type[Server]]:
    started: list[Server] = []

    class Tracked(Server):
        def __init__(self, model: Path, **settings: str) -> None:
            super().__init__(model, tmp_path, **settings)
            started.append(self)

    yield Tracked
    for server in started:
        if server.process.poll() is None:
            server.process.kill()


def sample(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one sample in the exposition text."""
    for line in metrics_text.splitlines():
        if not line.startswith(name + ("{" if labels else " ")) and not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels} in:\n{metrics_text}")


COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
SETOSA, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]
RECORDS = [dict(zip(COLUMNS, row, strict=True)) for row in (SETOSA, VIRGINICA)]


def test_scoring_protocol_and_metrics(iris_model: Path, serve: type[Server]) -> None:
    server = serve(iris_model)
    assert server.request("/ping") == (200, "\n")
    assert server.request("/health")[0] == 200
    version = json.loads(server.request("/version")[1])
    assert version["model_name"] == "iris-classifier"
    assert version["model_version"] == "7"

    bodies = {
        "dataframe_split": {"columns": COLUMNS, "data": [SETOSA, VIRGINICA]},
        "dataframe_records": RECORDS,
        "instances": RECORDS,
        "inputs": {column: [SETOSA[i], VIRGINICA[i]] for i, column in enumerate(COLUMNS)},
    }
    for key, value in bodies.items():
        status, text = server.request("/invocations", json.dumps({key: value}).encode())
        assert (status, json.loads(text)) == (200, {"predictions": [0, 2]}), key
    example = (iris_model / "serving_input_example.json").read_bytes()
    assert server.request("/invocations", example)[0] == 200
    csv = (",".join(COLUMNS) + "\n" + ",".join(map(str, SETOSA)) + "\n").encode()
    assert server.request("/invocations", csv, "text/csv") == (200, '{"predictions": [0]}')

    assert server.request("/invocations", b'{"bogus": 1}')[0] == 400
    assert server.request("/invocations", b"a,b", "application/xml")[0] == 415

    text = server.metrics()
    invocations = {"endpoint": "/invocations", "method": "POST"}
    assert sample(text, "mlserving_requests_total", status_code="200", **invocations) == 6
    assert sample(text, "mlserving_requests_total", status_code="400", **invocations) == 1
    assert sample(text, "mlserving_requests_total", status_code="415", **invocations) == 1
    assert sample(text, "mlserving_request_duration_seconds_count", **invocations) == 8
    assert sample(text, "mlserving_prediction_duration_seconds_count") == 6
    assert sample(text, "mlserving_input_rows_sum") == 2 * 4 + 3 + 1
    assert sample(text, "mlserving_predictions_total", class_label="0") == 4 + 3 + 1
    assert sample(text, "mlserving_predictions_total", class_label="2") == 4
    assert sample(text, "mlserving_prediction_errors_total", error_type="bad_request") == 1
    assert (
        sample(text, "mlserving_prediction_errors_total", error_type="unsupported_media_type") == 1
    )
    assert sample(text, "mlserving_prediction_errors_total", error_type="timeout") == 0
    assert sample(text, "mlserving_requests_in_progress", endpoint="/invocations") == 0
    info = next(line for line in text.splitlines() if line.startswith("mlserving_model_info{"))
    assert 'model_name="iris-classifier"' in info
    assert 'model_version="7"' in info
    assert 'flavor="sklearn"' in info
    assert info.endswith(" 1.0")
    assert "/ping" not in text, "probes are not traffic"
    assert 'endpoint="/metrics"' not in text, "scrapes are not traffic"

    promtool = shutil.which("promtool")
    if promtool is None:
        service_unavailable("promtool (apt-get install prometheus)")
    assert promtool is not None
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert server.stop()


def test_limits_timeout_and_graceful_shutdown(slow_model: Path, serve: type[Server]) -> None:
    server = serve(slow_model, MLSERVING_TIMEOUT_SECONDS="1", MLSERVING_MAX_BODY_BYTES="200")
    payload = json.dumps({"dataframe_split": {"columns": ["seconds"], "data": [[0.2]]}}).encode()
    assert server.request("/invocations", payload) == (200, '{"predictions": [1.5]}')
    too_slow = json.dumps({"dataframe_split": {"columns": ["seconds"], "data": [[3]]}}).encode()
    status, text = server.request("/invocations", too_slow)
    assert status == 504
    assert "TIMEOUT" in text
    too_big = json.dumps({"dataframe_split": {"columns": ["seconds"], "data": [[0]] * 100}})
    assert server.request("/invocations", too_big.encode())[0] == 413
    text = server.metrics()
    assert sample(text, "mlserving_prediction_errors_total", error_type="timeout") == 1
    assert sample(text, "mlserving_prediction_errors_total", error_type="too_large") == 1
    assert sample(text, "mlserving_prediction_value_count") == 1  # a regression-like output

    # SIGTERM while a request is in flight: it is answered, then the server exits cleanly.
    in_flight: dict[str, tuple[int, str]] = {}
    half_second = json.dumps({"dataframe_split": {"columns": ["seconds"], "data": [[0.8]]}})
    worker = threading.Thread(
        target=lambda: in_flight.setdefault(
            "r", server.request("/invocations", half_second.encode())
        )
    )
    worker.start()
    wait_until_in_progress(server)
    assert server.stop()
    worker.join(timeout=30)
    assert in_flight["r"] == (200, '{"predictions": [1.5]}')


def wait_until_in_progress(server: Server) -> None:
    import time

    for _ in range(100):
        text = server.metrics()
        if sample(text, "mlserving_requests_in_progress", endpoint="/invocations") >= 1:
            return
        time.sleep(0.02)
    raise AssertionError("the request never started")


def test_several_workers_share_one_metrics_view(iris_model: Path, serve: type[Server]) -> None:
    server = serve(iris_model, MLSERVING_WORKERS="2")
    body = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [SETOSA]}}).encode()
    for _ in range(20):
        assert server.request("/invocations", body)[0] == 200
    text = server.metrics()
    invocations = {"endpoint": "/invocations", "method": "POST", "status_code": "200"}
    # Requests land on both workers; the counts still add up to every request.
    assert sample(text, "mlserving_requests_total", **invocations) == 20
    assert sample(text, "mlserving_model_info", model_version="7") == 1
    assert server.stop()
