"""`mlops-actions run`: the pipeline's stages in order on this machine, each monitored."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..cancellation import as_step_error, cancellable
from ..config import Config
from ..errors import EXIT_OK, EXIT_TRAINING_FAILED, Cancelled, CommandFailed
from .common import load_config
from .dvc_pull import _pull_data
from .evaluate import run_gate
from .monitoring import StageRun, _observe_pull, monitored
from .options import RUN_OPTIONS
from .registry_cmds import run_promote
from .training import run_train

# `run --help` and the README's "Exit codes" say the same.
RUN_EXIT_CODES = """exit status:
  0        every stage passed (or the gate is advisory)
  1        the gate rejected the candidate
  2        bad input or configuration
  3        a service failed or is unreachable
  4        the registry changed under the promotion
  5        the training command failed (its own status is in the error)
  70       a bug in mlops-actions
  130/143  cancelled (SIGINT/SIGTERM); a run being trained is KILLED"""


@contextmanager
def _stage(name: str, settings: Callable[[], Config]) -> Iterator[StageRun]:
    """A monitored stage; a signal inside it is reported (and pushed) as 130/143."""
    with monitored(name, settings) as stage:
        try:
            yield stage
        except Cancelled as cancelled:
            raise as_step_error(f"stage '{name}'", cancelled) from None


def cmd_run(args: argparse.Namespace) -> int:
    """The pipeline stages, in order, on this machine: dvc-pull, train, gate, promote."""
    with cancellable("run"):
        return _run_stages(args)


def _run_stages(args: argparse.Namespace) -> int:
    from .. import data

    config = load_config(args, RUN_OPTIONS)

    def settings() -> Config:
        return config

    fingerprint = ""
    if data.in_repository(Path(config.get("data.repo", "."))):
        print("stage 1/4: dvc-pull", file=sys.stderr)
        with _stage("dvc-pull", settings):
            pulled = _pull_data(config)
            _observe_pull(pulled)
        print(f"pulled {pulled.files_fetched} file(s) from '{pulled.remote}'", file=sys.stderr)
        fingerprint = pulled.fingerprint
    else:
        print("stage 1/4: dvc-pull skipped (not a DVC repository)", file=sys.stderr)
    print("stage 2/4: train", file=sys.stderr)
    with _stage("train", settings):
        try:
            trained = run_train(config, fingerprint)
        except CommandFailed as failed:
            # One code for a failed training, apart from the gate's 1; a cancelled one is not
            # a CommandFailed and keeps its 130/143.
            raise CommandFailed(failed.message, EXIT_TRAINING_FAILED, failed.hint) from None
    if not (config.get("gate.rules") and config.get("model.name")):
        print(
            "stages 3-4/4: evaluate and promote skipped (no gate.rules or model.name)",
            file=sys.stderr,
        )
        return EXIT_OK
    print("stage 3/4: evaluate", file=sys.stderr)
    with _stage("evaluate", settings) as stage:
        stage.exit_code = run_gate(config, trained.run_id, args)
    if stage.exit_code != EXIT_OK:
        return stage.exit_code
    print(f"stage 4/4: promote to @{config.get('promote.alias')}", file=sys.stderr)
    with _stage("promote", settings) as stage:
        stage.exit_code = run_promote(config, trained.run_id, args)
    return stage.exit_code
