"""The model server's Open Inference Protocol (KServe V2) routes, on real models in a real server
process: answers equal to /invocations, metadata from the signature, the protocol's error
bodies, every answer checked against the protocol's published OpenAPI schemas, and Triton's
HTTP client from PyPI as a caller."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, save_iris_model
from tests.test_serving import COLUMNS, Server, sample

SPEC = ROOT / "schema" / "open-inference-protocol" / "rest_predict_v2.yaml"
INFER = "/v2/models/iris-classifier/infer"

TENSOR_MODEL = """
import numpy as np
import mlflow.pyfunc


class RowSums(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        scale = (params or {}).get("scale", 1.0)
        return (model_input.sum(axis=1) * scale).astype(np.float32)


mlflow.models.set_model(RowSums())
"""


def protocol_schema(name: str) -> jsonschema.Draft4Validator:
    spec = yaml.safe_load(SPEC.read_text())
    return jsonschema.Draft4Validator(
        {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    )


def conforms(name: str, document: Any) -> Any:
    protocol_schema(name).validate(document)
    return document


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_iris_model(tmp_path_factory.mktemp("iris") / "model", example_rows=3)


@pytest.fixture(scope="module")
def tensor_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    directory = tmp_path_factory.mktemp("tensor")
    (directory / "row_sums.py").write_text(TENSOR_MODEL)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), "sums")]),
        params=ParamSchema([ParamSpec("scale", "double", 1.0)]),
    )
    path = directory / "model"
    mlflow.pyfunc.save_model(
        str(path), python_model=str(directory / "row_sums.py"), signature=signature
    )
    return path


@pytest.fixture(scope="module")
def iris_server(iris_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(iris_model, tmp_path_factory.mktemp("iris-server"))
    yield server
    server.process.kill()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(model: Path, **settings: str) -> Server:
        started.append(Server(model, tmp_path, **settings))
        return started[-1]

    yield start
    for server in started:
        server.process.kill()


def post(server: Server, path: str, body: Any) -> tuple[int, Any]:
    status, text = server.request(path, json.dumps(body).encode())
    return status, json.loads(text) if text else None


def iris_rows() -> list[list[float]]:
    from sklearn.datasets import load_iris

    features, _ = load_iris(return_X_y=True, as_frame=True)
    return features.to_numpy().tolist()


def column_request(rows: list[list[float]], shape_tail: tuple[int, ...] = ()) -> dict[str, Any]:
    return conforms(
        "inference_request",
        {
            "id": "req-1",
            "inputs": [
                {
                    "name": column,
                    "datatype": "FP64",
                    "shape": [len(rows), *shape_tail],
                    "data": [row[index] for row in rows],
                }
                for index, column in enumerate(COLUMNS)
            ],
        },
    )


def test_v2_infer_answers_as_invocations_on_iris(iris_server: Server) -> None:
    rows = iris_rows()
    status, text = iris_server.request(
        "/invocations", json.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows}}).encode()
    )
    assert status == 200
    expected = json.loads(text)["predictions"]
    assert len(set(expected)) == 3  # every class: a comparison that can tell answers apart

    status, answer = post(iris_server, INFER, column_request(rows))
    assert status == 200, answer
    conforms("inference_response", answer)
    assert answer["model_name"] == "iris-classifier"
    assert answer["model_version"] == "7"
    assert answer["id"] == "req-1"
    (output,) = answer["outputs"]
    assert output == {"name": "output-0", "datatype": "INT64", "shape": [150], "data": expected}

    # [n, 1] columns, the version in the path, and a named output requested.
    request = column_request(rows[:40], (1,))
    request["outputs"] = [{"name": "output-0"}]
    status, answer = post(iris_server, "/v2/models/iris-classifier/versions/7/infer", request)
    assert status == 200, answer
    assert answer["outputs"][0]["data"] == expected[:40]

    metrics = iris_server.metrics()
    labels = {"endpoint": "/v2/models/{name}/infer", "protocol": "v2"}
    assert sample(metrics, "mlserving_requests_total", status_code="200", **labels) >= 2
    assert sample(metrics, "mlserving_requests_total", endpoint="/invocations", protocol="mlflow")


def test_v2_metadata_health_and_unknown_models(iris_server: Server, iris_model: Path) -> None:
    from mlflow.models import Model

    signature = Model.load(str(iris_model)).signature
    status, metadata = iris_server.request("/v2/models/iris-classifier")
    assert status == 200
    metadata = conforms("metadata_model_response", json.loads(metadata))
    assert metadata["versions"] == ["7"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        (column.name, "FP64", [-1]) for column in signature.inputs.inputs
    ]
    assert metadata["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]
    assert iris_server.request("/v2/models/iris-classifier/versions/7") == (
        200,
        json.dumps(metadata, separators=(",", ":")),
    )

    status, server = iris_server.request("/v2")
    assert status == 200
    assert conforms("metadata_server_response", json.loads(server))["name"] == "mlops-actions"
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/iris-classifier/ready",
        "/v2/models/iris-classifier/versions/7/ready",
    ):
        assert iris_server.request(path) == (200, ""), path

    for path in (
        "/v2/models/other",
        "/v2/models/iris-classifier/versions/8",
        "/v2/models/other/ready",
    ):
        status, text = iris_server.request(path)
        assert status == 404, path
        assert (
            "iris-classifier version 7"
            in conforms("metadata_model_error_response", json.loads(text))["error"]
        )
    status, answer = post(iris_server, "/v2/models/other/infer", column_request(iris_rows()[:2]))
    assert status == 404
    assert "'other' is not served here" in conforms("inference_error_response", answer)["error"]


def _tensor(request: dict[str, Any], **changes: Any) -> dict[str, Any]:
    tensor = {**request["inputs"][0], **changes}
    return {**request, "inputs": [tensor, *request["inputs"][1:]]}


BAD_REQUESTS = [
    ("unknown input", lambda r: _tensor(r, name="sepal_length"), "unknown input 'sepal_length'"),
    (
        "missing input",
        lambda r: {**r, "inputs": r["inputs"][1:]},
        "missing input 'sepal length (cm)'",
    ),
    (
        "wrong datatype",
        lambda r: _tensor(r, datatype="BYTES"),
        "datatype BYTES does not match the model's FP64",
    ),
    ("unknown datatype", lambda r: _tensor(r, datatype="FLOAT"), "unknown datatype 'FLOAT'"),
    (
        "shape and data disagree",
        lambda r: _tensor(r, shape=[3]),
        "shape [3] needs 3 values, the data has 2",
    ),
    ("not a column", lambda r: _tensor(r, shape=[1, 2]), "a column takes shape [n] or [n, 1]"),
    ("ragged data", lambda r: _tensor(r, shape=[2], data=[[1.0], [2.0, 3.0]]), "data is ragged"),
    (
        "text for numbers",
        lambda r: _tensor(r, data=["a", "b"]),
        "FP64 cannot hold data of type string",
    ),
    ("rows differ", lambda r: _tensor(r, shape=[1], data=[1.0]), "different numbers of rows"),
    ("no inputs", lambda r: {"inputs": []}, "`inputs` must be a non-empty list"),
    (
        "no data",
        lambda r: {"inputs": [{k: v for k, v in r["inputs"][0].items() if k != "data"}]},
        "inputs[0] has no 'data'",
    ),
    (
        "unknown output",
        lambda r: {**r, "outputs": [{"name": "probabilities"}]},
        "unknown output 'probabilities'",
    ),
    ("not an object", lambda r: [r], "must be a JSON object"),
]


@pytest.mark.parametrize(
    ("case", "mutate", "needle"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_v2_refuses_bad_tensors_with_the_protocols_error_body(
    iris_server: Server, case: str, mutate: Any, needle: str
) -> None:
    before = sample(
        iris_server.metrics(),
        "mlserving_prediction_errors_total",
        error_type="bad_request",
        protocol="v2",
    )
    status, answer = post(iris_server, INFER, mutate(column_request(iris_rows()[:2])))
    assert status == 400, (case, answer)
    assert set(answer) == {"error"}
    assert needle in conforms("inference_error_response", answer)["error"]
    after = sample(
        iris_server.metrics(),
        "mlserving_prediction_errors_total",
        error_type="bad_request",
        protocol="v2",
    )
    assert after == before + 1


def test_v2_refuses_what_is_not_json_and_binary_tensors(iris_server: Server) -> None:
    status, text = iris_server.request(INFER, b"{not json")
    assert status == 400
    assert "not JSON" in json.loads(text)["error"]
    request = urllib.request.Request(
        iris_server.url + INFER,
        data=b"{}",
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": "2",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 415
    assert "binary tensor data extension" in json.loads(refused.value.read())["error"]


def test_v2_tensor_signature_params_and_odd_names(
    tensor_model: Path, serve: Callable[..., Server]
) -> None:
    name = "Modèle «sums» 'q' \"d\""
    server = serve(
        tensor_model,
        MLSERVING_MODEL_NAME=name,
        MLSERVING_MODEL_VERSION="12",
        MLSERVING_PROTOCOL_MODEL_NAME="row-sums",
    )
    rows = [[1.5, 2.0, 3.0], [-1.0, 0.25, 4.0], [0.0, 0.0, 0.0]]
    status, text = server.request(
        "/invocations", json.dumps({"inputs": rows, "params": {"scale": 2.0}}).encode()
    )
    assert status == 200, text
    expected = json.loads(text)["predictions"]
    assert expected == [13.0, 6.5, 0.0]

    request = conforms(
        "inference_request",
        {
            "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [3, 3], "data": rows}],
            "parameters": {"scale": 2.0, "content_type": "np"},
        },
    )
    quoted = urllib.parse.quote(name, safe="")
    for model in (quoted, "row-sums"):
        status, answer = post(server, f"/v2/models/{model}/versions/12/infer", request)
        assert status == 200, answer
        assert conforms("inference_response", answer)["outputs"] == [
            {"name": "sums", "datatype": "FP32", "shape": [3], "data": expected}
        ]
    assert answer["model_name"] == "row-sums"

    status, metadata = server.request(f"/v2/models/{quoted}")
    assert json.loads(metadata)["inputs"] == [
        {"name": "input-0", "datatype": "FP32", "shape": [-1, 3]}
    ]
    assert json.loads(metadata)["name"] == name

    for change, needle in (
        ({"shape": [1, 9]}, "shape [1, 9] does not fit the model's [-1, 3]"),
        ({"shape": [9]}, "shape [9] does not fit"),
        ({"datatype": "FP64"}, "datatype FP64 does not match the model's FP32"),
        ({"name": "x"}, "unknown input 'x'; the model's inputs are 'input-0'"),
    ):
        status, answer = post(server, "/v2/models/row-sums/infer", _tensor(request, **change))
        assert status == 400, change
        assert needle in conforms("inference_error_response", answer)["error"]
    status, answer = post(
        server, "/v2/models/row-sums/infer", {**request, "parameters": {"scale": "big"}}
    )
    assert status == 400
    assert "scale" in answer["error"]


def test_tritons_http_client_calls_the_server(iris_server: Server) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(iris_server.url.removeprefix("http://"))
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris-classifier", "7")
    metadata = client.get_model_metadata("iris-classifier")
    assert [tensor["name"] for tensor in metadata["inputs"]] == COLUMNS

    rows = np.array(iris_rows())
    inputs = []
    for index, column in enumerate(COLUMNS):
        tensor = triton.InferInput(column, [len(rows)], "FP64")
        tensor.set_data_from_numpy(rows[:, index], binary_data=False)
        inputs.append(tensor)
    outputs = [triton.InferRequestedOutput("output-0", binary_data=False)]
    result = client.infer(
        "iris-classifier", inputs, model_version="7", outputs=outputs, request_id="t1"
    )
    _, text = iris_server.request(
        "/invocations",
        json.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows.tolist()}}).encode(),
    )
    assert result.as_numpy("output-0").tolist() == json.loads(text)["predictions"]
    assert result.get_response()["id"] == "t1"

    wrong = triton.InferInput(COLUMNS[0], [len(rows)], "BOOL")
    wrong.set_data_from_numpy(np.zeros(len(rows), dtype=bool), binary_data=False)
    with pytest.raises(triton.InferenceServerException, match="BOOL does not match the model's"):
        client.infer("iris-classifier", [wrong, *inputs[1:]])
