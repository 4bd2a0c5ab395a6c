"""A shorter road through MLflow's scoring protocol for the most common request.

MLflow's `invocations` decodes the JSON body twice and casts every column to the schema's type
before `predict()` checks the schema again. For a `dataframe_split` or `dataframe_records` body
without params, against a model whose input columns are all numbers or booleans, the cast
changes nothing the schema check would not do itself: JSON gives such columns numbers or
booleans, and the check either converts them the way the cast would or refuses them. So the
short road builds the DataFrame with MLflow's own parser, skips the cast and calls predict().

Any other request, and any request that fails on the short road (a refused schema, a malformed
frame, an error in the model), is answered by MLflow's `invocations`, so every error and every
other format is answered exactly as MLflow answers it.
"""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

DATAFRAME_ORIENTS = {"dataframe_split": "split", "dataframe_records": "records"}
PLAIN_TYPES = frozenset({"double", "float", "long", "integer", "boolean"})
JSON_TYPES = frozenset({"application/json", "application/json; charset=utf-8"})


def takes_short_road(metadata: Any, input_schema: Any) -> bool:
    """Whether the model's inputs allow it: no schema, or named columns of numeric or boolean
    types (no tensors, strings, dates, binaries, arrays or objects)."""
    from mlflow.types import DataType

    if getattr(metadata, "_is_signature_from_type_hint", lambda: False)():
        return False
    if input_schema is None:
        return True
    if input_schema.is_tensor_spec() or not input_schema.has_input_names():
        return False
    return all(
        isinstance(kind, DataType) and kind.name in PLAIN_TYPES
        for kind in input_schema.input_types()
    )


def dataframe_or_none(body: bytes, content_type: str) -> Any:
    """The request as a DataFrame when it is a plain dataframe body, else None."""
    if content_type.strip().lower() not in JSON_TYPES:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict) or len(document) != 1:
        return None  # params, several formats, or another format
    ((key, value),) = document.items()
    orient = DATAFRAME_ORIENTS.get(key)
    if orient is None:
        return None
    from mlflow.utils.proto_json_utils import dataframe_from_parsed_json

    try:
        return dataframe_from_parsed_json(value, pandas_orient=orient, schema=None)  # type: ignore[no-untyped-call]
    except Exception:
        return None


def predictions_json(predictions: Any) -> str:
    from mlflow.pyfunc import scoring_server

    sink = StringIO()
    scoring_server.predictions_to_json(predictions, sink)  # type: ignore[no-untyped-call]
    return sink.getvalue()
