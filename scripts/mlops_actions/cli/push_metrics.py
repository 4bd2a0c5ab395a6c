"""`mlops-actions push-metrics`: push the outcome of a stage this suite does not run."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import gha, monitor
from ..errors import EXIT_OK
from .common import _value, _where, emit, load_config
from .monitoring import _monitoring_target, _report_push
from .options import MONITORING_OPTIONS

if TYPE_CHECKING:
    from ..monitor import Sample


def _push_metric_samples(args: argparse.Namespace) -> list[Sample]:
    """--metric name=value (or the metrics input's lines) and --metrics-file, validated.

    A name given twice is an error, not a silent last-one-wins: in the file, or across sources.
    """
    from ..errors import ConfigError

    given: list[tuple[Sample, str]] = [
        (monitor.parse_assignment(text, f"--metric {text!r}"), "--metric")
        for text in args.metric or ()
    ]
    for line in _value(args, "metrics").splitlines():
        if line.strip():
            where = _where(args, "metrics")
            given.append((monitor.parse_assignment(line.strip(), where), where))
    path_text = _value(args, "metrics-file")
    if path_text:
        where = _where(args, "metrics-file")
        try:
            document = json.loads(
                Path(path_text).read_text(encoding="utf-8"), object_pairs_hook=_refuse_twice
            )
        except OSError as error:
            raise ConfigError(f"{where}: cannot read {path_text}: {error.strerror}") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"{where}: {path_text} is not valid JSON: {error.msg}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: {path_text} is not UTF-8 text") from None
        except _Twice as twice:
            raise ConfigError(f"{where}: {path_text} has {twice.key!r} twice") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{where}: {path_text} must hold a JSON object of name: number")
        given.extend((monitor.custom_sample(str(k), v, where), where) for k, v in document.items())
    first_seen: dict[str, str] = {}
    for sample, where in given:
        if sample.name in first_seen:
            raise ConfigError(
                f"{where}: metric {sample.name} is given twice (also by {first_seen[sample.name]})",
                "keep one",
            )
        first_seen[sample.name] = where
    return [sample for sample, _ in given]


class _Twice(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_twice(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: a key given twice is an error (json keeps the last)."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _Twice(key)
        document[key] = value
    return document


def _exit_code_of(args: argparse.Namespace) -> int:
    """The stage's exit code from --exit-code, else from --status."""
    from ..errors import ConfigError

    status, code_text = _value(args, "status").lower(), _value(args, "exit-code")
    by_status = {"success": 0, "failure": 1, "cancelled": 130}
    if status and status not in by_status:
        raise ConfigError(
            f"{_where(args, 'status')} must be success, failure, cancelled or skipped, "
            f"got {status!r}",
            "pass the stage's steps.<id>.outcome or job.status",
        )
    if code_text:
        try:
            code = int(code_text)
        except ValueError:
            raise ConfigError(
                f"{_where(args, 'exit-code')} must be a whole number, got {code_text!r}"
            ) from None
        if status and (code == 0) != (status == "success"):
            raise ConfigError(f"status {status!r} contradicts exit-code {code}", "give only one")
        return code
    if not status:
        raise ConfigError(
            "neither status nor exit-code is set", "e.g. status: ${{ steps.<id>.outcome }}"
        )
    return by_status[status]


def _duration_of(args: argparse.Namespace) -> float | None:
    from ..errors import ConfigError

    text = _value(args, "duration-seconds")
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ConfigError(
            f"{_where(args, 'duration-seconds')} must be a number of seconds, got {text!r}"
        )
    return seconds


def cmd_push_metrics(args: argparse.Namespace) -> int:
    """Push one stage's outcome (a stage this suite does not run) with extra gauges."""
    from ..errors import ConfigError

    stage = _value(args, "stage")
    if not stage:
        raise ConfigError(f"{_where(args, 'stage')} is empty", "name the stage, e.g. deploy")
    monitor.check_stage(stage, _where(args, "stage"))
    if _value(args, "status").lower() == "skipped":  # steps.<id>.outcome of a skipped step
        print(f"stage '{stage}' was skipped: nothing to push", file=sys.stderr)
        emit({"pushed": "false"})
        return EXIT_OK
    exit_code = _exit_code_of(args)
    duration = _duration_of(args)
    extra = _push_metric_samples(args)
    target = _monitoring_target(load_config(args, MONITORING_OPTIONS))
    if target is None:
        gha.annotate(
            "warning",
            "no Pushgateway URL: nothing pushed. Fix: set the pushgateway-url input, "
            "MLOPS_PUSHGATEWAY_URL or monitoring.pushgateway_url",
            title="push-metrics",
        )
        emit({"pushed": "false"})
        return EXIT_OK
    samples = [*monitor.stage_samples(exit_code, duration, time.time()), *extra]
    result = monitor.push(target, stage, samples)
    _report_push(target, stage, samples, result)
    emit({"pushed": "true" if result.pushed else "false"})
    gha.add_summary(monitor.summary(target, stage, samples, result))
    return EXIT_OK
