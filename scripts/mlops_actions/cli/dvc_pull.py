"""`mlops-actions dvc-pull`, and the pull that `run` and the gate's evaluation data reuse."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .. import gha
from ..config import Config
from ..errors import EXIT_OK
from .common import emit, load_config
from .monitoring import _observe_pull
from .options import DATA_OPTIONS

if TYPE_CHECKING:
    from ..data import PullResult


def _targets(config: Config) -> list[str]:
    return [str(t) for t in config.get("data.targets") or []]


def _pull_data(config: Config, targets: list[str] | None = None) -> PullResult:
    """dvc-pull as configured (or of `targets`), with its job summary; used by several verbs."""
    from .. import data, report

    targets = _targets(config) if targets is None else targets
    with gha.group(f"dvc pull {' '.join(targets) or '(all targets)'}"):
        result = data.pull(
            Path(config.get("data.repo", ".")),
            targets,
            str(config.get("data.remote") or ""),
            config.get("data.jobs"),
            os.environ,
            Path.home(),
        )
    gha.add_summary(report.dvc_pull_summary(result))
    return result


def cmd_dvc_pull(args: argparse.Namespace) -> int:
    from .. import data

    config = load_config(args, DATA_OPTIONS)
    if args.plan:
        planned = data.plan(
            Path(config.get("data.repo", ".")),
            _targets(config),
            str(config.get("data.remote") or ""),
            os.environ,
            Path.home(),
        )
        emit(
            {
                "remote": planned.remote,
                "data-fingerprint": planned.fingerprint,
                "cache-dir": planned.cache_dir,
                "cache-key": f"mlops-dvc-{planned.fingerprint}",
            }
        )
        return EXIT_OK
    result = _pull_data(config)
    _observe_pull(result)
    emit(
        {
            "files-fetched": str(result.files_fetched),
            "bytes-fetched": str(result.bytes_fetched),
            "data-fingerprint": result.fingerprint,
            "remote": result.remote,
            "cache-dir": result.cache_dir,
        }
    )
    return EXIT_OK
