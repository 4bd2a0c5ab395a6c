"""The pure core of `mlops-actions relay`: MLflow registry webhooks in, GitHub
repository_dispatch events out. The service around it is `relay_app`.

MLflow (3.3+) signs a delivery as Standard Webhooks do: `X-MLflow-Signature: v1,<base64 of
HMAC-SHA256(secret, "<delivery id>.<timestamp>.<body>")>`, with `X-MLflow-Delivery-Id` (a UUID
per delivery, the same on MLflow's own HTTP retries) and `X-MLflow-Timestamp` (Unix seconds).
A delivery is taken only when the signature matches, the timestamp is within the tolerance of
now, and its id has not been taken before (MLflow retries a delivery whose answer was slow or
lost: one move must make one dispatch; the outbox in `relay_app` remembers the ids).

A move made by the suite's own promote is not relayed: that workflow already builds (or sends its
own dispatch), and two builds of one move is the loop the relay must not start. promote writes
its history entry (with a promotion id) before it moves the alias, so by the time MLflow's webhook
arrives the registry says who moved it; `suite_move` reads that.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

SIGNATURE_HEADER = "x-mlflow-signature"
TIMESTAMP_HEADER = "x-mlflow-timestamp"
DELIVERY_ID_HEADER = "x-mlflow-delivery-id"
SIGNATURE_VERSION = "v1"
DEFAULT_SUITE_WINDOW_SECONDS = 900  # a suite's history entry explains a move this close to it
DEFAULT_TOLERANCE_SECONDS = 300  # Standard Webhooks' advice: five minutes either way
ALIAS_CREATED = ("model_version_alias", "created")
EVENT_TYPE = "mlops-alias-moved"  # the repository_dispatch event type the template listens to


class Refused(Exception):
    """A delivery the relay will not act on: `status` is the HTTP answer, `reason` a short
    label for logs and metrics (never the secret, never the body)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    id: str
    timestamp: int


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The `X-MLflow-Signature` value MLflow sends for this delivery."""
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> Delivery:
    """The delivery's id and time when it is signed with `secret` and fresh, else Refused.
    `headers` keys in lower case (ASGI and most servers give them so)."""
    delivery_id = headers.get(DELIVERY_ID_HEADER, "")
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    if not (delivery_id and timestamp and given):
        raise Refused(400, "unsigned", "the delivery lacks MLflow's signature headers")
    if not timestamp.isdigit():
        raise Refused(400, "bad_timestamp", "X-MLflow-Timestamp is not Unix seconds")
    expected = signature(secret, delivery_id, timestamp, body)
    # Standard Webhooks allow several space-separated signatures (secret rotation).
    if not any(hmac.compare_digest(expected, candidate) for candidate in given.split()):
        raise Refused(401, "bad_signature", "the signature does not match the relay's secret")
    age = (time.time() if now is None else now) - int(timestamp)
    if abs(age) > tolerance:
        raise Refused(
            401, "stale", f"the delivery is {age:.0f} s old; the tolerance is {tolerance} s"
        )
    return Delivery(delivery_id, int(timestamp))


@dataclass(frozen=True)
class Event:
    entity: str
    action: str
    model: str
    version: str
    alias: str = ""
    timestamp: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


def parse_event(body: bytes) -> Event:
    try:
        document = json.loads(body)
    except ValueError:
        raise Refused(400, "bad_body", "the body is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), dict):
        raise Refused(400, "bad_body", "the body is not an MLflow webhook payload")
    data = document["data"]
    entity, action = str(document.get("entity", "")), str(document.get("action", ""))
    return Event(
        entity=entity,
        action=action,
        model=str(data.get("name", "")),
        version=str(data.get("version", "")),
        alias=str(data.get("alias", "")),
        timestamp=str(document.get("timestamp", "")),
        data=data,
    )


@dataclass(frozen=True)
class Rules:
    """Which events start a dispatch: alias moves by default, for the models and aliases given
    (shell patterns; empty: any)."""

    models: Sequence[str] = ()
    aliases: Sequence[str] = ("champion",)
    events: Sequence[tuple[str, str]] = (ALIAS_CREATED,)

    def wanted(self, event: Event) -> str:
        """'' when the event should be dispatched, else why not."""
        if (event.entity, event.action) not in self.events:
            return f"event {event.entity}.{event.action} is not relayed"
        if self.models and not any(fnmatch.fnmatchcase(event.model, p) for p in self.models):
            return f"model {event.model!r} is not relayed"
        if (
            event.alias
            and self.aliases
            and not any(fnmatch.fnmatchcase(event.alias, pattern) for pattern in self.aliases)
        ):
            return f"alias {event.alias!r} is not relayed"
        return ""


def client_payload(event: Event, delivery: Delivery) -> dict[str, str]:
    """The repository_dispatch client_payload (GitHub allows at most 10 top-level keys)."""
    payload = {
        "model": event.model,
        "version": event.version,
        "alias": event.alias,
        "model_uri": f"models:/{event.model}/{event.version}",
        "event": f"{event.entity}.{event.action}",
        "moved_by": "mlflow-webhook",
        "delivery_id": delivery.id,
        "moved_at": event.timestamp,
    }
    return {key: value for key, value in payload.items() if value}


def event_time(event: Event, delivery: Delivery) -> float:
    """When the alias moved: the payload's ISO time, else the signed delivery time."""
    try:
        moved = datetime.fromisoformat(event.timestamp.replace("Z", "+00:00"))
    except ValueError:
        return float(delivery.timestamp)
    if moved.tzinfo is None:
        moved = moved.replace(tzinfo=timezone.utc)
    return moved.timestamp()


def suite_move(
    moves: Sequence[Any],
    event: Event,
    moved_at: float,
    explained: Callable[[str], bool],
    window: float = DEFAULT_SUITE_WINDOW_SECONDS,
) -> Any:
    """The suite's history entry that explains this move, or None (moved by someone else).

    `moves` are promote's history entries of the event's alias (pending ones too: promote writes
    the entry before it moves the alias). An entry explains the newest unexplained move to its
    version within `window` seconds of its time, and only one: `explained(promotion_id)` claims
    it, so a person who moves the alias back to that version later is relayed."""
    for move in reversed(list(moves)):
        if move.to_version != event.version or not move.id:
            continue
        try:
            at = datetime.fromisoformat(move.at.replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        if abs(moved_at - at) <= window and explained(move.id):
            return move
    return None
