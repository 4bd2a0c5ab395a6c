"""Evaluate the candidate and the champion on one dataset with MLflow's default evaluator.

Runs in the user's Python (the one that trained, which has the model's dependencies), not in
the suite's environment, so it imports nothing from mlops_actions. Usage:

    python evaluation_worker.py REQUEST.json RESULT.json

The tracking URI and credentials come from the environment (MLFLOW_TRACKING_URI, ...), never
from the request file. The candidate's results are logged to the candidate's run with a
prefix; the champion's go to a nested run under it, so the champion's own run is not touched.
On a failure RESULT.json holds {"error": ..., "hint": ...}; the exit status is 2 for bad input
and 3 when a service (the tracking server) failed.

With "predictions_dir" in the request, each model's per-row predictions (and class
probabilities with the class of each column, where the model gives them) are saved there as
.npy files beside the true values, for the gate's paired bootstrap. They are computed with the
same predict functions MLflow's evaluator uses, on the same columns.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any


class WorkerError(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def read_dataset(path: Path, targets: str) -> Any:
    import pandas as pd

    if not path.is_file():
        raise WorkerError(f"evaluation dataset {path} does not exist", "check gate.evaluation.data")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif suffix in {".json", ".jsonl"}:
        frame = pd.read_json(path, lines=True)
    else:
        frame = pd.read_csv(path)
    if targets not in frame.columns:
        raise WorkerError(
            f"evaluation dataset {path} has no column '{targets}'",
            f"set gate.evaluation.targets to one of: {', '.join(map(str, frame.columns))}",
        )
    return frame


def json_metrics(metrics: dict[str, Any]) -> dict[str, float | str]:
    """JSON has no NaN or infinity: those go as "nan", "inf", "-inf", which the gate reads back."""
    result: dict[str, float | str] = {}
    for name, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            result[name] = float(value) if math.isfinite(value) else str(float(value))
    return result


def signature_columns(model_uri: str, frame: Any, targets: str) -> list[str] | None:
    """The columns the model's signature names, in its order; None: all but the targets.

    MLflow's evaluator calls the raw model (e.g. scikit-learn's predict, which refuses columns
    it was not fitted on) with every column that is not the target, unlike the pyfunc path,
    which drops the columns the signature does not name. So each model gets its own columns.
    """
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    inputs = signature.inputs if signature is not None else None
    if inputs is None or not inputs.has_input_names():
        return None
    names = [str(name) for name in inputs.input_names()]
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise WorkerError(
            f"model {model_uri} needs column(s) the evaluation dataset lacks: "
            + ", ".join(missing),
            "evaluate on a dataset with every column the model's signature names",
        )
    return [name for name in names if name != targets]


# The flavors whose raw model MLflow's evaluator calls (predict and predict_proba, skipping
# pyfunc's schema enforcement); for any other it calls pyfunc's predict and has no probabilities.
RAW_MODEL_FLAVORS = ("mlflow.catboost", "mlflow.sklearn", "mlflow.xgboost")


def predict_functions(model: Any) -> tuple[Any, Any, Any]:
    """(predict, predict_proba or None, classes or None), chosen as MLflow's evaluator does."""
    flavor = model.metadata.flavors.get("python_function", {}).get("loader_module")
    if flavor not in RAW_MODEL_FLAVORS:
        return model.predict, None, None
    try:
        raw = model.get_raw_model()
    except NotImplementedError:
        raw = model._model_impl  # what the evaluator falls back to as well
    return raw.predict, getattr(raw, "predict_proba", None), getattr(raw, "classes_", None)


def save_predictions(
    model_uri: str, frame: Any, columns: list[str] | None, request: dict[str, Any], role: str
) -> dict[str, str]:
    """The model's per-row outputs as .npy files in predictions_dir; their names, by kind."""
    import mlflow
    import numpy as np

    directory = Path(request["predictions_dir"])
    targets = request["targets"]
    features = frame[columns] if columns is not None else frame.drop(columns=[targets])
    predict, predict_proba, classes = predict_functions(mlflow.pyfunc.load_model(model_uri))
    outputs: dict[str, Any] = {"predictions": np.asarray(predict(features)).reshape(len(frame), -1)}
    if outputs["predictions"].shape[1] == 1:
        outputs["predictions"] = outputs["predictions"][:, 0]
    if predict_proba is not None and request["model_type"] == "classifier":
        outputs["probabilities"] = np.asarray(predict_proba(features), dtype=float)
        if classes is not None:
            outputs["classes"] = np.asarray(classes)
    files = {}
    for kind, values in outputs.items():
        files[kind] = f"{role}.{kind}.npy"
        save_array(directory / files[kind], values)
    return files


def save_array(path: Path, values: Any) -> None:
    """An array as .npy without pickles; labels held as Python objects go as text, so the
    true values and the predictions stay comparable."""
    import numpy as np

    array = np.asarray(values)
    np.save(path, array.astype(str) if array.dtype == object else array, allow_pickle=False)


def evaluate(
    model_uri: str, frame: Any, request: dict[str, Any], role: str
) -> tuple[dict[str, float | str], dict[str, str]]:
    import mlflow

    # Outside the try: a tracking server that fails here is a service error, not bad input.
    columns = signature_columns(model_uri, frame, request["targets"])
    evaluator_config = {
        "log_model_explainability": False,
        "metric_prefix": request["metric_prefix"],
    }
    if request.get("average"):
        evaluator_config["average"] = request["average"]
    try:
        result = mlflow.models.evaluate(  # type: ignore[no-untyped-call]
            model_uri,
            frame,
            targets=request["targets"],
            model_type=request["model_type"],
            feature_names=columns,
            evaluator_config=evaluator_config,
        )
        files = (
            save_predictions(model_uri, frame, columns, request, role)
            if request.get("predictions_dir")
            else {}
        )
    except Exception as error:
        raise WorkerError(
            f"MLflow's evaluator failed on {model_uri}: {type(error).__name__}: {error}",
            "check that this Python has the model's dependencies and that the dataset "
            "matches the model's input schema",
        ) from error
    prefix = request["metric_prefix"]
    metrics = {
        (name[len(prefix) :] if prefix and name.startswith(prefix) else name): value
        for name, value in result.metrics.items()
    }
    return json_metrics(metrics), files


def main(request_path: str, result_path: str) -> int:
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    try:
        import mlflow

        frame = read_dataset(Path(request["data"]), request["targets"])
        results: dict[str, Any] = {"mlflow_version": mlflow.__version__, "predictions": {}}
        if request.get("predictions_dir"):
            save_array(Path(request["predictions_dir"], "truth.npy"), frame[request["targets"]])
        with mlflow.start_run(run_id=request["candidate_run_id"]) as parent:
            results["candidate"], results["predictions"]["candidate"] = evaluate(
                request["candidate_model_uri"], frame, request, "candidate"
            )
            if request.get("champion_model_uri"):
                # Beside its parent: a nested run defaults to the environment's experiment
                # (else Default), where the UI would show it as an orphan.
                with mlflow.start_run(
                    nested=True,
                    run_name=request["champion_run_name"],
                    experiment_id=parent.info.experiment_id,
                ) as run:
                    mlflow.set_tags(request.get("champion_tags", {}))
                    results["champion"], results["predictions"]["champion"] = evaluate(
                        request["champion_model_uri"], frame, request, "champion"
                    )
                    results["champion_evaluation_run_id"] = run.info.run_id
    except WorkerError as error:
        Path(result_path).write_text(json.dumps({"error": error.message, "hint": error.hint}))
        return 2
    except ImportError as error:
        Path(result_path).write_text(
            json.dumps(
                {
                    "error": f"the evaluation Python cannot import {error.name}",
                    "hint": "install mlflow and pandas in it, or set gate.evaluation.python",
                }
            )
        )
        return 2
    except Exception as error:  # the tracking server, most likely: reported, not hidden
        message = f"{type(error).__name__}: {error}".strip()
        Path(result_path).write_text(json.dumps({"error": message[:2000], "service": True}))
        return 3
    Path(result_path).write_text(json.dumps(results), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
