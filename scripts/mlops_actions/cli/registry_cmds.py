"""The registry verbs: promote, rollback, and `registry history` / `registry unlock`."""

from __future__ import annotations

import argparse
import json
import os
import time
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


def _expected_version(given: str, alias: str, gate_tags: dict[str, str]) -> str:
    """N, none or any; by default the holder the gate compared against, if it gated this alias."""
    from ..errors import ConfigError
    from ..promote import ANY, NONE

    text = given.strip().lower()
    if text in (ANY, NONE) or is_version_number(text):
        return text
    if text:
        raise ConfigError(
            f"input 'expected-version' must be a version number, 'none' or 'any', got {given!r}"
        )
    if gate_tags.get("mlops.gate.alias") == alias and "mlops.gate.champion_version" in gate_tags:
        return gate_tags["mlops.gate.champion_version"] or NONE
    return ANY


def _move_outputs(result: Any) -> dict[str, str]:
    return {
        "version": result.version,
        "previous-version": result.previous_version or "",
        "alias": result.alias,
        "model-uri": result.version_uri,
        "alias-uri": result.alias_uri,
        "changed": "true" if result.changed else "false",
        "registered": "true" if result.registered else "false",
    }


def _after_move(config: Config, args: argparse.Namespace, result: Any, reason: str) -> None:
    """Outputs, summary, and the optional repository_dispatch that starts a deployment."""
    from .. import context, github_report, report

    _observe(monitor.move_samples(result, time.time()))
    outputs = _move_outputs(result)
    emit(outputs)
    gha.add_summary(report.move_summary(result, reason))
    gha.annotate("notice", result.message, title=reason)
    event = str(config.get("promote.dispatch_event") or "")
    if not (event and result.changed):
        return
    run_context = context.detect(os.environ, Path.cwd())
    token = _github_token(args)
    if not token or not run_context.repository:
        gha.annotate(
            "warning",
            f"repository_dispatch '{event}' skipped: no GitHub token or repository",
            title=reason,
        )
        return
    gha.mask(token)
    reporter = github_report.GitHubReporter(
        github_report.Target(run_context.api_url, token, run_context.repository, None, "")
    )
    reporter.dispatch(
        event, {k.replace("-", "_"): v for k, v in outputs.items()} | {"reason": reason}
    )
    print(gha.log_safe(f"dispatched repository event '{event}' to {run_context.repository}"))


def cmd_promote(args: argparse.Namespace) -> int:
    config = load_config(args, (*MLFLOW_OPTIONS, *PROMOTE_OPTIONS))
    return run_promote(config, _value(args, "candidate"), args)


def run_promote(config: Config, given: str, args: argparse.Namespace) -> int:
    """Shared by `promote` and `run`: refuse a rejected candidate, move the alias, report."""
    from .. import context, promote, registry, tracking
    from ..errors import EXIT_REJECTED, MlopsError

    _expected_version(_value(args, "expected-version"), "", {})  # checked before any request
    model_name, alias, mlflow_client, uri = _alias_scope(config)
    with tracking.tracking_server(uri, f"resolving the candidate {given or '(none)'}"):
        candidate = registry.resolve_candidate(mlflow_client, given)
        tags = dict(mlflow_client.get_run(candidate.run_id).data.tags) if candidate.run_id else {}
    verdict = tags.get("mlops.gate.verdict", "")
    if verdict == "rejected" and config.get("promote.require_gate"):
        error = MlopsError(
            f"the gate rejected {given} (tag mlops.gate.verdict on run {candidate.run_id})",
            "promote a candidate that passed, or set require-gate: false to override",
        )
        error.exit_code = EXIT_REJECTED
        raise error
    run_context = context.detect(os.environ, Path.cwd())
    provenance = promote.Provenance(
        workflow_run=run_context.run_url,
        commit=run_context.commit,
        actor=run_context.actor,
        data_fingerprint=tags.get("mlops.data.fingerprint", ""),
        gate_verdict=verdict,
        gate_link=tags.get("mlops.gate.workflow_run_url", ""),
    )
    expected = _expected_version(_value(args, "expected-version"), alias, tags)
    with tracking.tracking_server(uri, f"promoting {given} to {model_name}@{alias}"):
        result = promote.promote(
            mlflow_client,
            model_name=model_name,
            alias=alias,
            candidate=candidate,
            expected=expected,
            provenance=provenance,
            stage=str(config.get("promote.stage") or ""),
            history_limit=int(config.get("promote.history_limit")),
            lock_wait_seconds=float(config.get("promote.lock_wait_seconds")),
        )
    _after_move(config, args, result, "promote")
    return EXIT_OK


def _alias_scope(config: Config) -> tuple[str, str, Any, str]:
    """Model name, alias, registry client and tracking URI of an alias-moving verb."""
    mlflow_client, uri = _registry_client(config)
    return _model_name(config), str(config.get("promote.alias")), mlflow_client, uri


def cmd_rollback(args: argparse.Namespace) -> int:
    from .. import context, promote, tracking

    config = load_config(args, (*MLFLOW_OPTIONS, *ROLLBACK_OPTIONS))
    model_name, alias, mlflow_client, uri = _alias_scope(config)
    run_context = context.detect(os.environ, Path.cwd())
    with tracking.tracking_server(uri, f"rolling back {model_name}@{alias}"):
        result = promote.rollback(
            mlflow_client,
            model_name=model_name,
            alias=alias,
            to_version=_version_number(args, "to-version"),
            provenance=promote.Provenance(
                workflow_run=run_context.run_url, commit=run_context.commit, actor=run_context.actor
            ),
            history_limit=int(config.get("promote.history_limit")),
            lock_wait_seconds=float(config.get("promote.lock_wait_seconds")),
        )
    _after_move(config, args, result, "rollback")
    return EXIT_OK


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


HISTORY_COLUMNS = ("#", "when", "reason", "from", "to", "commit", "actor", "workflow run", "note")


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


def cmd_registry_unlock(args: argparse.Namespace) -> int:
    from .. import promote, tracking

    model_name, alias, mlflow_client, uri = _alias_scope(
        load_config(args, (*MLFLOW_OPTIONS, *ALIAS_OPTIONS))
    )
    name = promote.lock_name(model_name, alias)
    with tracking.tracking_server(uri, f"removing the lock {name}"):
        promote.delete_lock(mlflow_client, name)
    print(f"removed {name} (if it existed)")
    return EXIT_OK
