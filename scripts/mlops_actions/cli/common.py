"""What every verb does the same way: read a value, load the config, emit outputs, report errors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import gha
from ..config import CONFIG_FILE_NAME, Config, resolve
from ..errors import MlopsError
from .options import Option


def _value(args: argparse.Namespace, name: str) -> str:
    """The flag if given, else the action input, else ''."""
    given = getattr(args, name.replace("-", "_"), None)
    return str(given).strip() if given is not None else gha.input_value(name)


def load_config(args: argparse.Namespace, options: Sequence[Option]) -> Config:
    explicit = _value(args, "config") or os.environ.get("MLOPS_CONFIG", "").strip()
    inputs = {
        o.config_key: (o.name, raw)
        for o in options
        if o.config_key and (raw := _value(args, o.name))
    }
    return resolve(
        config_path=Path(explicit or CONFIG_FILE_NAME),
        environ=os.environ,
        inputs=inputs,
        require_file=bool(explicit),
    )


def emit(outputs: Mapping[str, str]) -> None:
    """Step outputs on a runner, and `name: value` lines on stdout everywhere."""
    for name, value in outputs.items():
        gha.set_output(name, value)
        print(f"{name}: {value}")
    sys.stdout.flush()


def _where(args: argparse.Namespace, name: str) -> str:
    """How the user gave a value: the flag on the command line, else the action input."""
    given = getattr(args, name.replace("-", "_"), None) is not None
    return f"--{name}" if given else f"input '{name}'"


def report_error(error: MlopsError) -> None:
    text = f"{error.message}. Fix: {error.hint}" if error.hint else error.message
    gha.annotate(
        "error",
        text,
        title=error.title,
        file=getattr(error, "file", None),
        line=getattr(error, "line", None),
    )
    gha.add_summary(
        f"### ❌ {error.title}\n\n{error.message}\n\n"
        + (f"**Fix:** {error.hint}\n" if error.hint else "")
    )


def _github_token(args: argparse.Namespace) -> str:
    """The github-token input, else GITHUB_TOKEN or GH_TOKEN from the environment."""
    return (
        _value(args, "github-token")
        or (os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN") or "").strip()
    )


def _registry_client(config: Config) -> tuple[Any, str]:
    from .. import tracking

    uri = tracking.resolve_tracking_uri(str(config.get("mlflow.tracking_uri", "")), Path.cwd())
    return tracking.client(uri, str(config.get("mlflow.registry_uri") or "")), uri
