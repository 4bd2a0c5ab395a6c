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


def test_a_suite_history_entry_explains_one_move_to_its_version_near_its_time() -> None:
    from mlops_actions import promote

    def entry(seq: int, version: str, at: str, promotion_id: str) -> promote.Move:
        return promote.Move(seq, "champion", None, version, "promote", at, id=promotion_id)

    moves = [
        entry(1, "2", "2027-01-15T07:00:00+00:00", "old"),
        entry(2, "7", "2027-01-15T07:59:58+00:00", "p7"),
        entry(3, "8", "2027-01-15T08:00:30+00:00", "p8"),  # a later move, already in history
    ]
    event = relay.parse_event(json.dumps(ALIAS_MOVED).encode())  # version 7 at 08:00:00
    moved_at = relay.event_time(event, relay.Delivery("d", 0))
    claimed: set[str] = set()

    def explained(promotion_id: str) -> bool:
        if promotion_id in claimed:
            return False
        claimed.add(promotion_id)
        return True

    assert relay.suite_move(moves, event, moved_at, explained).id == "p7"
    assert relay.suite_move(moves, event, moved_at, explained) is None  # moved back by a person
    far = relay.event_time(event, relay.Delivery("d", 0)) + 3600
    claimed.clear()
    assert relay.suite_move(moves, event, far, explained) is None  # an old entry explains nothing
    bad_time = relay.Event("model_version_alias", "created", "m", "7", "champion", "not a time")
    assert relay.event_time(bad_time, relay.Delivery("d", 1_800_000_000)) == 1_800_000_000
