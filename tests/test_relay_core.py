"""The relay's pure core: MLflow's own signer is the oracle for signatures; freshness,
replays and filters (issue 18, in progress)."""

from __future__ import annotations

import json
import uuid

import pytest

from mlops_actions import relay

SECRET = "s3cr3t-for-tests"


def mlflow_delivery(
    body: dict, secret: str = SECRET, at: int = 1_800_000_000
) -> tuple[dict, bytes]:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    text = json.dumps(body)
    delivery_id, timestamp = str(uuid.uuid4()), str(at)
    headers = {
        relay.DELIVERY_ID_HEADER: delivery_id,
        relay.TIMESTAMP_HEADER: timestamp,
        relay.SIGNATURE_HEADER: _generate_hmac_signature(secret, delivery_id, timestamp, text),
    }
    return headers, text.encode()


ALIAS_MOVED = {
    "entity": "model_version_alias",
    "action": "created",
    "timestamp": "2027-01-15T08:00:00+00:00",
    "data": {"name": "Modèle 'iris'", "alias": "champion", "version": "7"},
}


def test_signature_equals_mlflows_and_verify_takes_a_fresh_delivery() -> None:
    headers, body = mlflow_delivery(ALIAS_MOVED)
    delivery = relay.verify(headers, body, SECRET, now=1_800_000_010)
    assert delivery.id == headers[relay.DELIVERY_ID_HEADER]
    assert (
        relay.signature(SECRET, delivery.id, str(delivery.timestamp), body)
        == headers[relay.SIGNATURE_HEADER]
    )


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        ({"secret": "another"}, 401, "bad_signature"),
        ({"now": 1_800_000_000 + 301}, 401, "stale"),
        ({"now": 1_800_000_000 - 301}, 401, "stale"),
        ({"drop": relay.SIGNATURE_HEADER}, 400, "unsigned"),
        ({"tamper": True}, 401, "bad_signature"),
    ],
)
def test_bad_deliveries_are_refused(change: dict, status: int, reason: str) -> None:
    headers, body = mlflow_delivery(ALIAS_MOVED, change.get("secret", SECRET))
    if "drop" in change:
        headers.pop(change["drop"])
    if change.get("tamper"):
        body = body.replace(b'"7"', b'"8"')
    with pytest.raises(relay.Refused) as refused:
        relay.verify(headers, body, SECRET, now=change.get("now", 1_800_000_000))
    assert (refused.value.status, refused.value.reason) == (status, reason)
    assert SECRET not in str(refused.value)


def test_a_replayed_delivery_is_claimed_once_until_released_or_forgotten() -> None:
    guard = relay.ReplayGuard(ttl=600, capacity=3)
    assert guard.claim("a", now=0)
    assert not guard.claim("a", now=10)
    guard.release("a")
    assert guard.claim("a", now=20)
    assert guard.claim("b", now=700)  # "a" is older than the ttl: forgotten
    assert guard.claim("a", now=701)
    for name in ("c", "d", "e"):
        assert guard.claim(name, now=702)
    assert guard.claim("b", now=703)  # pushed out by capacity


def test_rules_and_the_dispatch_payload() -> None:
    event = relay.parse_event(json.dumps(ALIAS_MOVED).encode())
    rules = relay.Rules(models=("Modèle*",), aliases=("champion",))
    assert rules.wanted(event) == ""
    assert "alias 'challenger'" in rules.wanted(
        relay.parse_event(
            json.dumps(
                {**ALIAS_MOVED, "data": {**ALIAS_MOVED["data"], "alias": "challenger"}}
            ).encode()
        )
    )
    assert "model 'other'" in rules.wanted(
        relay.parse_event(
            json.dumps({**ALIAS_MOVED, "data": {**ALIAS_MOVED["data"], "name": "other"}}).encode()
        )
    )
    assert "not relayed" in rules.wanted(
        relay.parse_event(json.dumps({**ALIAS_MOVED, "entity": "model_version"}).encode())
    )
    payload = relay.client_payload(event, relay.Delivery("d-1", 1))
    assert payload["model_uri"] == "models:/Modèle 'iris'/7"
    assert len(payload) <= 10
    with pytest.raises(relay.Refused, match="not JSON"):
        relay.parse_event(b"{")
