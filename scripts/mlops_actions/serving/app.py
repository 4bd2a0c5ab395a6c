"""An ASGI app that serves one MLflow model with MLflow's scoring protocol, plus /metrics.

Routes: GET /ping and /health (200: the server listens only once the model is loaded),
GET /version, POST /invocations (dataframe_split, dataframe_records, instances, inputs, CSV:
answered by MLflow's own scoring code, or by the short road in scoring.py with the same
answers), GET /metrics.

The model is loaded once, before the server listens (and before workers fork). predict() runs
in a thread so the event loop keeps answering /ping and /metrics; a request over the timeout
answers 504, a body over the limit 413.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import platform
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from . import metrics, scoring

INVOCATIONS = "/invocations"
UNMEASURED = {"/metrics", "/ping", "/health"}  # probes and scrapes are not traffic


@dataclass(frozen=True)
class Settings:
    model_dir: str
    max_body_bytes: int = 50 * 1024 * 1024
    timeout_seconds: float = 60.0
    model_name: str = ""
    model_version: str = ""

    @classmethod
    def from_environment(cls) -> Settings:
        env = os.environ
        return cls(
            model_dir=env.get("MLSERVING_MODEL_DIR", "/opt/ml/model"),
            max_body_bytes=int(env.get("MLSERVING_MAX_BODY_BYTES", str(50 * 1024 * 1024))),
            timeout_seconds=float(env.get("MLSERVING_TIMEOUT_SECONDS", "60")),
            model_name=env.get("MLSERVING_MODEL_NAME", ""),
            model_version=env.get("MLSERVING_MODEL_VERSION", ""),
        )


class MeasuredModel:
    """The loaded pyfunc model, with predict() timed, rows counted and outputs recorded."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.metadata = model.metadata
        self._takes_params = "params" in inspect.signature(model.predict).parameters

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        # Recorded on success only: a request the short road could not answer is predicted
        # again on MLflow's road, and must not count twice. Failures are counted by type.
        start = time.perf_counter()
        if self._takes_params:
            result = self._model.predict(data, params=params)
        else:
            result = self._model.predict(data)
        metrics.PREDICT_DURATION.observe(time.perf_counter() - start)
        metrics.INPUT_ROWS.observe(_rows(data))
        metrics.record_predictions(result)
        return result


def _rows(data: Any) -> int:
    """Rows in a parsed input: a DataFrame or array, a column mapping, or a list of records."""
    shape = getattr(data, "shape", None)
    if shape:
        return int(shape[0])
    if isinstance(data, dict):  # `inputs`/`instances` arrive as {column: values}
        first: Any = next(iter(data.values()), [])
        return len(first) if hasattr(first, "__len__") and not isinstance(first, str) else 1
    return len(data) if isinstance(data, list) else 1


@dataclass(frozen=True)
class Loaded:
    model: MeasuredModel
    input_schema: Any
    short_road: bool


def _answer(body: bytes, content_type: str, loaded: Loaded) -> Any:
    """MLflow's answer to an /invocations request, by the short road when it can take it."""
    from mlflow.pyfunc import scoring_server

    if loaded.short_road:
        frame = scoring.dataframe_or_none(body, content_type)
        if frame is not None:
            try:
                text = scoring.predictions_json(loaded.model.predict(frame))
            except Exception:  # noqa: S110 - MLflow's road answers, or explains
                pass
            else:
                return scoring_server.InvocationsResponse(text, 200, "application/json")
    return scoring_server.invocations(  # type: ignore[no-untyped-call]
        body, content_type, loaded.model, loaded.input_schema
    )


def _load(settings: Settings) -> Loaded:
    import mlflow
    import mlflow.pyfunc

    start = time.perf_counter()
    model = mlflow.pyfunc.load_model(settings.model_dir)
    metrics.MODEL_LOAD_SECONDS.set(time.perf_counter() - start)
    input_schema = model.metadata.get_input_schema()
    info = model.metadata
    flavor = next((f for f in (info.flavors or {}) if f != "python_function"), "python_function")
    metrics.MODEL_INFO.labels(
        model_name=settings.model_name,
        model_version=settings.model_version,
        run_id=info.run_id or "",
        flavor=flavor,
        mlflow_version=mlflow.__version__,
        python_version=platform.python_version(),
    ).set(1)
    return Loaded(MeasuredModel(model), input_schema, scoring.takes_short_road(info, input_schema))


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_environment()
    # Loaded before the server listens, and before workers fork: they share its memory. So
    # every route answers with the model in place; there is no "loading" answer to give.
    loaded = _load(settings)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        metrics.prime([INVOCATIONS])
        yield

    async def ping(_request: Request) -> Response:
        return PlainTextResponse("\n")

    async def version(_request: Request) -> Response:
        import mlflow

        return JSONResponse(
            {
                "mlflow": mlflow.__version__,
                "model_name": settings.model_name,
                "model_version": settings.model_version,
                "python": platform.python_version(),
            }
        )

    async def metrics_endpoint(_request: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    async def invocations(request: Request) -> Response:
        from mlflow.exceptions import MlflowException

        body = await _read_body(request, settings.max_body_bytes)
        if body is None:
            metrics.ERRORS.labels("too_large").inc()
            return JSONResponse(
                {"error_code": "PAYLOAD_TOO_LARGE", "message": "request body over the limit"},
                status_code=413,
            )
        content_type = request.headers.get("content-type", "")
        metrics.LAST_REQUEST.set(time.time())
        call = asyncio.to_thread(_answer, body, content_type, loaded)
        try:
            result = await asyncio.wait_for(call, timeout=settings.timeout_seconds)
        except asyncio.TimeoutError:
            metrics.ERRORS.labels("timeout").inc()
            return JSONResponse(
                {"error_code": "TIMEOUT", "message": f"no answer in {settings.timeout_seconds} s"},
                status_code=504,
            )
        except MlflowException as error:
            status = error.get_http_status_code()  # type: ignore[no-untyped-call]
            metrics.ERRORS.labels(_error_type(status, error.message)).inc()
            text = error.serialize_as_json()  # type: ignore[no-untyped-call]
            return Response(text, status, media_type="application/json")
        except Exception as error:  # a bug in the model's code: report it, keep serving
            metrics.ERRORS.labels("predict_error").inc()
            message = json.dumps({"error_code": "INTERNAL_ERROR", "message": repr(error)})
            return Response(message, 500, media_type="application/json")
        if result.status == 415:
            metrics.ERRORS.labels("unsupported_media_type").inc()
        elif result.status >= 400:
            metrics.ERRORS.labels("bad_request").inc()
        return Response(result.response, result.status, media_type=result.mimetype)

    app = Starlette(
        routes=[
            Route("/ping", ping),
            Route("/health", ping),
            Route("/version", version),
            Route("/metrics", metrics_endpoint),
            Route(INVOCATIONS, invocations, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(_MeasureRequests)
    return app


# MLflow answers 400 when the model's predict() raises; the metric tells it from bad input.
MODEL_RAISED = "Encountered an unexpected error while evaluating the model"


def _error_type(status: int, message: str) -> str:
    if status >= 500 or MODEL_RAISED in message:
        return "predict_error"
    return "bad_request"


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it exceeds `limit` bytes (without reading the rest)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class _MeasureRequests:
    """Count and time every request by route template (never the raw path)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in UNMEASURED:
            await self.app(scope, receive, send)
            return
        endpoint = path if path in {INVOCATIONS, "/version"} else "other"
        method = scope.get("method", "GET")
        status = {"code": 500}

        async def send_and_remember(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        start = time.perf_counter()
        metrics.IN_PROGRESS.labels(endpoint).inc()
        try:
            await self.app(scope, receive, send_and_remember)
        finally:
            metrics.IN_PROGRESS.labels(endpoint).dec()
            metrics.REQUEST_DURATION.labels(endpoint, method).observe(time.perf_counter() - start)
            metrics.REQUESTS.labels(endpoint, method, str(status["code"])).inc()
