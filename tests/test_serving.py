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
from typing import Any

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
            "MLSERVING_WORKERS": "1",
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
    # predict() raises (a negative sleep): MLflow answers 400, the metric says whose fault it is.
    raises = json.dumps({"dataframe_split": {"columns": ["seconds"], "data": [[-1]]}}).encode()
    status, text = server.request("/invocations", raises)
    assert status == 400
    assert "unexpected error while evaluating the model" in text
    text = server.metrics()
    assert sample(text, "mlserving_prediction_errors_total", error_type="timeout") == 1
    assert sample(text, "mlserving_prediction_errors_total", error_type="too_large") == 1
    assert sample(text, "mlserving_prediction_errors_total", error_type="predict_error") == 1
    assert sample(text, "mlserving_prediction_errors_total", error_type="bad_request") == 0
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


def _oracle(model_dir: Path) -> Any:
    """MLflow's own answer to a request, in-process: what the server must say, byte for byte."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(str(model_dir))
    schema = model.metadata.get_input_schema()

    def answer(body: bytes, content_type: str = "application/json") -> tuple[int, str]:
        try:
            result = scoring_server.invocations(body, content_type, model, schema)
        except Exception as error:
            return error.get_http_status_code(), error.serialize_as_json()  # type: ignore[attr-defined]
        return result.status, result.response

    return answer


def test_short_road_answers_exactly_as_mlflow(iris_model: Path, serve: type[Server]) -> None:
    """Plain dataframe bodies skip MLflow's redundant cast; every answer must still be MLflow's,
    including the ones the schema check refuses until the cast makes them fit."""
    server = serve(iris_model)
    oracle = _oracle(iris_model)
    as_strings = [[str(value) for value in SETOSA]]
    cases = {
        "split": {"dataframe_split": {"columns": COLUMNS, "data": [SETOSA, VIRGINICA]}},
        "split with index": {
            "dataframe_split": {"columns": COLUMNS, "data": [SETOSA], "index": [7]}
        },
        "records": {"dataframe_records": RECORDS},
        "integers for doubles": {"dataframe_split": {"columns": COLUMNS, "data": [[5, 3, 1, 0]]}},
        "booleans for doubles": {
            "dataframe_split": {"columns": COLUMNS, "data": [[True, False, True, False]]}
        },
        "strings for doubles (the cast makes them fit)": {
            "dataframe_split": {"columns": COLUMNS, "data": as_strings}
        },
        "words for doubles": {"dataframe_split": {"columns": COLUMNS, "data": [["a"] * 4]}},
        "missing column": {"dataframe_split": {"columns": COLUMNS[:3], "data": [SETOSA[:3]]}},
        "extra column": {
            "dataframe_records": [{**RECORDS[0], "colour": "blue"}],
        },
        "null value": {"dataframe_split": {"columns": COLUMNS, "data": [[None, 3.5, 1.4, 0.2]]}},
        "records as a dict": {"dataframe_records": RECORDS[0]},
        "split without data": {"dataframe_split": {"columns": COLUMNS}},
        "with params": {"dataframe_records": RECORDS, "params": {"unused": 1}},
    }
    before = server.metrics()
    for name, document in cases.items():
        body = json.dumps(document).encode()
        status, text = server.request("/invocations", body)
        expected_status, expected_text = oracle(body)
        assert status == expected_status, name
        if status == 200:
            assert text == expected_text, name
        else:  # MLflow's error document; its stack trace differs from process to process
            assert json.loads(text)["message"] == json.loads(expected_text)["message"], name
    after = server.metrics()
    # A request that fell back to MLflow's road is predicted again there: it counts once.
    answered = sum(1 for name in cases if oracle(json.dumps(cases[name]).encode())[0] == 200)
    count = "mlserving_prediction_duration_seconds_count"
    assert sample(after, count) - sample(before, count) == answered


def test_short_road_only_for_numeric_and_boolean_columns() -> None:
    from mlflow.models import ModelSignature
    from mlflow.models.model import Model
    from mlflow.types import ColSpec, Schema, TensorSpec

    from mlops_actions.serving.scoring import takes_short_road

    def schema(*types: str) -> Schema:
        return Schema([ColSpec(kind, f"c{i}") for i, kind in enumerate(types)])

    metadata = Model(signature=ModelSignature(inputs=schema("double")))
    assert takes_short_road(metadata, None)
    assert takes_short_road(metadata, schema("double", "long", "integer", "float", "boolean"))
    for other in ("string", "datetime", "binary"):
        assert not takes_short_road(metadata, schema("double", other)), other
    assert not takes_short_road(metadata, Schema([ColSpec("double")]))  # unnamed columns
    import numpy as np

    assert not takes_short_road(metadata, Schema([TensorSpec(np.dtype("float64"), (-1, 4))]))


def test_worker_listener_gets_tcp_nodelay_connections() -> None:
    """gunicorn's listener has proto 0, so asyncio would leave Nagle on (uvicorn#3149)."""
    import asyncio
    import socket

    from mlops_actions.serving.prefork import with_tcp_protocol

    async def nodelay_of_accepted(listener: socket.socket) -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname())
        value = await asyncio.wait_for(accepted, 10)
        writer.close()
        server.close()
        return value

    def listener() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # as gunicorn makes it
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        return sock

    assert asyncio.run(nodelay_of_accepted(listener())) == 0  # the bug this guards against
    rewrapped = with_tcp_protocol(listener())
    assert rewrapped.proto == socket.IPPROTO_TCP
    assert asyncio.run(nodelay_of_accepted(rewrapped)) == 1


def test_workers_default_to_the_cpus_the_container_may_use(tmp_path: Path) -> None:
    from mlops_actions.serving.__main__ import available_cpus, worker_count

    cpus = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert available_cpus(tmp_path / "absent") == cpus
    cpu_max.write_text("max 100000\n")
    assert available_cpus(cpu_max) == cpus
    cpu_max.write_text("50000 100000\n")  # docker run --cpus 0.5
    assert available_cpus(cpu_max) == 1
    cpu_max.write_text(f"{100000 * (cpus + 4)} 100000\n")  # a quota above the CPU set
    assert available_cpus(cpu_max) == cpus
    assert worker_count("3") == 3
    assert worker_count("auto") == min(available_cpus(), 8)
    assert worker_count("auto", lambda: 2) == 2
    assert worker_count("", lambda: 64) == 8  # a pod without a CPU limit on a big node
    assert worker_count("12") == 12  # the cap is for the default only
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit, match="MLSERVING_WORKERS"):
            worker_count(bad)
