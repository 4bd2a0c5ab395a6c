"""`mlops-actions config validate` and `config show`."""

from __future__ import annotations

import argparse

from .. import gha
from ..config import CONFIG_FILE_NAME
from ..errors import EXIT_OK
from .common import load_config, mlflow_uris
from .options import RUN_OPTIONS


def cmd_config_validate(args: argparse.Namespace) -> int:
    config = load_config(args, ())
    where = config.path or f"no {CONFIG_FILE_NAME} (defaults only)"
    print(f"{where}: valid")
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    config = load_config(args, RUN_OPTIONS)
    mlflow_uris(config)  # a URI with a password in it is refused here too, never printed
    print(gha.log_safe(config.render()), end="")
    return EXIT_OK
