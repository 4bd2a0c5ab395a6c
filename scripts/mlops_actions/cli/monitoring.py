"""The monitoring hook: time each stage and push its outcome and gauges to the Pushgateway.

Verbs add their own gauges with `_observe` while a stage runs; this module imports no verb.
"""

from __future__ import annotations

import argparse
import contextvars
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .. import gha, monitor
from ..config import Config
from ..errors import EXIT_INTERNAL, EXIT_OK, ConfigError, MlopsError
from .common import _origin, load_config
from .options import MONITORING_OPTIONS

if TYPE_CHECKING:
    from ..data import PullResult
    from ..monitor import PushResult, Sample, Target


# Verbs that push their outcome when monitoring.pushgateway_url is set (`run` pushes each stage).
MONITORED_VERBS = frozenset({"dvc-pull", "train", "evaluate", "promote", "rollback", "build-push"})


@dataclass
class StageRun:
    """The stage running now: what it reports for the Pushgateway, and how it ended."""

    name: str
    samples: list[Sample] = field(default_factory=list)
    exit_code: int = EXIT_OK


_current_stage: contextvars.ContextVar[StageRun | None] = contextvars.ContextVar(
    "mlops_stage", default=None
)
# Gateways that failed once in this process: later stages of `run` do not wait for them again,
# so a pipeline with the gateway down prints one warning.
_unreachable: set[str] = set()


def _observe(samples: Iterable[Sample]) -> None:
    """Add a verb's own gauges to the stage being monitored (a no-op outside one)."""
    stage = _current_stage.get()
    if stage is not None:
        stage.samples.extend(samples)


def _observe_pull(result: PullResult) -> None:
    _observe(monitor.pull_samples(result.files_fetched, result.bytes_fetched))


@contextmanager
def monitored(stage: str, settings: Callable[[], Config | None]) -> Iterator[StageRun]:
    """Time the stage and push its outcome when it ends, whether it returns or raises.

    The body sets `exit_code` when it returns one instead of raising (the gate's rejection).
    `settings` gives the config after the stage, so a verb loads it only once itself.
    """
    run = StageRun(stage)
    token = _current_stage.set(run)
    started = time.monotonic()
    try:
        yield run
    except MlopsError as error:
        run.exit_code = error.exit_code
        raise
    except KeyboardInterrupt:
        run.exit_code = 130
        raise
    except Exception:
        run.exit_code = EXIT_INTERNAL
        raise
    finally:
        _current_stage.reset(token)
        duration = time.monotonic() - started
        _push_stage(run, duration, settings)


def _push_stage(run: StageRun, duration: float, settings: Callable[[], Config | None]) -> None:
    """Best effort: a failed push, or a bug in it, is one warning; the stage's result stands."""
    try:
        config = settings()
        target = _monitoring_target(config) if config is not None else None
        if target is None:
            return
        if target.shown_url in _unreachable:
            print(
                f"metrics of stage '{run.name}' not pushed: {target.shown_url} failed earlier",
                file=sys.stderr,
            )
            return
        samples = [*monitor.stage_samples(run.exit_code, duration, time.time()), *run.samples]
        _report_push(target, run.name, samples, monitor.push(target, run.name, samples))
    except Exception as error:  # monitoring never fails a stage, not even through a bug
        gha.annotate(
            "warning",
            f"metrics of stage '{run.name}' not pushed: internal error {error!r} "
            "(a bug in mlops-actions; please report it)",
            title="push-metrics",
        )


def _report_push(target: Target, stage: str, samples: Sequence[Sample], result: PushResult) -> None:
    if result.pushed:
        print(
            f"pushed {len(samples)} metrics of stage '{stage}' to {result.url} "
            f"(job={target.job}, pipeline={target.pipeline})",
            file=sys.stderr,
        )
        return
    _unreachable.add(result.url)
    gha.annotate(
        "warning",
        f"metrics of stage '{stage}' not pushed to {result.url}: {result.error}. "
        f"Fix: {result.hint}. The pipeline goes on without them",
        title="push-metrics",
    )


def _monitoring_config(args: argparse.Namespace) -> Config | None:
    """The config for the hook; the environment alone if the file is what made the verb fail."""
    from ..config import resolve

    try:
        return load_config(args, MONITORING_OPTIONS)
    except MlopsError:
        pass
    try:
        return resolve(config_path=None, environ=os.environ)
    except MlopsError:
        return None


def _monitoring_target(config: Config) -> Target | None:
    """Where to push, or None when monitoring is off. Secrets are masked here."""
    url = str(config.get("monitoring.pushgateway_url") or "")
    if not url:
        return None
    try:
        urlsplit(url).port  # noqa: B018 - reading the port parses it
    except ValueError:  # an unclosed [IPv6] bracket, a port that is no number; not echoed
        raise ConfigError(
            f"{_origin(config, 'monitoring.pushgateway_url')} is not a valid URL",
            "e.g. https://pushgateway.example.com or http://[::1]:9091",
        ) from None
    repository = os.environ.get("GITHUB_REPOSITORY", "")
    pipeline = (
        config.get("monitoring.pipeline")
        or config.get("model.name")
        or (repository.rsplit("/", 1)[-1] if repository else Path.cwd().name)
    )
    target = monitor.Target(
        url=url,
        job=str(config.get("monitoring.job")),
        pipeline=str(pipeline),
        timeout_seconds=float(config.get("monitoring.timeout_seconds")),
        username=os.environ.get("MLOPS_PUSHGATEWAY_USERNAME", "").strip(),
        password=os.environ.get("MLOPS_PUSHGATEWAY_PASSWORD", ""),
        token=os.environ.get("MLOPS_PUSHGATEWAY_TOKEN", "").strip(),
    )
    for secret in (target.password, target.token):
        gha.mask(secret)
    return target


def _stage_of(args: argparse.Namespace) -> str | None:
    """The stage a verb reports as, or None (push-metrics, config, `run` itself, --plan)."""
    verb = str(args.verb)
    if verb not in MONITORED_VERBS or getattr(args, "plan", False):
        return None
    return verb
