"""The Open Inference Protocol (KServe's "V2" REST protocol) for one MLflow pyfunc model.

The pure half: the model's metadata from its signature, a request's named tensors turned into
what the pyfunc takes, and its predictions turned into named tensors. app.py owns the routes.

How tensors meet a pyfunc:
- A model with a column signature takes one 1-D tensor per column (shape [n] or [n, 1]), named
  after the column; together they make the DataFrame that `/invocations` would have made. A
  tensor may use a narrower type than its column (FP32 for a `double` column), never a wider
  one, and is cast to the column's type, so both routes predict from the same values.
- A model with a tensor signature takes its tensors by name (an unnamed one is `input-0`), with
  the declared datatype and every fixed dimension of the declared shape.
- A model without a signature takes 1-D tensors as columns, else one tensor as an array, else
  a mapping of name to array.
- Predictions: a DataFrame gives a tensor per column, a mapping one per key, anything else one
  tensor, named by the output signature when it names one, else `output-0`.

A request the protocol or the model refuses is a `V2Error`, answered as `{"error": ...}`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# The protocol's tensor datatypes and their numpy types (BYTES: Python strings).
DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
# MLflow column types as the protocol names them.
COLUMN_DATATYPES = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}
# The numpy kinds a datatype's values may arrive as in JSON: integers for floats, never the
# reverse (1.5 must not become 1), and booleans only for BOOL.
ACCEPTED_KINDS = {"BOOL": "b", "BYTES": "U", "FP": "iuf", "INT": "iu", "UINT": "iu"}
UNNAMED_INPUT = "input-0"
UNNAMED_OUTPUT = "output-0"
# Request parameters the protocol reserves for itself; the rest go to predict(params=...).
RESERVED_PARAMETERS = frozenset({"content_type", "headers", "binary_data_output"})
PLATFORM = "mlflow"


class V2Error(Exception):
    """A request the server refuses: the message is the answer's `error`, with this status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TensorMeta:
    name: str
    datatype: str
    shape: tuple[int, ...]
    required: bool = True
    numpy_type: Any = None  # what the pyfunc is given; None: the datatype's

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    """What the protocol says about a model: how it takes inputs, and its tensors."""

    kind: str  # "columns", "tensors" or "none"
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]

    @classmethod
    def of(cls, metadata: Any) -> Signature:
        input_schema = metadata.get_input_schema()
        output_schema = metadata.get_output_schema()
        inputs: tuple[TensorMeta, ...] = ()
        if input_schema is None:
            kind = "none"
        elif input_schema.is_tensor_spec():
            kind, inputs = "tensors", _tensor_metas(input_schema)
        else:
            kind, inputs = "columns", _column_metas(input_schema)
        return cls(kind, inputs, _output_metas(output_schema))

    def metadata(self, name: str, version: str) -> dict[str, Any]:
        return {
            "name": name,
            "versions": [version] if version else [],
            "platform": PLATFORM,
            "inputs": [tensor.as_json() for tensor in self.inputs],
            "outputs": [tensor.as_json() for tensor in self.outputs],
        }


def _column_metas(schema: Any) -> tuple[TensorMeta, ...]:
    metas = []
    for index, column in enumerate(schema.inputs):
        kind = getattr(getattr(column, "type", None), "name", "")
        datatype = COLUMN_DATATYPES.get(kind, "BYTES")  # arrays, objects, maps: as MLflow takes
        numpy_type = column.type.to_numpy() if kind in COLUMN_DATATYPES else np.object_
        if kind in ("string", "binary", "datetime"):
            numpy_type = np.object_
        name = column.name if column.name is not None else f"input-{index}"
        metas.append(TensorMeta(name, datatype, (-1,), column.required, numpy_type))
    return tuple(metas)


def _tensor_metas(schema: Any) -> tuple[TensorMeta, ...]:
    metas = []
    for index, tensor in enumerate(schema.inputs):
        name = tensor.name if tensor.name is not None else f"input-{index}"
        metas.append(
            TensorMeta(name, numpy_datatype(tensor.type), tuple(tensor.shape), True, tensor.type)
        )
    return tuple(metas)


def _output_metas(schema: Any) -> tuple[TensorMeta, ...]:
    if schema is None:
        return ()
    if schema.is_tensor_spec():
        return tuple(
            TensorMeta(t.name or f"output-{i}", numpy_datatype(t.type), tuple(t.shape))
            for i, t in enumerate(schema.inputs)
        )
    named = [column for column in schema.inputs if column.name is not None]
    if len(schema.inputs) == 1 and not named:
        (column,) = schema.inputs
        kind = getattr(getattr(column, "type", None), "name", "")
        return (TensorMeta(UNNAMED_OUTPUT, COLUMN_DATATYPES.get(kind, "BYTES"), (-1,)),)
    return tuple(
        TensorMeta(
            column.name,
            COLUMN_DATATYPES.get(getattr(getattr(column, "type", None), "name", ""), "BYTES"),
            (-1,),
        )
        for column in named
    )


def numpy_datatype(dtype: Any) -> str:
    """The protocol's name for a numpy type (strings and objects are BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return "BOOL"
    if dtype.kind in "iu":
        return f"{'U' if dtype.kind == 'u' else ''}INT{dtype.itemsize * 8}"
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return f"FP{dtype.itemsize * 8}"
    return "BYTES"


# ----------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    id: str | None
    inputs: tuple[Mapping[str, Any], ...]
    output_names: tuple[str, ...]
    params: dict[str, Any] | None


def parse_request(document: Any) -> Request:
    """The request body's structure checked, as the protocol's inference_request gives it."""
    if not isinstance(document, dict):
        raise V2Error("the request body must be a JSON object with `inputs`")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise V2Error("`inputs` must be a non-empty list of tensors")
    for index, tensor in enumerate(inputs):
        _check_tensor_fields(tensor, f"inputs[{index}]")
    names = [tensor["name"] for tensor in inputs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise V2Error(f"input {duplicates[0]!r} appears more than once")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2Error("`id` must be a string")
    outputs = document.get("outputs", [])
    if not isinstance(outputs, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in outputs
    ):
        raise V2Error("`outputs` must be a list of objects with a `name`")
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        raise V2Error("`parameters` must be an object")
    params = {k: v for k, v in parameters.items() if k not in RESERVED_PARAMETERS}
    return Request(
        request_id, tuple(inputs), tuple(item["name"] for item in outputs), params or None
    )


def _check_tensor_fields(tensor: Any, where: str) -> None:
    if not isinstance(tensor, dict):
        raise V2Error(f"{where} must be an object with name, shape, datatype and data")
    missing = [key for key in ("name", "shape", "datatype", "data") if key not in tensor]
    if missing:
        raise V2Error(f"{where} has no {missing[0]!r}")
    if not isinstance(tensor["name"], str):
        raise V2Error(f"{where}.name must be a string")
    shape = tensor["shape"]
    if not isinstance(shape, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape
    ):
        raise V2Error(f"input {tensor['name']!r}: shape must be a list of non-negative integers")
    if tensor["datatype"] not in DATATYPES:
        raise V2Error(
            f"input {tensor['name']!r}: unknown datatype {tensor['datatype']!r}; "
            f"the protocol's are {', '.join(DATATYPES)}"
        )


def decode_tensor(tensor: Mapping[str, Any]) -> Any:
    """A request tensor as a numpy array of its datatype and shape (row-major data, flat or
    nested), refusing values its datatype cannot hold exactly."""
    name, datatype, shape = tensor["name"], tensor["datatype"], tensor["shape"]
    data = tensor["data"]
    if not isinstance(data, list):
        data = [data]
    try:
        values = np.array(data)
    except ValueError:
        raise V2Error(f"input {name!r}: data is ragged; give it flat, in row-major order") from None
    family = datatype.rstrip("0123456789")
    if values.size and values.dtype.kind not in ACCEPTED_KINDS[family]:
        raise V2Error(
            f"input {name!r}: datatype {datatype} cannot hold data of type "
            f"{_json_kind(values.dtype)}"
        )
    expected = math.prod(shape)
    if values.size != expected:
        raise V2Error(
            f"input {name!r}: shape {shape} needs {expected} values, the data has {values.size}"
        )
    if datatype == "BYTES":
        return values.astype(object).reshape(shape)
    try:
        with np.errstate(over="raise"):
            cast = values.astype(DATATYPES[datatype])
    except (OverflowError, FloatingPointError):
        raise V2Error(f"input {name!r}: a value is out of range for {datatype}") from None
    if values.dtype.kind in "iu" and family in ("INT", "UINT") and not np.array_equal(cast, values):
        raise V2Error(f"input {name!r}: a value is out of range for {datatype}")
    return cast.reshape(shape)


def _json_kind(dtype: Any) -> str:
    return {"b": "boolean", "i": "integer", "u": "integer", "f": "number", "U": "string"}.get(
        dtype.kind, "mixed values"
    )


def model_input(request: Request, signature: Signature) -> Any:
    """What the pyfunc's predict() takes for this request."""
    if signature.kind == "columns":
        return _columns(request, signature.inputs)
    if signature.kind == "tensors":
        return _tensors(request, signature.inputs)
    arrays = {tensor["name"]: decode_tensor(tensor) for tensor in request.inputs}
    if all(_column_length(array) is not None for array in arrays.values()):
        return _frame({name: array.reshape(-1) for name, array in arrays.items()})
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    return arrays


def _columns(request: Request, expected: Sequence[TensorMeta]) -> Any:
    by_name = {meta.name: meta for meta in expected}
    _refuse_unknown(request, by_name)
    given = {tensor["name"]: tensor for tensor in request.inputs}
    missing = [meta.name for meta in expected if meta.required and meta.name not in given]
    if missing:
        raise V2Error(f"missing input {missing[0]!r}; the model's inputs are {_names(expected)}")
    columns, rows = {}, set()
    for meta in expected:
        tensor = given.get(meta.name)
        if tensor is None:
            continue
        _check_datatype(tensor, meta, exact=False)
        array = decode_tensor(tensor)
        length = _column_length(array)
        if length is None:
            raise V2Error(
                f"input {meta.name!r}: a column takes shape [n] or [n, 1], not {list(array.shape)}"
            )
        rows.add(length)
        columns[meta.name] = array.reshape(-1).astype(meta.numpy_type, copy=False)
    if len(rows) > 1:
        raise V2Error(f"the inputs have different numbers of rows: {sorted(rows)}")
    return _frame(columns)


def _tensors(request: Request, expected: Sequence[TensorMeta]) -> Any:
    by_name = {meta.name: meta for meta in expected}
    _refuse_unknown(request, by_name)
    given = {tensor["name"]: tensor for tensor in request.inputs}
    arrays = {}
    for meta in expected:
        tensor = given.get(meta.name)
        if tensor is None:
            raise V2Error(f"missing input {meta.name!r}; the model's inputs are {_names(expected)}")
        _check_datatype(tensor, meta, exact=True)
        shape = tensor["shape"]
        fits = len(shape) == len(meta.shape) and all(
            want in (-1, got) for want, got in zip(meta.shape, shape, strict=True)
        )
        if not fits:
            raise V2Error(
                f"input {meta.name!r}: shape {shape} does not fit the model's {list(meta.shape)} "
                "(-1: any size)"
            )
        arrays[meta.name] = decode_tensor(tensor)
    if len(expected) == 1 and expected[0].name == UNNAMED_INPUT:
        return arrays[UNNAMED_INPUT]
    return arrays


def _refuse_unknown(request: Request, by_name: Mapping[str, TensorMeta]) -> None:
    for tensor in request.inputs:
        if tensor["name"] not in by_name:
            raise V2Error(
                f"unknown input {tensor['name']!r}; the model's inputs are "
                f"{_names(by_name.values())}"
            )


def _check_datatype(tensor: Mapping[str, Any], meta: TensorMeta, *, exact: bool) -> None:
    given, wanted = tensor["datatype"], meta.datatype
    if given == wanted:
        return
    # Numbers only (numpy would also call BOOL to FP64 safe): as MLflow takes ints for doubles.
    narrower = (
        not exact
        and not {given, wanted} & {"BYTES", "BOOL"}
        and np.can_cast(DATATYPES[given], DATATYPES[wanted], "safe")
    )
    if not narrower:
        raise V2Error(f"input {meta.name!r}: datatype {given} does not match the model's {wanted}")


def _column_length(array: Any) -> int | None:
    if array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1):
        return int(array.shape[0])
    return None


def _names(metas: Any) -> str:
    return ", ".join(repr(meta.name) for meta in metas)


def _frame(columns: Mapping[str, Any]) -> Any:
    import pandas as pd

    return pd.DataFrame(dict(columns))


# ----------------------------------------------------------------------------- responses


def output_tensors(
    predictions: Any, signature: Signature, wanted: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The predictions as the protocol's named output tensors, only `wanted` ones if named."""
    named = _named_outputs(predictions, signature)
    if wanted:
        unknown = [name for name in wanted if name not in named]
        if unknown:
            raise V2Error(
                f"unknown output {unknown[0]!r}; the model's outputs are "
                f"{', '.join(repr(name) for name in named)}"
            )
        named = {name: named[name] for name in wanted}
    return [_tensor_json(name, array) for name, array in named.items()]


def _named_outputs(predictions: Any, signature: Signature) -> dict[str, Any]:
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        return {str(column): predictions[column].to_numpy() for column in predictions.columns}
    if isinstance(predictions, dict):
        return {str(key): _array(value) for key, value in predictions.items()}
    single = signature.outputs[0].name if len(signature.outputs) == 1 else UNNAMED_OUTPUT
    return {single: _array(predictions)}


def _array(value: Any) -> Any:
    if hasattr(value, "to_numpy"):
        return value.to_numpy()
    array = np.asarray(value)
    return array.reshape(1) if array.ndim == 0 else array


def _tensor_json(name: str, array: Any) -> dict[str, Any]:
    datatype = numpy_datatype(array.dtype)
    if datatype == "BYTES":
        data = [_text(item) for item in array.reshape(-1).tolist()]
    elif array.dtype.kind == "f" and not np.isfinite(array).all():
        # JSON has no NaN or infinity: null, as KServe's own servers answer.
        data = [item if math.isfinite(item) else None for item in array.reshape(-1).tolist()]
    else:
        data = array.reshape(-1).tolist()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def _text(item: Any) -> Any:
    if isinstance(item, bytes):
        return item.decode("utf-8", "replace")
    if item is None or isinstance(item, str):
        return item
    return str(item)


def response(
    request: Request, model_name: str, model_version: str, outputs: list[dict[str, Any]]
) -> dict[str, Any]:
    body: dict[str, Any] = {"model_name": model_name}
    if model_version:
        body["model_version"] = model_version
    if request.id is not None:
        body["id"] = request.id
    body["outputs"] = outputs
    return body
