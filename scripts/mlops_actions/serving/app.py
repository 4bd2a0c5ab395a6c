"""An ASGI app that serves one MLflow model with MLflow's scoring protocol, plus /metrics.

Routes: GET /ping and /health (200: the server listens only once the model is loaded),
GET /version, POST /invocations (dataframe_split, dataframe_records, instances, inputs, CSV:
answered by MLflow's own scoring code, or by the short road in scoring.py with the same
answers), GET /metrics, and the Open Inference Protocol (v2.py): GET /v2, /v2/health/live,
/v2/health/ready, /v2/models/{name}[/versions/{version}][/ready], POST .../infer.

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

from . import metrics, scoring, v2

INVOCATIONS = "/invocations"
V2_INFER = "/v2/models/{name}/infer"  # the metrics' route for both infer paths
UNMEASURED = {"/metrics", "/ping", "/health", "/v2/health/live", "/v2/health/ready"}
SERVER_NAME = "mlops-actions"


@dataclass(frozen=True)
class Settings:
    model_dir: str
    max_body_bytes: int = 50 * 1024 * 1024
    timeout_seconds: float = 60.0
    model_name: str = ""
    model_version: str = ""
    protocol_model_name: str = ""  # the name V2 clients call the model by, beside model_name

    @property
    def v2_names(self) -> frozenset[str]:
        """The names under /v2/models/ that reach the model ("model" when it has none)."""
        names = {self.model_name, self.protocol_model_name} - {""}
        return frozenset(names or {"model"})

    @property
    def v2_name(self) -> str:
        return self.protocol_model_name or self.model_name or "model"

    @classmethod
    def from_environment(cls) -> Settings:
        env = os.environ
        return cls(
            model_dir=env.get("MLSERVING_MODEL_DIR", "/opt/ml/model"),
            max_body_bytes=int(env.get("MLSERVING_MAX_BODY_BYTES", str(50 * 1024 * 1024))),
            timeout_seconds=float(env.get("MLSERVING_TIMEOUT_SECONDS", "60")),
            model_name=env.get("MLSERVING_MODEL_NAME", ""),
            model_version=env.get("MLSERVING_MODEL_VERSION", ""),
            protocol_model_name=env.get("MLSERVING_PROTOCOL_MODEL_NAME", ""),
        )


class MeasuredModel:
    """The loaded pyfunc model, with predict() timed, rows counted and outputs recorded."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.metadata = model.metadata
        self._takes_params = "params" in inspect.signature(model.predict).parameters

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """predict() measured; `params` only reach a model whose predict() takes them."""
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
    signature: v2.Signature


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
    return Loaded(
        MeasuredModel(model),
        input_schema,
        scoring.takes_short_road(info, input_schema),
        v2.Signature.of(info),
    )


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_environment()
    # Loaded before the server listens, and before workers fork: they share its memory. So
    # every route answers with the model in place; there is no "loading" answer to give.
    loaded = _load(settings)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        metrics.prime([(INVOCATIONS, "mlflow"), (V2_INFER, "v2")])
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
            metrics.ERRORS.labels("too_large", "mlflow").inc()
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
            metrics.ERRORS.labels("timeout", "mlflow").inc()
            return JSONResponse(
                {"error_code": "TIMEOUT", "message": f"no answer in {settings.timeout_seconds} s"},
                status_code=504,
            )
        except MlflowException as error:
            status = error.get_http_status_code()  # type: ignore[no-untyped-call]
            metrics.ERRORS.labels(_error_type(status, error.message), "mlflow").inc()
            text = error.serialize_as_json()  # type: ignore[no-untyped-call]
            return Response(text, status, media_type="application/json")
        except Exception as error:  # a bug in the model's code: report it, keep serving
            metrics.ERRORS.labels("predict_error", "mlflow").inc()
            message = json.dumps({"error_code": "INTERNAL_ERROR", "message": repr(error)})
            return Response(message, 500, media_type="application/json")
        if result.status == 415:
            metrics.ERRORS.labels("unsupported_media_type", "mlflow").inc()
        elif result.status >= 400:
            metrics.ERRORS.labels("bad_request", "mlflow").inc()
        return Response(result.response, result.status, media_type=result.mimetype)

    app = Starlette(
        routes=[
            Route("/ping", ping),
            Route("/health", ping),
            Route("/version", version),
            Route("/metrics", metrics_endpoint),
            Route(INVOCATIONS, invocations, methods=["POST"]),
            *_v2_routes(settings, loaded),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(_MeasureRequests)
    return app


def _v2_routes(settings: Settings, loaded: Loaded) -> list[Route]:
    """The Open Inference Protocol's routes (v2.py has the protocol itself)."""

    def v2_model(request: Request) -> str | None:
        """The model's answer to the request's name and version, or None: not this model."""
        name: str = request.path_params["name"]
        version = request.path_params.get("version")
        if name not in settings.v2_names:
            return None
        if version is not None and version != settings.model_version:
            return None
        return name

    def not_found(request: Request) -> Response:
        version = request.path_params.get("version")
        what = request.path_params["name"] + (f" version {version}" if version else "")
        served = settings.v2_name + (
            f" version {settings.model_version}" if settings.model_version else ""
        )
        return _v2_error(f"model {what!r} is not served here; this server serves {served}", 404)

    async def v2_server(_request: Request) -> Response:
        from mlops_actions import __version__

        return JSONResponse({"name": SERVER_NAME, "version": __version__, "extensions": []})

    async def v2_model_ready(request: Request) -> Response:
        return PlainTextResponse("") if v2_model(request) else not_found(request)

    async def v2_metadata(request: Request) -> Response:
        name = v2_model(request)
        if name is None:
            return not_found(request)
        return JSONResponse(loaded.signature.metadata(name, settings.model_version))

    async def v2_infer(request: Request) -> Response:
        name = v2_model(request)
        if name is None:
            metrics.ERRORS.labels("bad_request", "v2").inc()
            return not_found(request)
        if "inference-header-content-length" in request.headers:
            metrics.ERRORS.labels("unsupported_media_type", "v2").inc()
            return _v2_error("the binary tensor data extension is not supported; send JSON", 415)
        body = await _read_body(request, settings.max_body_bytes)
        if body is None:
            metrics.ERRORS.labels("too_large", "v2").inc()
            return _v2_error("request body over the limit", 413)
        metrics.LAST_REQUEST.set(time.time())
        call = asyncio.to_thread(_infer, body, name, settings, loaded)
        try:
            answer = await asyncio.wait_for(call, timeout=settings.timeout_seconds)
        except asyncio.TimeoutError:
            metrics.ERRORS.labels("timeout", "v2").inc()
            return _v2_error(f"no answer in {settings.timeout_seconds} s", 504)
        except v2.V2Error as error:
            metrics.ERRORS.labels(
                "predict_error" if error.status >= 500 else "bad_request", "v2"
            ).inc()
            return _v2_error(str(error), error.status)
        return Response(answer, 200, media_type="application/json")

    async def live(_request: Request) -> Response:
        return PlainTextResponse("")

    return [
        Route("/v2", v2_server),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", live),  # the model is loaded before the server listens
        Route("/v2/models/{name}", v2_metadata),
        Route("/v2/models/{name}/versions/{version}", v2_metadata),
        Route("/v2/models/{name}/ready", v2_model_ready),
        Route("/v2/models/{name}/versions/{version}/ready", v2_model_ready),
        Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", v2_infer, methods=["POST"]),
    ]


def _infer(body: bytes, name: str, settings: Settings, loaded: Loaded) -> bytes:
    """A V2 inference: the request decoded, predicted, and the answer encoded, or V2Error."""
    from mlflow.exceptions import MlflowException

    try:
        document = json.loads(body)
    except ValueError as error:
        raise v2.V2Error(f"the request body is not JSON: {error}") from None
    request = v2.parse_request(document)
    model_input = v2.model_input(request, loaded.signature)
    try:
        predictions = loaded.model.predict(model_input, request.params)
    except MlflowException as error:
        status = error.get_http_status_code()  # type: ignore[no-untyped-call]
        if status >= 500 or MODEL_RAISED in error.message:
            raise v2.V2Error(f"the model raised: {error.message}", 500) from None
        raise v2.V2Error(error.message) from None
    except Exception as error:  # a bug in the model's code: report it, keep serving
        raise v2.V2Error(f"the model raised: {error!r}", 500) from None
    outputs = v2.output_tensors(predictions, loaded.signature, request.output_names)
    answer = v2.response(request, name, settings.model_version, outputs)
    return json.dumps(answer, separators=(",", ":")).encode()


def _v2_error(message: str, status: int) -> Response:
    return JSONResponse({"error": message}, status_code=status)


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
        if scope["type"] != "http" or path in UNMEASURED or path.endswith("/ready"):
            await self.app(scope, receive, send)
            return
        endpoint, protocol = _route(path)
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
            elapsed = time.perf_counter() - start
            metrics.REQUEST_DURATION.labels(endpoint, method, protocol).observe(elapsed)
            metrics.REQUESTS.labels(endpoint, method, str(status["code"]), protocol).inc()


def _route(path: str) -> tuple[str, str]:
    """The bounded route label and the protocol of a request path (never the raw path: model
    names and versions in it would make a series each)."""
    if not path.startswith("/v2"):
        return (path if path in {INVOCATIONS, "/version"} else "other"), "mlflow"
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return V2_INFER, "v2"
    return "other", "v2"
