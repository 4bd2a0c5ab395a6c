"""`mlops-actions config validate` and `config show`."""

from __future__ import annotations

import argparse

from ..config import CONFIG_FILE_NAME
from ..errors import EXIT_OK
from .common import load_config
from .options import RUN_OPTIONS


def cmd_config_validate(args: argparse.Namespace) -> int:
    config = load_config(args, ())
    where = config.path or f"no {CONFIG_FILE_NAME} (defaults only)"
    print(f"{where}: valid")
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    print(load_config(args, RUN_OPTIONS).render(), end="")
    return EXIT_OK
