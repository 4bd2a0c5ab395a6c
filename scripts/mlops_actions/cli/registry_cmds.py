"""The registry verbs: promote, rollback, and `registry history` / `registry unlock`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import gha, monitor
from ..config import Config
from ..errors import EXIT_OK
from .common import (
    _github_token,
    _registry_client,
    _value,
    _version_number,
    emit,
    is_version_number,
    load_config,
    mlflow_uris,
)
from .monitoring import _observe
from .options import ALIAS_OPTIONS, MLFLOW_OPTIONS, PROMOTE_OPTIONS, ROLLBACK_OPTIONS


def _model_name(config: Config) -> str:
    from ..errors import ConfigError

    name = str(config.get("model.name") or "")
    if not name:
        raise ConfigError(
            "model.name is not set", "set model.name in mlops.yaml or the model-name input"
        )
    return name


def _expected_version(given: str, alias: str, gate_tags: dict[str, str], model_name: str) -> str:
    """N, none or any; by default the holder the gate compared against, if it gated this alias
    of this model (a gate from before `mlops.gate.model` was recorded: this alias)."""
    from ..errors import ConfigError
    from ..promote import ANY, NONE

    text = given.strip().lower()
    if text in (ANY, NONE) or is_version_number(text):
        return text
    if text:
        raise ConfigError(
            f"input 'expected-version' must be a version number, 'none' or 'any', got {given!r}"
        )
    same_model = gate_tags.get("mlops.gate.model", model_name) == model_name
    if (
        same_model
        and gate_tags.get("mlops.gate.alias") == alias
        and "mlops.gate.champion_version" in gate_tags
    ):
        return gate_tags["mlops.gate.champion_version"] or NONE
    return ANY


def _check_gate(given: str, run_id: str, tags: dict[str, str], model_name: str) -> None:
    """With require-gate: refuse a rejected candidate, and one the gate judged for another model."""
    from ..errors import EXIT_REJECTED, ConfigError, MlopsError

    verdict = tags.get("mlops.gate.verdict", "")
    if verdict == "rejected":
        error = MlopsError(
            f"the gate rejected {given} (tag mlops.gate.verdict on run {run_id})",
            "promote a candidate that passed, or set require-gate: false to override",
        )
        error.exit_code = EXIT_REJECTED
        raise error
    judged = tags.get("mlops.gate.model", "")
    if verdict and judged and judged != model_name:
        raise ConfigError(
            f"model-name: the gate judged {given} against model {judged!r} "
            f"(tag mlops.gate.model on run {run_id}), not {model_name!r}",
            f"promote it as {judged!r}, gate it against {model_name!r}, "
            "or set require-gate: false to override",
        )


def _move_outputs(result: Any) -> dict[str, str]:
    return {
        "version": result.version,
        "previous-version": result.previous_version or "",
        "alias": result.alias,
        "model-uri": result.version_uri,
        "alias-uri": result.alias_uri,
        "changed": "true" if result.changed else "false",
        "registered": "true" if result.registered else "false",
        "resumed": "true" if result.resumed else "false",
        "promotion-id": result.promotion_id,
    }


def _report_move(result: Any, reason: str, failed: str = "") -> None:
    """Outputs, summary and notice of a move (also of one whose follow-ups failed)."""
    from .. import report

    _observe(monitor.move_samples(result, time.time()))
    emit(_move_outputs(result))
    gha.add_summary(report.move_summary(result, reason, failed))
    if not failed:
        gha.annotate("notice", result.message, title=reason)


def dispatch_payload(result: Any, reason: str, run_context: Any) -> dict[str, str]:
    """The client_payload of a move's repository_dispatch: the keys `relay.client_payload` sends
    for a move made in MLflow (so one deploy workflow takes both), plus the promotion's own.
    GitHub allows ten top-level keys."""
    moved_by = f"mlops-actions {reason}"
    if run_context.run_url:
        moved_by += f" ({run_context.run_url})"
    return {
        "model": result.model_name,
        "version": result.version,
        "alias": result.alias,
        "model_uri": result.version_uri,
        "event": f"mlops-actions.{reason}",
        "moved_by": moved_by,
        "moved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "previous_version": result.previous_version or "",
        "promotion_id": result.promotion_id,
        "reason": reason,
    }


def _dispatcher(config: Config, args: argparse.Namespace, reason: str) -> Any:
    """The repository_dispatch that starts a deployment after a move, or None (not set up)."""
    from .. import context, github_report

    event = str(config.get("promote.dispatch_event") or "")
    if not event:
        return None
    run_context = context.detect(os.environ, Path.cwd())
    token = _github_token(args)
    if not token or not run_context.repository:
        gha.annotate(
            "warning",
            f"repository_dispatch '{event}' skipped: no GitHub token or repository",
            title=reason,
        )
        return None
    gha.mask(token)
    reporter = github_report.GitHubReporter(
        github_report.Target(run_context.api_url, token, run_context.repository, None, "")
    )

    def dispatch(result: Any) -> None:
        reporter.dispatch(event, dispatch_payload(result, reason, run_context))
        print(gha.log_safe(f"dispatched repository event '{event}' to {run_context.repository}"))

    return dispatch


def _lock_options(config: Config, provenance: Any) -> Any:
    from .. import promote

    return promote.LockOptions(
        wait_seconds=float(config.get("promote.lock_wait_seconds")),
        expiry_seconds=float(config.get("promote.lock_expiry_seconds")),
        holder=provenance.workflow_run or provenance.actor or "local",
        notify=lambda message: print(gha.log_safe(message), file=sys.stderr, flush=True),
    )


def _moving(uri: str, doing: str, reason: str, move: Any) -> int:
    """Run one move under the tracking server's error mapping, and report it.

    A move whose follow-ups failed is reported as moved (outputs, a summary that says what is
    left) and exits EXIT_FOLLOW_UP with the cause, so a workflow can tell it from "not moved".
    """
    from .. import promote, tracking
    from ..errors import MlopsError

    try:
        with tracking.tracking_server(uri, doing):
            result = move()
    except promote.FollowUpFailed as failed:
        cause = failed.cause
        described = (
            cause
            if isinstance(cause, MlopsError)
            else tracking.service_error(cause, uri, failed.step)
        )
        detail = described.message if described else f"{type(cause).__name__}: {cause}"
        failed.message = f"{failed.message}: {detail}"
        _report_move(failed.result, reason, failed=failed.step)
        raise
    _report_move(result, reason)
    return EXIT_OK


def cmd_promote(args: argparse.Namespace) -> int:
    config = load_config(args, (*MLFLOW_OPTIONS, *PROMOTE_OPTIONS))
    return run_promote(config, _value(args, "candidate"), args)


def run_promote(config: Config, given: str, args: argparse.Namespace) -> int:
    """Shared by `promote` and `run`: refuse a rejected candidate, move the alias, report."""
    from .. import context, promote, registry, tracking

    _expected_version(_value(args, "expected-version"), "", {}, "")  # checked before any request
    model_name, alias, mlflow_client, uri = _alias_scope(config)
    with tracking.tracking_server(uri, f"resolving the candidate {given or '(none)'}"):
        candidate = registry.resolve_candidate(mlflow_client, given)
        tags = dict(mlflow_client.get_run(candidate.run_id).data.tags) if candidate.run_id else {}
    if config.get("promote.require_gate"):
        _check_gate(given, candidate.run_id, tags, model_name)
    run_context = context.detect(os.environ, Path.cwd())
    provenance = promote.Provenance(
        workflow_run=run_context.run_url,
        commit=run_context.commit,
        actor=run_context.actor,
        data_fingerprint=tags.get("mlops.data.fingerprint", ""),
        gate_verdict=tags.get("mlops.gate.verdict", ""),
        gate_link=tags.get("mlops.gate.workflow_run_url", ""),
    )
    expected = _expected_version(_value(args, "expected-version"), alias, tags, model_name)
    dispatch = _dispatcher(config, args, "promote")
    return _moving(
        uri,
        f"promoting {given} to {model_name}@{alias}",
        "promote",
        lambda: promote.promote(
            mlflow_client,
            model_name=model_name,
            alias=alias,
            candidate=candidate,
            expected=expected,
            provenance=provenance,
            stage=str(config.get("promote.stage") or ""),
            history_limit=int(config.get("promote.history_limit")),
            lock=_lock_options(config, provenance),
            dispatch=dispatch,
        ),
    )


def _alias_scope(config: Config) -> tuple[str, str, Any, str]:
    """Model name, alias, registry client and tracking URI of an alias-moving verb."""
    mlflow_client, uri = _registry_client(config)
    return _model_name(config), str(config.get("promote.alias")), mlflow_client, uri


def cmd_rollback(args: argparse.Namespace) -> int:
    from .. import context, promote

    config = load_config(args, (*MLFLOW_OPTIONS, *ROLLBACK_OPTIONS))
    model_name, alias, mlflow_client, uri = _alias_scope(config)
    run_context = context.detect(os.environ, Path.cwd())
    provenance = promote.Provenance(
        workflow_run=run_context.run_url, commit=run_context.commit, actor=run_context.actor
    )
    to_version = _version_number(args, "to-version")
    dispatch = _dispatcher(config, args, "rollback")
    return _moving(
        uri,
        f"rolling back {model_name}@{alias}",
        "rollback",
        lambda: promote.rollback(
            mlflow_client,
            model_name=model_name,
            alias=alias,
            to_version=to_version,
            provenance=provenance,
            history_limit=int(config.get("promote.history_limit")),
            lock=_lock_options(config, provenance),
            dispatch=dispatch,
        ),
    )


def cmd_registry_history(args: argparse.Namespace) -> int:
    from .. import promote, registry

    config = load_config(args, (*MLFLOW_OPTIONS, *ALIAS_OPTIONS))
    model_name, alias = _model_name(config), str(config.get("promote.alias"))
    uri, registry_uri = mlflow_uris(config)
    doing = f"reading the history of {model_name}@{alias}"
    if registry.rest_applies(registry_uri or uri, os.environ):
        # One GET, without importing mlflow (seconds of imports for a one-line answer).
        model = registry.registered_model_over_rest(
            registry_uri or uri, model_name, os.environ, doing
        )
        moves = promote.history_from(model.tags, model.aliases, alias)
    else:
        from .. import tracking

        mlflow_client, uri = _registry_client(config)
        with tracking.tracking_server(uri, doing):
            moves = promote.history_of(mlflow_client, model_name, alias)
    if args.json:
        # The same JSON, with no legacy '##[' workflow command in it for the runner to run.
        print(json.dumps(promote.as_dicts(moves), indent=2).replace("##[", "\\u0023#["))
        return EXIT_OK
    print(gha.log_safe(history_table(moves)))  # registry tags: anyone with write access
    return EXIT_OK


HISTORY_COLUMNS = (
    "#",
    "when",
    "reason",
    "from",
    "to",
    "commit",
    "actor",
    "workflow run",
    "image",
    "note",
)


def history_table(moves: list[Any]) -> str:
    """One column per field, each with its header; '-' where a move has no value."""
    rows = [
        (
            str(m.seq),
            m.at,
            m.reason,
            m.from_version or "-",
            m.to_version or "-",
            m.commit[:12] or "-",
            m.actor or "-",
            m.workflow_run or "-",
            short_image(m.image),
            m.note or "-",
        )
        for m in moves
    ]
    columns = zip(HISTORY_COLUMNS, *rows, strict=True)
    widths = [max(len(cell) for cell in column) for column in columns]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (HISTORY_COLUMNS, *rows)
    )


def short_image(image: str) -> str:
    """repository@sha256:<12 hex>: the digest stays recognisable, the column narrow."""
    repository, _, digest = image.partition("@")
    return f"{repository}@{digest[:19]}" if digest else (image or "-")


def cmd_registry_unlock(args: argparse.Namespace) -> int:
    from .. import promote, tracking

    model_name, alias, mlflow_client, uri = _alias_scope(
        load_config(args, (*MLFLOW_OPTIONS, *ALIAS_OPTIONS))
    )
    name = promote.lock_name(model_name, alias)
    with tracking.tracking_server(uri, f"removing the lock {name}"):
        removed = promote.delete_lock(mlflow_client, model_name, alias)
    print(gha.log_safe(f"removed {name}" if removed else f"no lock {name}: nothing to remove"))
    return EXIT_OK
