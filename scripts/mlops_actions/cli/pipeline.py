"""`mlops-actions run`: the pipeline's stages in order on this machine, each monitored."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import Config
from ..errors import EXIT_OK
from .common import load_config
from .dvc_pull import _pull_data
from .evaluate import run_gate
from .monitoring import _observe_pull, monitored
from .options import RUN_OPTIONS
from .registry_cmds import run_promote
from .training import run_train


def cmd_run(args: argparse.Namespace) -> int:
    """The pipeline stages, in order, on this machine: dvc-pull, train, gate, promote."""
    from .. import data

    config = load_config(args, RUN_OPTIONS)

    def settings() -> Config:
        return config

    fingerprint = ""
    if data.in_repository(Path(config.get("data.repo", "."))):
        print("stage 1/4: dvc-pull", file=sys.stderr)
        with monitored("dvc-pull", settings):
            pulled = _pull_data(config)
            _observe_pull(pulled)
        print(f"pulled {pulled.files_fetched} file(s) from '{pulled.remote}'", file=sys.stderr)
        fingerprint = pulled.fingerprint
    else:
        print("stage 1/4: dvc-pull skipped (not a DVC repository)", file=sys.stderr)
    print("stage 2/4: train", file=sys.stderr)
    with monitored("train", settings):
        trained = run_train(config, fingerprint)
    if not (config.get("gate.rules") and config.get("model.name")):
        print(
            "stages 3-4/4: evaluate and promote skipped (no gate.rules or model.name)",
            file=sys.stderr,
        )
        return EXIT_OK
    print("stage 3/4: evaluate", file=sys.stderr)
    with monitored("evaluate", settings) as stage:
        stage.exit_code = run_gate(config, trained.run_id, args)
    if stage.exit_code != EXIT_OK:
        return stage.exit_code
    print(f"stage 4/4: promote to @{config.get('promote.alias')}", file=sys.stderr)
    with monitored("promote", settings) as stage:
        stage.exit_code = run_promote(config, trained.run_id, args)
    return stage.exit_code
