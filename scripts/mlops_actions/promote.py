"""Move a registry alias exactly once: validation, a lock, an expected-holder check, idempotent
registration, history with resumable follow-ups, rollback.

MLflow has no compare-and-set for aliases and keeps no record of past holders, so this module
adds both on top of the registry API, and keeps everything inside the registry itself:

- **Lock**: a registered model named `mlops-lock--<model>--<alias>`, created for the duration of
  one move. Creating a registered model is atomic on every store (a unique key), so of several
  concurrent promotions exactly one holds the lock. The lock names its holder (workflow run, host,
  process) and an expiry that a heartbeat renews; a lock past expiry, or whose holder is provably
  dead (same machine, process gone), is taken over through a second create-or-fail registered
  model (`<lock>--takeover--<token>`), so two waiters can never both take over one lock, nor
  delete a lock that a third has just taken.
- **Registration**: tagged with a token and de-duplicated after the call, so a POST that MLflow's
  client retried after a lost response leaves one version, and a re-run reuses it.
- **History**: one registered-model tag per move, `mlops.history.<alias>.<seq>`, a small JSON
  document (from, to, when, why, workflow run, commit, promotion id). The newest `history_limit`
  are kept. An entry is written `pending` before the alias moves and `done` once the follow-ups
  (stage, version tags, description) are done; a deployment event is `dispatch: pending` until
  GitHub accepted it, then `sent`. A re-run of a promotion whose alias moved but whose follow-ups
  did not finish finishes them (once); a pending entry of a move that did not happen is dropped.
  So the history never claims a move that did not happen, nor loses one that did.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EXIT_CONFLICT, EXIT_FOLLOW_UP, ConfigError, MlopsError
from .registry import (
    RUN_ID,
    Candidate,
    VersionRef,
    alias_holder,
    filter_literal,
    registered_model,
    version_ref,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

HISTORY_PREFIX = "mlops.history."
LOCK_PREFIX = "mlops-lock--"
TAKEOVER_INFIX = "--takeover--"
REGISTRATION_TOKEN = "mlops.registration.token"  # noqa: S105 - a tag key
ANY = "any"  # expected holder: do not check
NONE = "none"  # expected holder: the alias must be free


class Conflict(MlopsError):
    """The registry changed under us: the alias moved, or another promotion holds the lock."""

    exit_code = EXIT_CONFLICT
    title = "promotion conflict"


class FollowUpFailed(MlopsError):
    """The alias moved, but a follow-up (stage, version tags, history, dispatch) failed.

    Distinct from every "not moved" failure: the deployment follows the alias already, and a
    re-run of the same promotion finishes the follow-ups instead of saying "nothing to do".
    """

    exit_code = EXIT_FOLLOW_UP
    title = "moved, follow-up failed"

    def __init__(self, result: MoveResult, step: str, cause: BaseException) -> None:
        super().__init__(
            f"{result.model_name}@{result.alias} moved to version {result.version}, "
            f"but {step} failed",
            "re-run the same promotion: it finishes what is left, once",
        )
        self.result = result
        self.step = step
        self.cause = cause


@dataclass(frozen=True)
class Move:
    """One entry of an alias's history."""

    seq: int
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str  # promote | rollback
    at: str  # ISO 8601, UTC
    state: str = "done"  # pending (alias not moved yet, or follow-ups not done) | done
    workflow_run: str = ""
    commit: str = ""
    actor: str = ""
    note: str = ""
    id: str = ""  # the promotion's id, also in its repository_dispatch payload
    dispatch: str = ""  # "" (none asked) | pending | sent | superseded
    image: str = ""  # repository@digest of the serving image built for this move (build-push)

    def key(self) -> str:
        return history_key(self.alias, self.seq)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in ("", None)})

    @property
    def unfinished(self) -> bool:
        return self.state != "done" or self.dispatch == "pending"


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
                    id=str(data.get("id", "")),
                    dispatch=str(data.get("dispatch", "")),
                    image=str(data.get("image", "")),
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


_WRITES = frozenset(
    {
        "set_registered_model_tag",
        "delete_registered_model_tag",
        "set_registered_model_alias",
        "transition_model_version_stage",
        "set_model_version_tag",
        "update_model_version",
        "delete_registered_model",
        "delete_model_version",
    }
)


class _DirectWrites:
    """An MlflowClient whose registry writes skip MLflow 3's "is this model a prompt?" read.

    MlflowClient reads the registered model before each write to refuse prompts; our models
    and locks are never prompts. Going to its registry client halves a move's requests, and
    with them the windows in which a killed promoter leaves work for the re-run.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._registry = client._get_registry_client()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry if name in _WRITES else self._client, name)


def direct_writes(client: Any) -> Any:
    return client if isinstance(client, _DirectWrites) else _DirectWrites(client)


def validate_names(model_name: str, alias: str) -> None:
    """MLflow's own rules for model and alias names, checked before anything is written.

    MLflow checks them only when the alias is set, after a version was registered; its checks
    are private functions of the pinned MLflow (a rename fails the tests, not users).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils import validation

    checks: list[tuple[str, str, Callable[[str], None]]] = [
        ("model name", model_name, validation._validate_model_name),
        ("alias", alias, validation._validate_model_alias_name),
        ("alias", alias, validation._validate_model_alias_name_reserved),
    ]
    for what, value, check in checks:
        try:
            check(value)
        except MlflowException as error:
            field_name = "model.name (model-name)" if what == "model name" else "promote.alias"
            raise ConfigError(
                f"{field_name}: MLflow does not accept {value!r} as {what}: {error.message}",
                "choose another name (aliases: letters, digits, '_' and '-', not 'latest' "
                "or v<number>)"
                if what == "alias"
                else "choose another model name",
            ) from None


# ----------------------------------------------------------------------------- the lock


def lock_name(model_name: str, alias: str) -> str:
    return f"{LOCK_PREFIX}{model_name}--{alias}"


def takeover_name(lock: str, token: str) -> str:
    return f"{lock}{TAKEOVER_INFIX}{token}"


def unlock_command(model_name: str, alias: str) -> str:
    return (
        f"mlops-actions registry unlock --model-name {shlex.quote(model_name)} "
        f"--alias {shlex.quote(alias)}"
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _error_code(error: Exception) -> str:
    return str(getattr(error, "error_code", ""))


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str | None:
    """The start time of a live process (clock ticks since boot), None if none runs as `pid`.

    With the boot id it tells a restarted pid from the process that took the lock; a zombie
    (killed, not yet reaped) counts as gone.
    """
    stat = _read_text(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if not fields or fields[0] == "Z" or len(fields) < 20:
        return None
    return fields[19]


def process_identity() -> str:
    """host/boot id/pid/start of this process: enough to prove later that it is gone."""
    pid = os.getpid()
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    return f"{socket.gethostname()}/{boot}/{pid}/{_process_start(pid) or ''}"


def holder_is_dead(identity: str) -> bool:
    """True only when the lock's holder ran on this machine and has ended (or its pid was reused).

    Anything else (another runner, a container with its own hostname, no /proc) is not provable
    here, and the lock's expiry decides.
    """
    parts = identity.split("/")
    if len(parts) != 4 or not parts[1] or not parts[3] or not parts[2].isdigit():
        return False
    host, boot, pid, start = parts
    if host != socket.gethostname() or boot != _read_text("/proc/sys/kernel/random/boot_id"):
        return False
    return _process_start(int(pid)) != start


@dataclass(frozen=True)
class LockInfo:
    """What a lock says about itself (its tags)."""

    token: str
    expires: float
    holder: str  # workflow run URL, actor, or "local"
    process: str  # see process_identity
    started: str

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> LockInfo:
        try:
            expires = float(tags.get("mlops.lock.expires", "0") or 0)
        except ValueError:
            expires = 0.0
        return cls(
            token=tags.get("mlops.lock.token", ""),
            expires=expires,
            holder=tags.get("mlops.lock.holder", ""),
            process=tags.get("mlops.lock.process", ""),
            started=tags.get("mlops.lock.started", ""),
        )

    def tags(self) -> dict[str, str]:
        return {
            "mlops.lock.token": self.token,
            "mlops.lock.expires": f"{self.expires:.3f}",
            "mlops.lock.holder": self.holder,
            "mlops.lock.process": self.process,
            "mlops.lock.started": self.started,
        }

    def describe(self) -> str:
        host, _, pid = [*self.process.split("/"), "", "", ""][:3]
        parts = [self.holder or "holder unknown"]
        if host:
            parts.append(f"host {host}, pid {pid}")
        if self.started:
            parts.append(f"since {self.started}")
        return "; ".join(parts)


@dataclass(frozen=True)
class LockOptions:
    """How long to wait for the lock, and after how long without a heartbeat it is abandoned."""

    wait_seconds: float = 120
    expiry_seconds: float = 60
    holder: str = "local"
    notify: Callable[[str], None] = lambda message: None


class AliasLock:
    """The lock of one alias while this process holds it: renewed, checked, released."""

    def __init__(self, client: MlflowClient, name: str, info: LockInfo, expiry: float) -> None:
        self.client, self.name, self.info, self.expiry = client, name, info, expiry
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._renew, name="mlops-lock", daemon=True)

    def _renew(self) -> None:
        # Renew well before expiry, so only a holder that stopped running loses its lock.
        while not self._stop.wait(self.expiry / 4):
            try:
                if self._current_token() != self.info.token:
                    return
                self.client.set_registered_model_tag(
                    self.name, "mlops.lock.expires", f"{time.time() + self.expiry:.3f}"
                )
            except Exception:  # noqa: S112 - a missed beat is retried; expiry has slack
                continue

    def _current_token(self) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException as error:
            if _error_code(error) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return LockInfo.from_tags(dict(model.tags or {})).token

    def verify(self, model_name: str, alias: str) -> None:
        """Right before the alias moves: the lock must still be ours (not expired and taken)."""
        if self._current_token() != self.info.token:
            raise Conflict(
                f"lost the lock of {model_name}@{alias} before moving it: this promotion "
                "stalled past the lock's expiry and another one took over; nothing was moved",
                "re-run the promotion; raise promote.lock_expiry_seconds on a slow runner",
            )

    def start(self) -> None:
        self._heartbeat.start()

    def release(self) -> str | None:
        """Stop renewing and delete the lock if it is still ours; what failed, if anything.

        Never raises: whatever happened to the move (done, or failed for its own reason) is what
        the step reports, and a lock left behind is taken over once it expires.
        """
        self._stop.set()
        if self._heartbeat.is_alive():
            self._heartbeat.join(timeout=5)
        try:
            if self._current_token() == self.info.token:
                _delete_quietly(self.client, self.name)
        except Exception as error:
            return type(error).__name__
        return None


@contextmanager
def alias_lock(
    client: MlflowClient,
    model_name: str,
    alias: str,
    options: LockOptions,
    on_wait: Callable[[], None] = lambda: None,
) -> Iterator[AliasLock]:
    """Hold the lock of one alias: a registered model that only one creator can create.

    `on_wait` runs while another promotion holds the lock, and may raise to stop waiting (the
    alias already moved away from the expected holder: this promotion has lost).
    """
    mine = LockInfo(
        token=uuid.uuid4().hex,
        expires=0.0,
        holder=options.holder,
        process=process_identity(),
        started=_now(),
    )
    lock = AliasLock(client, lock_name(model_name, alias), mine, options.expiry_seconds)
    _acquire(lock, model_name, alias, options, on_wait)
    lock.start()
    try:
        yield lock
    finally:
        failed = lock.release()
        if failed is not None:
            options.notify(
                f"could not remove the lock of {model_name}@{alias} ({failed}); it expires in "
                f"{options.expiry_seconds:g} s, or remove it: {unlock_command(model_name, alias)}"
            )


def _acquire(
    lock: AliasLock,
    model_name: str,
    alias: str,
    options: LockOptions,
    on_wait: Callable[[], None],
) -> None:
    """Create the lock, waiting (and taking over an abandoned one) until `wait_seconds`."""
    from mlflow.exceptions import MlflowException

    client, name = lock.client, lock.name
    deadline = time.monotonic() + options.wait_seconds
    delay = 0.1
    announced: set[str] = set()
    while True:
        mine = lock.info = replace(lock.info, expires=time.time() + options.expiry_seconds)
        try:
            client.create_registered_model(
                name,
                tags=mine.tags(),
                description=(
                    f"Lock held by mlops-actions while it moves the '{alias}' alias of "
                    f"'{model_name}'; deleted when the move ends. If no promotion is running, "
                    f"remove it with: {unlock_command(model_name, alias)}"
                ),
            )
            break
        except MlflowException as error:
            # A SQL store answers a lost race by reading the winner's row; if the winner has
            # released it in between, that read says "does not exist": the lock is free.
            if _error_code(error) == "RESOURCE_DOES_NOT_EXIST" and time.monotonic() < deadline:
                continue
            if _error_code(error) != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            seen = LockInfo.from_tags(dict(client.get_registered_model(name).tags or {}))
        except MlflowException as error:
            if _error_code(error) == "RESOURCE_DOES_NOT_EXIST" and time.monotonic() < deadline:
                continue  # released in between: try again at once
            raise
        if seen.token == mine.token:
            break  # a retried request that had succeeded: the lock is ours
        if seen.expires < time.time() or holder_is_dead(seen.process):
            if _take_over(client, name, seen.token, mine.token, options.expiry_seconds):
                continue
        elif seen.token not in announced:
            announced.add(seen.token)
            options.notify(
                f"{model_name}@{alias} is locked by another promotion ({seen.describe()}); "
                f"waiting up to {options.wait_seconds:g} s, the lock expires in "
                f"{max(0.0, seen.expires - time.time()):.0f} s without a heartbeat. If no "
                f"promotion is running, remove it: {unlock_command(model_name, alias)}"
            )
        on_wait()
        if time.monotonic() >= deadline:
            raise Conflict(
                f"another promotion of {model_name}@{alias} is running ({seen.describe()})",
                "wait for it, or serialise promotions with a workflow `concurrency:` group; "
                f"remove a stale lock with `{unlock_command(model_name, alias)}`",
            )
        time.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not security
        delay = min(delay * 2, 2.0)


def _take_over(client: MlflowClient, name: str, seen_token: str, token: str, expiry: float) -> bool:
    """Delete an abandoned lock, if it is still the one we saw: one waiter only, ever.

    The marker `<lock>--takeover--<token>` can be created once; its creator re-reads the lock
    and deletes it only if it still carries the abandoned token, so a fresh lock that another
    waiter took in the meantime is never deleted. A marker left by a waiter that died is
    cleared after it expires. False: another waiter is taking over; wait.
    """
    from mlflow.exceptions import MlflowException

    marker = takeover_name(name, seen_token)
    try:
        client.create_registered_model(
            marker,
            tags={"mlops.lock.token": token, "mlops.lock.expires": f"{time.time() + expiry:.3f}"},
        )
    except MlflowException as error:
        if _error_code(error) not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
            raise
        try:
            other = LockInfo.from_tags(dict(client.get_registered_model(marker).tags or {}))
        except MlflowException as read_error:
            if _error_code(read_error) != "RESOURCE_DOES_NOT_EXIST":
                raise
            return True  # that takeover has finished: look again
        if other.token != token:  # not a retried create of ours
            if other.expires < time.time():
                _delete_quietly(client, marker)
            return False
    try:
        current = LockInfo.from_tags(dict(client.get_registered_model(name).tags or {}))
        if current.token == seen_token:
            _delete_quietly(client, name)
    except MlflowException as error:
        if _error_code(error) != "RESOURCE_DOES_NOT_EXIST":
            raise
    finally:
        _delete_quietly(client, marker)
    return True


def delete_lock(client: MlflowClient, model_name: str, alias: str) -> bool:
    """`registry unlock`: remove the lock (and a takeover marker a dead waiter left), if any."""
    from mlflow.exceptions import MlflowException

    client = direct_writes(client)
    name = lock_name(model_name, alias)
    try:
        token = LockInfo.from_tags(dict(client.get_registered_model(name).tags or {})).token
    except MlflowException as error:
        if _error_code(error) != "RESOURCE_DOES_NOT_EXIST":
            raise
        return False
    _delete_quietly(client, takeover_name(name, token))
    _delete_quietly(client, name)
    return True


def _delete_tag_quietly(client: MlflowClient, model_name: str, key: str) -> None:
    """Delete a registered-model tag; gone already (a retried request) is fine."""
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model_tag(model_name, key)
    except MlflowException as error:
        if _error_code(error) != "RESOURCE_DOES_NOT_EXIST":
            raise


def _delete_quietly(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model(name)
    except MlflowException as error:
        if _error_code(error) != "RESOURCE_DOES_NOT_EXIST":
            raise


# ----------------------------------------------------------------------------- registration


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
    resumed: bool = False  # this run finished the follow-ups of an earlier, interrupted move
    promotion_id: str = ""
    dispatched: bool = False

    @property
    def version_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    @property
    def alias_uri(self) -> str:
        return f"models:/{self.model_name}@{self.alias}"


def _is_candidate(version: Any, candidate: Candidate) -> bool:
    model_id = candidate.model_uri.removeprefix("models:/") if candidate.model_uri else ""
    ids = {getattr(version, "model_id", None), (version.source or "").removeprefix("models:/")}
    if model_id:
        return model_id in ids
    return bool(candidate.run_id) and version.run_id == candidate.run_id


def candidate_versions(client: MlflowClient, model_name: str, candidate: Candidate) -> list[Any]:
    """The versions of `model_name` registered from the candidate, oldest first."""
    from mlflow.exceptions import MlflowException

    clauses = []
    literal = filter_literal(model_name)
    if literal is not None:
        clauses.append(f"name = {literal}")
    if RUN_ID.match(candidate.run_id or ""):
        clauses.append(f"run_id = '{candidate.run_id}'")
    if not clauses:
        raise ConfigError(
            f"model name {model_name!r} has both kinds of quote, which no MLflow search can "
            "express, and the candidate has no run to search by",
            "promote a candidate logged in a run, or choose a model name without both quotes",
        )
    try:
        found = client.search_model_versions(" AND ".join(clauses))
    except MlflowException as error:
        if _error_code(error) == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    mine = [v for v in found if v.name == model_name and _is_candidate(v, candidate)]
    return sorted(mine, key=lambda v: int(v.version))


def find_registered(
    client: MlflowClient, model_name: str, candidate: Candidate
) -> VersionRef | None:
    """The registry version of the candidate if it has one already (a re-run), else None."""
    if candidate.version is not None:
        if candidate.version.name != model_name:
            raise ConfigError(
                f"candidate {candidate.given} is a version of '{candidate.version.name}', "
                f"not of '{model_name}'",
                "promote it under its own name, or pass the run id or models:/m-… URI",
            )
        return candidate.version
    found = candidate_versions(client, model_name, candidate)
    return version_ref(found[0]) if found else None


def register(
    client: MlflowClient, model_name: str, candidate: Candidate, provenance: Provenance
) -> VersionRef:
    """A new registry version of the candidate's logged model, exactly one.

    MLflow's client retries a POST whose response was lost, and the server may have written the
    first attempt: the version carries this call's token, and every extra copy is deleted.
    """
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
    token = uuid.uuid4().hex
    failure: Exception | None = None
    try:
        client.create_model_version(
            model_name,
            source=candidate.model_uri,
            run_id=candidate.run_id or None,
            model_id=model_id if model_id.startswith("m-") else None,
            tags={k: v for k, v in version_tags(candidate, provenance).items() if v}
            | {REGISTRATION_TOKEN: token},
            description=f"Registered by mlops-actions from {candidate.model_uri}.",
        )
    except Exception as error:  # the write may have happened: look before failing
        failure = error
    try:
        found = candidate_versions(client, model_name, candidate)
    except Exception:
        if failure is not None:
            raise failure from None
        raise
    if not found:
        if failure is not None:
            raise failure
        raise MlopsError(
            f"MLflow registered {candidate.given} as {model_name} but lists no such version"
        )
    keep = found[0]
    for extra in found[1:]:
        if dict(extra.tags or {}).get(REGISTRATION_TOKEN) == token:
            try:
                client.delete_model_version(model_name, extra.version)
            except MlflowException as error:
                if _error_code(error) != "RESOURCE_DOES_NOT_EXIST":  # a retried delete
                    raise
    return version_ref(keep)


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


# ----------------------------------------------------------------------------- the move


@dataclass(frozen=True)
class AliasState:
    holder: str | None  # the version the alias points at
    history: list[Move]  # settled, oldest first
    next_seq: int
    unfinished: Move | None  # the last move, if the alias moved but its follow-ups did not end


def _read_alias(
    client: MlflowClient, model_name: str, alias: str
) -> tuple[str | None, dict[str, str]]:
    from mlflow.exceptions import MlflowException

    try:
        model = registered_model(client, model_name)
    except MlflowException as error:
        if _error_code(error) == "RESOURCE_DOES_NOT_EXIST":
            return None, {}
        raise
    holder = dict(model.aliases or {}).get(alias)
    return (None if holder is None else str(holder)), dict(model.tags or {})


def _settle_pending(client: MlflowClient, model_name: str, alias: str) -> AliasState:
    """Read the alias once; drop pending entries of moves that did not happen."""
    holder, tags = _read_alias(client, model_name, alias)
    moves = parse_history(tags, alias)
    history = settled(moves, holder)
    kept = {m.seq for m in history}
    for move in moves:
        if move.state == "pending" and move.seq not in kept:
            _delete_tag_quietly(client, model_name, move.key())
    last = history[-1] if history else None
    unfinished = last if last and last.unfinished and last.to_version == holder else None
    next_seq = max((m.seq for m in moves), default=0) + 1
    return AliasState(holder, history, next_seq, unfinished)


@dataclass(frozen=True)
class FollowUps:
    """What happens after the alias moved, each step safe to repeat."""

    stage: str = ""
    label: Callable[[MoveResult], None] | None = None  # version tags and description
    dispatch: Callable[[MoveResult], None] | None = None  # the deployment event


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
    follow_ups: FollowUps = FollowUps(),
    history_limit: int = 50,
    lock: LockOptions = LockOptions(),
) -> MoveResult:
    """Under the alias's lock: check the holder, register if needed (`create`), move, record.

    Nothing is registered or moved when the check fails, so a lost race leaves no trace.
    """
    validate_names(model_name, alias)
    client = direct_writes(client)
    wanted = None if expected == NONE else expected

    def lost_already() -> None:
        # While another promotion holds the lock: once the alias left the expected holder for
        # a version that is not ours, waiting is pointless (the usual loser of a race).
        if expected == ANY:
            return
        holder, _ = _read_alias(client, model_name, alias)
        if holder == wanted:
            return
        ours = find() if holder is not None else None
        if ours is None or ours.version != holder:
            raise _moved_away(model_name, alias, holder, expected)

    with alias_lock(client, model_name, alias, lock, on_wait=lost_already) as held:
        state = _settle_pending(client, model_name, alias)
        history, current_version = state.history, state.holder
        target = find()
        if target is not None and current_version == target.version:
            unfinished = state.unfinished
            if unfinished is None:
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
            return _follow_up(
                client,
                unfinished,
                history,
                follow_ups,
                history_limit,
                result=MoveResult(
                    model_name,
                    alias,
                    target.version,
                    unfinished.from_version,
                    changed=True,
                    registered=False,
                    message=f"{model_name}@{alias}: version {target.version} holds the alias; "
                    f"finished the follow-ups of its {unfinished.reason} "
                    f"({_from_text(unfinished.from_version)} → version {target.version})",
                    resumed=True,
                    promotion_id=unfinished.id,
                ),
            )
        if expected != ANY and current_version != wanted:
            raise _moved_away(model_name, alias, current_version, expected)
        if state.unfinished is not None:  # superseded: the new move sends its own event
            _supersede(client, model_name, state.unfinished, history)
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
            id=uuid.uuid4().hex,
            dispatch="pending" if follow_ups.dispatch else "",
        )
        client.set_registered_model_tag(model_name, move.key(), move.to_json())
        try:
            held.verify(model_name, alias)
            client.set_registered_model_alias(model_name, alias, target.version)
        except Exception:
            if not _moved_after_all(client, model_name, move):
                raise
        history.append(move)
        result = MoveResult(
            model_name,
            alias,
            target.version,
            current_version,
            changed=True,
            registered=registered,
            message=f"{model_name}@{alias}: {_from_text(current_version)} → "
            f"version {target.version} ({reason})",
            promotion_id=move.id,
        )
        return _follow_up(client, move, history, follow_ups, history_limit, result=result)


def _from_text(version: str | None) -> str:
    return f"version {version}" if version else "no version"


def _moved_away(model_name: str, alias: str, holder: str | None, expected: str) -> Conflict:
    wanted = None if expected == NONE else expected
    return Conflict(
        f"{model_name}@{alias} points at {_from_text(holder)}, "
        f"not at the expected {'version ' + expected if wanted else 'no version'}: "
        "it moved since the gate compared against it",
        "re-run the gate against the new holder, or pass expected-version "
        f"{holder or NONE} after checking it",
    )


def _moved_after_all(client: MlflowClient, model_name: str, move: Move) -> bool:
    """After a failed alias write: did it happen (a lost response)? If not, drop the entry."""
    try:
        holder, _ = _read_alias(client, model_name, move.alias)
        if holder == move.to_version:
            return True
        _delete_tag_quietly(client, model_name, move.key())
    except Exception:  # noqa: S110 - the server is gone: the next move settles the entry
        pass
    return False


def _supersede(client: MlflowClient, model_name: str, move: Move, history: list[Move]) -> None:
    """An interrupted move that a newer one replaces: recorded done; its event is not sent."""
    done = replace(move, state="done", dispatch="superseded" if move.dispatch else "")
    client.set_registered_model_tag(model_name, done.key(), done.to_json())
    history[-1] = done


def _follow_up(
    client: MlflowClient,
    move: Move,
    history: list[Move],
    follow_ups: FollowUps,
    history_limit: int,
    result: MoveResult,
) -> MoveResult:
    """The steps after the alias moved, each recorded so that a re-run does only what is left."""
    model_name = result.model_name
    step = "recording the move"
    try:
        if move.state != "done":
            if follow_ups.stage:
                step = f"moving version {result.version} to stage {follow_ups.stage}"
                client.transition_model_version_stage(
                    model_name, result.version, follow_ups.stage, archive_existing_versions=True
                )
            if follow_ups.label:
                step = f"labelling version {result.version} (tags, description)"
                follow_ups.label(result)
            step = "marking the history entry done"
            move = replace(move, state="done")
            client.set_registered_model_tag(model_name, move.key(), move.to_json())
            history[-1] = move
            if history_limit > 0:
                step = "pruning the history"
                for old in history[:-history_limit]:
                    _delete_tag_quietly(client, model_name, old.key())
                history = history[-history_limit:]
        dispatched = False
        if move.dispatch == "pending":
            if follow_ups.dispatch is not None:
                step = "sending the deployment event"
                follow_ups.dispatch(replace(result, history=history))
                dispatched = True
            step = "recording the deployment event"
            move = replace(move, dispatch="sent" if dispatched else "skipped")
            client.set_registered_model_tag(model_name, move.key(), move.to_json())
            history[-1] = move
    except Exception as error:
        raise FollowUpFailed(replace(result, history=history), step, error) from error
    return replace(result, history=history, dispatched=dispatched)


def history_of(client: MlflowClient, model_name: str, alias: str) -> list[Move]:
    """The settled history of one alias, oldest first (without changing anything)."""
    model = registered_model(client, model_name)
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
    lock: LockOptions = LockOptions(),
    dispatch: Callable[[MoveResult], None] | None = None,
) -> MoveResult:
    """Register the candidate if needed, move the alias to it, label the version, dispatch."""
    client = direct_writes(client)

    def label(result: MoveResult) -> None:
        if not result.registered:  # else registered with these tags
            for key, value in version_tags(candidate, provenance).items():
                if value:
                    client.set_model_version_tag(model_name, result.version, key, value)
        client.update_model_version(
            model_name, result.version, description=describe(alias, provenance, "promote")
        )

    return move_alias(
        client,
        model_name=model_name,
        alias=alias,
        find=lambda: find_registered(client, model_name, candidate),
        create=lambda: register(client, model_name, candidate, provenance),
        expected=expected,
        reason="promote",
        provenance=provenance,
        note=f"gate {provenance.gate_verdict}" if provenance.gate_verdict else "",
        follow_ups=FollowUps(stage=stage, label=label, dispatch=dispatch),
        history_limit=history_limit,
        lock=lock,
    )


def rollback(
    client: MlflowClient,
    *,
    model_name: str,
    alias: str,
    to_version: str,
    provenance: Provenance,
    history_limit: int = 50,
    lock: LockOptions = LockOptions(),
    dispatch: Callable[[MoveResult], None] | None = None,
) -> MoveResult:
    """Move the alias back to its previous holder (or `to_version`), and say so on the version."""
    validate_names(model_name, alias)
    client = direct_writes(client)
    holder = alias_holder(client, model_name, alias)
    if holder is None:
        raise ConfigError(f"{model_name}@{alias} points at no version: nothing to roll back")
    history = history_of(client, model_name, alias)
    last = history[-1] if history else None
    if last and last.reason == "rollback" and last.unfinished and last.to_version == holder.version:
        target = to_version or holder.version  # a re-run: finish that rollback, not another
    else:
        target = to_version or rollback_target(history, holder.version)
    version = version_ref(client.get_model_version(model_name, target))

    def label(result: MoveResult) -> None:
        client.update_model_version(
            model_name, result.version, description=describe(alias, provenance, "rollback")
        )

    return move_alias(
        client,
        model_name=model_name,
        alias=alias,
        find=lambda: version,
        expected=holder.version,
        reason="rollback",
        provenance=provenance,
        follow_ups=FollowUps(label=label, dispatch=dispatch),
        history_limit=history_limit,
        lock=lock,
    )


def as_dicts(moves: list[Move]) -> list[dict[str, Any]]:
    return [asdict(m) for m in moves]
