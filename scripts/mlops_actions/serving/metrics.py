"""Prometheus metrics of a served model. Names follow Prometheus conventions: one prefix, base
units (seconds), `_total` for counters, bounded label values, metadata on an `_info` gauge.

With several uvicorn workers, PROMETHEUS_MULTIPROC_DIR makes every worker write its samples to
files there, and /metrics adds them up; gauges then say how to combine workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

# `_created` series double the output and no dashboard or alert here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX = "mlserving"
# OpenTelemetry's advised HTTP buckets, plus 30 and 60 s for slow models near the timeout.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60,
)  # fmt: skip
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)
ERROR_TYPES = ("bad_request", "unsupported_media_type", "too_large", "timeout", "predict_error")
MAX_CLASSES = 50  # distinct predicted classes tracked; the rest count as "other"

REQUESTS = Counter(
    f"{PREFIX}_requests",
    "HTTP requests handled, by route, method, status code and protocol (mlflow or v2).",
    ["endpoint", "method", "status_code", "protocol"],
)
REQUEST_DURATION = Histogram(
    f"{PREFIX}_request_duration_seconds",
    "Time from request to response, parsing and serialisation included.",
    ["endpoint", "method", "protocol"],
    buckets=LATENCY_BUCKETS,
)
IN_PROGRESS = Gauge(
    f"{PREFIX}_requests_in_progress",
    "Requests being handled now.",
    ["endpoint"],
    multiprocess_mode="livesum",
)
PREDICT_DURATION = Histogram(
    f"{PREFIX}_prediction_duration_seconds",
    "Time spent in the model's predict() alone.",
    buckets=LATENCY_BUCKETS,
)
ERRORS = Counter(
    f"{PREFIX}_prediction_errors",
    "Failed prediction requests, by kind of error and protocol (mlflow or v2).",
    ["error_type", "protocol"],
)
INPUT_ROWS = Histogram(
    f"{PREFIX}_input_rows",
    "Rows (records) per prediction request.",
    buckets=ROW_BUCKETS,
)
PREDICTED_CLASSES = Counter(
    f"{PREFIX}_predictions",
    "Predictions returned, by predicted class (classifiers; at most 50 classes, then 'other').",
    ["class_label"],
)
PREDICTED_VALUES = Histogram(
    f"{PREFIX}_prediction_value",
    "Distribution of numeric predictions (regressors).",
    buckets=(-1000, -100, -10, -1, 0, 1, 10, 100, 1000, 10000),
)
MODEL_INFO = Gauge(
    f"{PREFIX}_model_info",
    "The model in service (always 1); its labels say which.",
    ["model_name", "model_version", "run_id", "flavor", "mlflow_version", "python_version"],
    multiprocess_mode="max",
)
MODEL_LOAD_SECONDS = Gauge(
    f"{PREFIX}_model_load_seconds",
    "Time it took to load the model at start-up.",
    multiprocess_mode="max",
)
LAST_REQUEST = Gauge(
    f"{PREFIX}_last_request_timestamp_seconds",
    "Unix time of the last prediction request.",
    multiprocess_mode="max",
)


def prime(endpoints: Iterable[tuple[str, str]]) -> None:
    """Create the usual series at 0, so rate() and error ratios work from the first scrape.
    `endpoints`: (route, protocol) of the prediction routes."""
    for endpoint, protocol in endpoints:
        for status in ("200", "400", "500"):
            REQUESTS.labels(endpoint, "POST", status, protocol)
        for error_type in ERROR_TYPES:
            ERRORS.labels(error_type, protocol)


def record_predictions(predictions: object) -> None:
    """Histogram numeric outputs with fractions (regression); count labels otherwise."""
    values = _flatten(predictions)
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    fractional = any(not number.is_integer() for number in numbers)
    if values and len(numbers) == len(values) and fractional:
        for number in numbers:
            PREDICTED_VALUES.observe(number)
        return
    for item in values:
        label = str(item)
        if label not in _seen_classes and len(_seen_classes) >= MAX_CLASSES:
            label = "other"
        _seen_classes.add(label)
        PREDICTED_CLASSES.labels(label).inc()


_seen_classes: set[str] = set()


def _flatten(predictions: object) -> list[object]:
    tolist = getattr(predictions, "tolist", None)
    if callable(tolist):
        predictions = tolist()
    if isinstance(predictions, dict):
        predictions = next(iter(predictions.values()), [])
    if not isinstance(predictions, list):
        return [predictions]
    flat: list[object] = []
    for item in predictions[:10000]:
        if isinstance(item, list):
            return []  # probabilities or embeddings: not a distribution we can label
        flat.append(item)
    return flat


def exposition() -> tuple[bytes, str]:
    """The /metrics body: this process's metrics, or every worker's in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
