"""Move a registry alias safely: registration, a lock, an expected-holder check, history, rollback.

MLflow has no compare-and-set for aliases and keeps no record of past holders, so this module
adds both on top of the registry API, and keeps everything inside the registry itself:

- **Lock**: a registered model named `mlops-lock--<model>--<alias>`, created for the duration of
  one move. Creating a registered model is atomic on every store (a unique key), so of several
  concurrent promotions exactly one holds the lock; the others wait, then fail or re-check.
- **History**: one registered-model tag per move, `mlops.history.<alias>.<seq>`, a small JSON
  document (from, to, when, why, workflow run, commit). The newest `history_limit` are kept.
  An entry is written `pending` before the alias moves and `done` after. A pending entry that a
  crash left behind is settled by the next move: done if the alias points at its target,
  dropped otherwise. So the history never claims a move that did not happen.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .errors import EXIT_CONFLICT, ConfigError, MlopsError
from .registry import Candidate, VersionRef, alias_holder, version_ref

if TYPE_CHECKING:
    from mlflow import MlflowClient

HISTORY_PREFIX = "mlops.history."
LOCK_PREFIX = "mlops-lock--"
ANY = "any"  # expected holder: do not check
NONE = "none"  # expected holder: the alias must be free


class Conflict(MlopsError):
    """The registry changed under us: the alias moved, or another promotion holds the lock."""

    exit_code = EXIT_CONFLICT
    title = "promotion conflict"


@dataclass(frozen=True)
class Move:
    """One entry of an alias's history."""

    seq: int
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str  # promote | rollback
    at: str  # ISO 8601, UTC
    state: str = "done"  # pending | done
    workflow_run: str = ""
    commit: str = ""
    actor: str = ""
    note: str = ""

    def key(self) -> str:
        return history_key(self.alias, self.seq)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in ("", None)})


def history_key(alias: str, seq: int) -> str:
    return f"{HISTORY_PREFIX}{alias}.{seq:06d}"


def parse_history(tags: dict[str, str], alias: str) -> list[Move]:
    """The recorded moves of one alias, oldest first; unreadable entries are skipped."""
    prefix = f"{HISTORY_PREFIX}{alias}."
    moves = []
    for key, value in tags.items():
        if not key.startswith(prefix):
            continue
        try:
            data = json.loads(value)
            moves.append(
                Move(
                    seq=int(key[len(prefix) :]),
                    alias=alias,
                    from_version=data.get("from_version"),
                    to_version=data.get("to_version"),
                    reason=str(data.get("reason", "")),
                    at=str(data.get("at", "")),
                    state=str(data.get("state", "done")),
                    workflow_run=str(data.get("workflow_run", "")),
                    commit=str(data.get("commit", "")),
                    actor=str(data.get("actor", "")),
                    note=str(data.get("note", "")),
                )
            )
        except (ValueError, TypeError, AttributeError):
            continue
    return sorted(moves, key=lambda move: move.seq)


def settled(moves: list[Move], holder: str | None) -> list[Move]:
    """History as it happened: a pending last move counts if the alias points at its target."""
    result = [m for m in moves if m.state == "done"]
    pending = [m for m in moves if m.state != "done"]
    last_done = result[-1].seq if result else -1
    if pending and pending[-1].seq > last_done and pending[-1].to_version == holder:
        result.append(pending[-1])
    return result


def previous_holder(moves: list[Move], holder: str | None) -> str | None:
    """The version the alias pointed at before the move that gave it to `holder`."""
    for move in reversed(moves):
        if move.to_version == holder:
            return move.from_version
    return None


# ----------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Provenance:
    """Who moves the alias and why, for history entries, tags and the description."""

    workflow_run: str = ""
    commit: str = ""
    actor: str = ""
    data_fingerprint: str = ""
    gate_verdict: str = ""
    gate_link: str = ""


@dataclass(frozen=True)
class MoveResult:
    model_name: str
    alias: str
    version: str
    previous_version: str | None
    changed: bool
    registered: bool  # a new registry version was created for the candidate
    message: str
    history: list[Move] = field(default_factory=list)

    @property
    def version_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    @property
    def alias_uri(self) -> str:
        return f"models:/{self.model_name}@{self.alias}"


def lock_name(model_name: str, alias: str) -> str:
    return f"{LOCK_PREFIX}{model_name}--{alias}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _error_code(error: Exception) -> str:
    return str(getattr(error, "error_code", ""))


@contextmanager
def alias_lock(
    client: MlflowClient,
    model_name: str,
    alias: str,
    *,
    wait_seconds: float,
    ttl_seconds: float,
    holder: str,
) -> Iterator[None]:
    """Hold the lock of one alias: a registered model that only one creator can create."""
    from mlflow.exceptions import MlflowException

    name = lock_name(model_name, alias)
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_seconds
    delay = 0.2
    while True:
        try:
            client.create_registered_model(
                name,
                tags={
                    "mlops.lock.token": token,
                    "mlops.lock.expires": str(time.time() + ttl_seconds),
                    "mlops.lock.holder": holder,
                },
                description=(
                    f"Lock held by mlops-actions while it moves the '{alias}' alias of "
                    f"'{model_name}'; deleted when the move ends. If no promotion is running, "
                    f"remove it with: mlops-actions registry unlock --model-name {model_name} "
                    f"--alias {alias}"
                ),
            )
            break
        except MlflowException as error:
            if _error_code(error) != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            existing = dict(client.get_registered_model(name).tags or {})
        except MlflowException as error:
            if _error_code(error) == "RESOURCE_DOES_NOT_EXIST":
                continue  # released in between: try again at once
            raise
        if existing.get("mlops.lock.token") == token:
            break  # a retried request that had succeeded: the lock is ours
        if float(existing.get("mlops.lock.expires", "0") or 0) < time.time():
            _delete_quietly(client, name)  # abandoned by a crashed promotion
            continue
        if time.monotonic() >= deadline:
            raise Conflict(
                f"another promotion of {model_name}@{alias} is running "
                f"({existing.get('mlops.lock.holder') or 'holder unknown'})",
                "wait for it, or serialise promotions with a workflow `concurrency:` group; "
                "remove a stale lock with `mlops-actions registry unlock`",
            )
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
    try:
        yield
    finally:
        _delete_quietly(client, name)


def delete_lock(client: MlflowClient, name: str) -> None:
    _delete_quietly(client, name)


def _delete_quietly(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model(name)
    except MlflowException as error:
        if _error_code(error) != "RESOURCE_DOES_NOT_EXIST":
            raise


def find_registered(
    client: MlflowClient, model_name: str, candidate: Candidate
) -> VersionRef | None:
    """The registry version of the candidate if it has one already (a re-run), else None."""
    from mlflow.exceptions import MlflowException

    if candidate.version is not None:
        if candidate.version.name != model_name:
            raise ConfigError(
                f"candidate {candidate.given} is a version of '{candidate.version.name}', "
                f"not of '{model_name}'",
                "promote it under its own name, or pass the run id or models:/m-… URI",
            )
        return candidate.version
    try:
        found = client.search_model_versions(f"name = '{model_name}'")
    except MlflowException as error:
        if _error_code(error) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    model_id = candidate.model_uri.removeprefix("models:/") if candidate.model_uri else ""
    for version in found:
        ids = {getattr(version, "model_id", None), (version.source or "").removeprefix("models:/")}
        if (model_id and model_id in ids) or (not model_id and version.run_id == candidate.run_id):
            return version_ref(version)
    return None


def register(
    client: MlflowClient, model_name: str, candidate: Candidate, provenance: Provenance
) -> VersionRef:
    """A new registry version of the candidate's logged model."""
    from mlflow.exceptions import MlflowException

    if not candidate.model_uri:
        raise ConfigError(
            f"candidate {candidate.given} has no logged model to register",
            "log a model in the training run (mlflow.<flavor>.log_model)",
        )
    try:
        client.create_registered_model(model_name)
    except MlflowException as error:
        if _error_code(error) != "RESOURCE_ALREADY_EXISTS":
            raise
    model_id = candidate.model_uri.removeprefix("models:/")
    created = client.create_model_version(
        model_name,
        source=candidate.model_uri,
        run_id=candidate.run_id or None,
        model_id=model_id if model_id.startswith("m-") else None,
        tags={k: v for k, v in version_tags(candidate, provenance).items() if v},
        description=f"Registered by mlops-actions from {candidate.model_uri}.",
    )
    return version_ref(created)


def version_tags(candidate: Candidate, provenance: Provenance) -> dict[str, str]:
    return {
        "mlops.source.run_id": candidate.run_id,
        "mlops.source.model_uri": candidate.model_uri,
        "mlops.git.commit": provenance.commit,
        "mlops.data.fingerprint": provenance.data_fingerprint,
        "mlops.gate.verdict": provenance.gate_verdict,
        "mlops.gate.link": provenance.gate_link,
        "mlops.github.run_url": provenance.workflow_run,
    }


@dataclass(frozen=True)
class AliasState:
    holder: str | None  # the version the alias points at
    history: list[Move]  # settled, oldest first
    next_seq: int


def _settle_pending(client: MlflowClient, model_name: str, alias: str) -> AliasState:
    """Read the alias once, and finish or drop pending entries a crashed move left."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(model_name)
    except MlflowException as error:
        if _error_code(error) == "RESOURCE_DOES_NOT_EXIST":
            return AliasState(None, [], 1)  # the first promotion registers the model
        raise
    holder = dict(model.aliases or {}).get(alias)
    holder = None if holder is None else str(holder)
    moves = parse_history(dict(model.tags or {}), alias)
    history = settled(moves, holder)
    kept = {m.seq for m in history}
    for move in moves:
        if move.state == "pending":
            if move.seq in kept:
                done = replace(move, state="done")
                client.set_registered_model_tag(model_name, move.key(), done.to_json())
            else:
                client.delete_registered_model_tag(model_name, move.key())
    next_seq = max((m.seq for m in moves), default=0) + 1
    return AliasState(holder, [replace(m, state="done") for m in history], next_seq)


def move_alias(
    client: MlflowClient,
    *,
    model_name: str,
    alias: str,
    find: Callable[[], VersionRef | None],
    create: Callable[[], VersionRef] | None = None,
    expected: str,  # a version number, ANY or NONE
    reason: str,
    provenance: Provenance,
    note: str = "",
    stage: str = "",
    history_limit: int = 50,
    lock_wait_seconds: float = 120,
    lock_ttl_seconds: float = 600,
) -> MoveResult:
    """Under the alias's lock: check the holder, register if needed (`create`), move, record.

    Nothing is registered or moved when the check fails, so a lost race leaves no trace.
    """
    with alias_lock(
        client,
        model_name,
        alias,
        wait_seconds=lock_wait_seconds,
        ttl_seconds=lock_ttl_seconds,
        holder=provenance.workflow_run or provenance.actor or "local",
    ):
        state = _settle_pending(client, model_name, alias)
        history, current_version = state.history, state.holder
        target = find()
        if target is not None and current_version == target.version:
            return MoveResult(
                model_name,
                alias,
                target.version,
                previous_holder(history, current_version),
                changed=False,
                registered=False,
                message=f"{model_name}@{alias} already points at version {target.version}: "
                "nothing to do",
                history=history,
            )
        wanted = None if expected == NONE else expected
        if expected != ANY and current_version != wanted:
            raise Conflict(
                f"{model_name}@{alias} points at "
                f"{'version ' + current_version if current_version else 'no version'}, "
                f"not at the expected {'version ' + expected if wanted else 'no version'}: "
                "it moved since the gate compared against it",
                "re-run the gate against the new holder, or pass expected-version "
                f"{current_version or NONE} after checking it",
            )
        registered = target is None
        if target is None:
            if create is None:
                raise ConfigError(f"{model_name} has no such version to move @{alias} to")
            target = create()
        move = Move(
            seq=state.next_seq,
            alias=alias,
            from_version=current_version,
            to_version=target.version,
            reason=reason,
            at=_now(),
            state="pending",
            workflow_run=provenance.workflow_run,
            commit=provenance.commit,
            actor=provenance.actor,
            note=note,
        )
        client.set_registered_model_tag(model_name, move.key(), move.to_json())
        client.set_registered_model_alias(model_name, alias, target.version)
        if stage:
            client.transition_model_version_stage(
                model_name, target.version, stage, archive_existing_versions=True
            )
        done = replace(move, state="done")
        client.set_registered_model_tag(model_name, move.key(), done.to_json())
        history.append(done)
        if history_limit > 0:
            for old in history[:-history_limit]:
                client.delete_registered_model_tag(model_name, old.key())
            history = history[-history_limit:]
        return MoveResult(
            model_name,
            alias,
            target.version,
            current_version,
            changed=True,
            registered=registered,
            message=f"{model_name}@{alias}: "
            f"{'version ' + current_version if current_version else 'no version'} → "
            f"version {target.version} ({reason})",
            history=history,
        )


def history_of(client: MlflowClient, model_name: str, alias: str) -> list[Move]:
    """The settled history of one alias, oldest first (without changing anything)."""
    model = client.get_registered_model(model_name)
    return history_from(dict(model.tags or {}), dict(model.aliases or {}), alias)


def history_from(tags: dict[str, str], aliases: dict[str, Any], alias: str) -> list[Move]:
    """The settled history of one alias from its model's tags and aliases."""
    holder = aliases.get(alias)
    return settled(parse_history(tags, alias), None if holder is None else str(holder))


def rollback_target(history: list[Move], holder: str | None) -> str:
    """The version to go back to: the holder before the move that installed the current one."""
    previous = previous_holder(history, holder)
    if previous is None:
        raise ConfigError(
            "the history records no earlier holder to roll back to",
            "name the version to restore with --to-version",
        )
    return previous


def describe(alias: str, provenance: Provenance, reason: str) -> str:
    """The version's description: how it got where it is."""
    verb = "Rolled back" if reason == "rollback" else "Promoted"
    parts = [f"{verb} to @{alias} by mlops-actions on {_now()}"]
    if provenance.gate_verdict:
        gate = f"gate: {provenance.gate_verdict}"
        parts.append(f"{gate} ({provenance.gate_link})" if provenance.gate_link else gate)
    if provenance.commit:
        parts.append(f"commit {provenance.commit}")
    if provenance.workflow_run:
        parts.append(f"workflow run {provenance.workflow_run}")
    if provenance.data_fingerprint:
        parts.append(f"data {provenance.data_fingerprint[:16]}")
    return "; ".join(parts) + "."


def promote(
    client: MlflowClient,
    *,
    model_name: str,
    alias: str,
    candidate: Candidate,
    expected: str,
    provenance: Provenance,
    stage: str = "",
    history_limit: int = 50,
    lock_wait_seconds: float = 120,
) -> MoveResult:
    """Register the candidate if needed, move the alias to it, and label the version."""
    result = move_alias(
        client,
        model_name=model_name,
        alias=alias,
        find=lambda: find_registered(client, model_name, candidate),
        create=lambda: register(client, model_name, candidate, provenance),
        expected=expected,
        reason="promote",
        provenance=provenance,
        note=f"gate {provenance.gate_verdict}" if provenance.gate_verdict else "",
        stage=stage,
        history_limit=history_limit,
        lock_wait_seconds=lock_wait_seconds,
    )
    if result.changed:
        for key, value in version_tags(candidate, provenance).items():
            if value:
                client.set_model_version_tag(model_name, result.version, key, value)
        client.update_model_version(
            model_name, result.version, description=describe(alias, provenance, "promote")
        )
    return result


def rollback(
    client: MlflowClient,
    *,
    model_name: str,
    alias: str,
    to_version: str,
    provenance: Provenance,
    history_limit: int = 50,
    lock_wait_seconds: float = 120,
) -> MoveResult:
    """Move the alias back to its previous holder (or `to_version`), and say so on the version."""
    holder = alias_holder(client, model_name, alias)
    if holder is None:
        raise ConfigError(f"{model_name}@{alias} points at no version: nothing to roll back")
    target = to_version or rollback_target(history_of(client, model_name, alias), holder.version)
    version = version_ref(client.get_model_version(model_name, target))
    result = move_alias(
        client,
        model_name=model_name,
        alias=alias,
        find=lambda: version,
        expected=holder.version,
        reason="rollback",
        provenance=provenance,
        history_limit=history_limit,
        lock_wait_seconds=lock_wait_seconds,
    )
    if result.changed:
        client.update_model_version(
            model_name, version.version, description=describe(alias, provenance, "rollback")
        )
    return result


def as_dicts(moves: list[Move]) -> list[dict[str, Any]]:
    return [asdict(m) for m in moves]
