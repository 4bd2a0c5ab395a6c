"""`mlops-actions relay serve`: the HTTP service around the relay's core (`relay`).

A delivery is answered as soon as it is checked (signature, freshness, rules) and written to a
SQLite outbox; a worker thread then sends the repository_dispatch, with retries and backoff. The
outbox is the replay guard as well (the delivery id is its key), and it survives a restart: a
delivery accepted before a crash is sent after it, and MLflow's retry of a delivery whose answer
was lost finds its id and makes no second dispatch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import relay
from .errors import ConfigError, MlopsError, ServiceError

log = logging.getLogger("mlops_actions.relay")

MAX_BODY_BYTES = 64 * 1024  # MLflow's payloads are a few hundred bytes
KEEP_SECONDS = 14 * 24 * 3600  # finished deliveries stay listed (GET /deliveries) this long


@dataclass(frozen=True)
class Retry:
    attempts: int = 8
    first_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return float(min(self.max_delay, self.first_delay * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class Queued:
    delivery: relay.Delivery
    payload: dict[str, str]

    def event(self) -> relay.Event:
        entity, _, action = self.payload.get("event", "").partition(".")
        return relay.Event(
            entity=entity,
            action=action,
            model=self.payload.get("model", ""),
            version=self.payload.get("version", ""),
            alias=self.payload.get("alias", ""),
            timestamp=self.payload.get("moved_at", ""),
        )


class Outbox:
    """Deliveries in SQLite: queued until dispatched, then sent, skipped or failed; and the
    promotion ids whose move has been explained (relay.suite_move)."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS deliveries (id TEXT PRIMARY KEY, received REAL,"
                " event TEXT, model TEXT, alias TEXT, version TEXT, payload TEXT, state TEXT,"
                " signed_at INTEGER, attempts INTEGER DEFAULT 0, detail TEXT DEFAULT '')"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS explained (promotion_id TEXT PRIMARY KEY,"
                " delivery_id TEXT)"
            )

    def accept(self, delivery: relay.Delivery, event: relay.Event, payload: dict[str, str]) -> bool:
        """Queue a delivery; False when its id was taken before (a replay or MLflow's retry)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO deliveries (id, received, event, model, alias, version,"
                " payload, signed_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued')",
                (
                    delivery.id,
                    time.time(),
                    f"{event.entity}.{event.action}",
                    event.model,
                    event.alias,
                    event.version,
                    json.dumps(payload),
                    delivery.timestamp,
                ),
            )
            return cursor.rowcount == 1

    def queued(self) -> list[Queued]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, signed_at, payload FROM deliveries WHERE state = 'queued'"
                " ORDER BY received"
            ).fetchall()
        return [Queued(relay.Delivery(row[0], int(row[1])), json.loads(row[2])) for row in rows]

    def finish(self, delivery_id: str, state: str, attempts: int, detail: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE deliveries SET state = ?, attempts = ?, detail = ? WHERE id = ?",
                (state, attempts, detail, delivery_id),
            )

    def explain(self, promotion_id: str, delivery_id: str) -> bool:
        """Claim a suite promotion as the cause of this delivery; False if it explained one."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO explained (promotion_id, delivery_id) VALUES (?, ?)",
                (promotion_id, delivery_id),
            )
            return cursor.rowcount == 1

    def listing(self, state: str = "", limit: int = 100) -> list[dict[str, Any]]:
        query = (
            "SELECT id, received, event, model, alias, version, state, attempts, detail"
            " FROM deliveries"
        )
        arguments: tuple[Any, ...] = ()
        if state:
            query, arguments = query + " WHERE state = ?", (state,)
        with self._lock:
            rows = self._db.execute(
                query + " ORDER BY received DESC LIMIT ?", (*arguments, limit)
            ).fetchall()
        keys = ("id", "received", "event", "model", "alias", "version", "state", "attempts")
        return [dict(zip((*keys, "detail"), row, strict=True)) for row in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) FROM deliveries GROUP BY state"
            ).fetchall()
        return {str(state): int(count) for state, count in rows}

    def prune(self, now: float) -> None:
        """Forget finished deliveries after KEEP_SECONDS (far past the signature tolerance, so a
        replay of a forgotten id is refused as stale)."""
        with self._lock:
            self._db.execute(
                "DELETE FROM deliveries WHERE state != 'queued' AND received < ?",
                (now - KEEP_SECONDS,),
            )


# Who moved the alias, from the registry: None when the relay should dispatch, else the suite's
# history entry that explains the move. Raises when the registry cannot be read.
SuiteCheck = Callable[[relay.Event, relay.Delivery, Outbox], Any]
Dispatch = Callable[[dict[str, str]], None]


@dataclass
class Relay:
    """The service's state: the secret, rules, outbox, the dispatch and the worker thread."""

    secret: str
    rules: relay.Rules
    outbox: Outbox
    dispatch: Dispatch
    suite_check: SuiteCheck | None = None
    retry: Retry = field(default_factory=Retry)
    tolerance: int = relay.DEFAULT_TOLERANCE_SECONDS
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        if not self.secret:
            raise ConfigError(
                "the relay has no webhook secret",
                "set MLOPS_RELAY_SECRET to the secret the MLflow webhook was created with",
            )
        self.metrics = CollectorRegistry()
        self.deliveries = Counter(
            "mlops_relay_deliveries",
            "Webhook deliveries received, by outcome",
            ["outcome"],
            registry=self.metrics,
        )
        self.dispatches = Counter(
            "mlops_relay_dispatches",
            "Accepted deliveries, by what the worker did with them",
            ["outcome"],
            registry=self.metrics,
        )
        self.queue_depth = Gauge(
            "mlops_relay_queue_depth", "Deliveries not dispatched yet", registry=self.metrics
        )

    # ------------------------------------------------------------------------- receiving

    def receive(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """The HTTP answer to one delivery. Never raises for bad input; never echoes the body."""
        try:
            if len(body) > MAX_BODY_BYTES:
                raise relay.Refused(413, "too_large", "the body is larger than a webhook's")
            delivery = relay.verify(headers, body, self.secret, tolerance=self.tolerance)
            event = relay.parse_event(body)
        except relay.Refused as refused:
            self.deliveries.labels(refused.reason).inc()
            log.warning("refused a delivery: %s (%s)", refused.reason, refused)
            return refused.status, {"status": "refused", "reason": refused.reason}
        why_not = self.rules.wanted(event)
        if why_not:
            self.deliveries.labels("ignored").inc()
            log.info("delivery %s ignored: %s", delivery.id, why_not)
            return 200, {"status": "ignored", "reason": why_not}
        payload = relay.client_payload(event, delivery)
        if not self.outbox.accept(delivery, event, payload):
            # MLflow's retry of a delivery already taken, or a replay: taken once, sent once.
            self.deliveries.labels("duplicate").inc()
            log.info("delivery %s seen before: not dispatched again", delivery.id)
            return 200, {"status": "duplicate", "delivery_id": delivery.id}
        self.deliveries.labels("accepted").inc()
        log.info(
            "delivery %s accepted: %s@%s -> version %s",
            delivery.id,
            event.model,
            event.alias,
            event.version,
        )
        self._wake.set()
        return 202, {"status": "accepted", "delivery_id": delivery.id}

    # ------------------------------------------------------------------------- dispatching

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="relay-dispatch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _work(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=30)
            self._wake.clear()
            try:
                pending = self.outbox.queued()
                self.queue_depth.set(len(pending))
                for item in pending:
                    if self._stop.is_set():
                        return
                    self._deliver(item)
                    self.queue_depth.dec()
                self.outbox.prune(time.time())
            except Exception:  # the worker must outlive any one delivery
                log.exception("the dispatch worker failed; it goes on with the next delivery")

    def _deliver(self, item: Queued) -> None:
        """Send one delivery's dispatch, retrying what may pass later; record the outcome."""
        delivery_id = item.delivery.id
        for attempt in range(1, self.retry.attempts + 1):
            try:
                explained = self._explained(item)
                if explained is not None:
                    detail = f"moved by mlops-actions (promotion {explained.id})"
                    self._record(delivery_id, "skipped", attempt, detail, "suite_move")
                    return
                self.dispatch(item.payload)
            except ServiceError as error:  # GitHub or MLflow down, 5xx, rate limit: may pass
                detail, again = str(error), True
            except MlopsError as error:  # a refused token or repository will not pass
                detail, again = str(error), False
            except Exception as error:  # a network error no client wrapped
                detail, again = f"{type(error).__name__}: {error}", True
            else:
                self._record(delivery_id, "sent", attempt, "", "sent")
                return
            if not again or attempt == self.retry.attempts:
                break
            delay = self.retry.delay(attempt)
            log.warning(
                "delivery %s: attempt %d failed (%s); retrying in %.1f s",
                delivery_id,
                attempt,
                detail,
                delay,
            )
            if self._stop.wait(delay):
                return  # shutting down: it stays queued and is sent after the restart
        self._record(delivery_id, "failed", attempt, detail, "failed")
        log.error(
            "delivery %s NOT dispatched after %d attempt(s): %s. GET /deliveries?state=failed "
            "lists it; run the deploy workflow by hand, or move the alias again",
            delivery_id,
            attempt,
            detail,
        )

    def _explained(self, item: Queued) -> Any:
        if self.suite_check is None:
            return None
        return self.suite_check(item.event(), item.delivery, self.outbox)

    def _record(
        self, delivery_id: str, state: str, attempts: int, detail: str, outcome: str
    ) -> None:
        self.outbox.finish(delivery_id, state, attempts, detail)
        self.dispatches.labels(outcome).inc()
        if state != "failed":
            log.info("delivery %s %s%s", delivery_id, state, f": {detail}" if detail else "")


# ----------------------------------------------------------------------------- the registry


def registry_suite_check(
    client: Any, window: float = relay.DEFAULT_SUITE_WINDOW_SECONDS
) -> SuiteCheck:
    """A SuiteCheck that reads promote's history from the MLflow registry."""
    from . import promote, registry

    def check(event: relay.Event, delivery: relay.Delivery, outbox: Outbox) -> Any:
        try:
            model = registry.registered_model(client, event.model)
        except Exception as error:
            if "RESOURCE_DOES_NOT_EXIST" in str(error):
                return None
            raise ServiceError(
                f"the MLflow registry could not be read for {event.model!r}: "
                f"{type(error).__name__}",
                "check the relay's MLFLOW_TRACKING_URI and credentials",
            ) from None
        moves = promote.parse_history(dict(model.tags or {}), event.alias)
        return relay.suite_move(
            moves,
            event,
            relay.event_time(event, delivery),
            lambda promotion_id: outbox.explain(promotion_id, delivery.id),
            window,
        )

    return check


# ----------------------------------------------------------------------------- HTTP


def asgi_app(service: Relay) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    async def webhook(request: Request) -> Response:
        body = await request.body()
        headers = {key.lower(): value for key, value in request.headers.items()}
        status, answer = service.receive(headers, body)
        return JSONResponse(answer, status_code=status)

    async def health(_request: Request) -> Response:
        alive = service._thread is not None and service._thread.is_alive()
        return JSONResponse(
            {"status": "ok" if alive else "worker stopped", "deliveries": service.outbox.counts()},
            status_code=200 if alive else 503,
        )

    async def deliveries(request: Request) -> Response:
        state = request.query_params.get("state", "")
        return JSONResponse({"deliveries": service.outbox.listing(state)})

    async def metrics(_request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(service.metrics), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    return Starlette(
        routes=[
            Route("/webhook", webhook, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/deliveries", deliveries, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def state_path(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory / "relay.sqlite3")
