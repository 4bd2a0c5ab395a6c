"""What every verb does the same way: read a value, load the config, emit outputs, report errors."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import gha
from ..config import CONFIG_FILE_NAME, Config, resolve
from ..errors import ConfigError, MlopsError
from .options import Option

# Inputs that may span lines (a script, pairs, lists, rules); every other value is one line,
# so that no input can put a line of its own, a workflow command, into the log.
MULTILINE_INPUTS = frozenset(
    ("command", "parameters", "tags", "build-args", "backend-config", "rules", "targets", "metrics")
)


def _value(args: argparse.Namespace, name: str) -> str:
    """The flag if given, else the action input, else ''."""
    given = getattr(args, name.replace("-", "_"), None)
    value = str(given).strip() if given is not None else gha.input_value(name)
    if name not in MULTILINE_INPUTS and ("\n" in value or "\r" in value):
        raise ConfigError(f"{_where(args, name)} has a line break in it", "give it on one line")
    return value


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


def is_version_number(text: str) -> bool:
    """A registry version: 1, 2, ... (ASCII digits: str.isdigit would take '²')."""
    return re.fullmatch(r"[1-9][0-9]*", text) is not None


def _version_number(args: argparse.Namespace, name: str) -> str:
    """An input that names a registry version, checked; '' when not given."""
    text = _value(args, name)
    if text and not is_version_number(text):
        raise ConfigError(
            f"{_where(args, name)} must be a registry version number (1, 2, ...), got {text!r}",
            "see the versions with `mlops-actions registry history`",
        )
    return text


def _output_file(args: argparse.Namespace, name: str) -> Path | None:
    """A file the verb will write, named by an input: checked before the work, not after it."""
    text = _value(args, name)
    if not text:
        return None
    path = Path(text)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        problem = f"cannot create its directory {str(path.parent)!r}: {error.strerror}"
    else:
        writable = os.access(path if path.exists() else path.parent, os.W_OK)
        problem = (
            "is a directory"
            if path.is_dir()
            else ("" if writable else "cannot be written (permission denied)")
        )
    if problem:
        raise ConfigError(
            f"{_where(args, name)}: {text!r} {problem}",
            "give the path of a file in a writable directory",
        )
    return path


def emit(outputs: Mapping[str, str]) -> None:
    """Step outputs on a runner, and `name: value` lines on stdout everywhere."""
    for name, value in outputs.items():
        gha.set_output(name, value)
        print(gha.log_safe(f"{name}: {value}"))
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


def _origin(config: Config, dotted: str) -> str:
    """Where a value came from, in the words of an error message: input 'x', variable X, file."""
    source = config.source(dotted)
    kind, _, name = source.partition(" ")
    if kind == "input":
        return f"input '{name}'"
    if kind == "environment":
        return f"environment variable {name}"
    return f"{dotted} in {name}" if kind == "file" else dotted


def mlflow_uris(config: Config) -> tuple[str, str]:
    """The tracking and registry URIs, checked: every verb that talks to MLflow gets them here."""
    from .. import tracking

    tracking_uri = tracking.resolve_tracking_uri(
        str(config.get("mlflow.tracking_uri") or ""),
        Path.cwd(),
        _origin(config, "mlflow.tracking_uri"),
    )
    registry_uri = tracking.resolve_registry_uri(
        str(config.get("mlflow.registry_uri") or ""), _origin(config, "mlflow.registry_uri")
    )
    return tracking_uri, registry_uri


def _registry_client(config: Config) -> tuple[Any, str]:
    from .. import tracking

    uri, registry_uri = mlflow_uris(config)
    return tracking.client(uri, registry_uri), uri


# Variables and inputs that hold a URL of a service; a password in one is masked before
# anything prints (the URIs are then refused, the Pushgateway URL by the schema).
URL_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_PUSHGATEWAY_URL")
URL_INPUTS = ("tracking-uri", "registry-uri", "pushgateway-url")


def registry_credentials(args: argparse.Namespace) -> tuple[str, str]:
    """`--registry-username` (or REGISTRY_USERNAME) and REGISTRY_PASSWORD, the password masked
    before anything is logged; a user without a password is refused."""
    username = _value(args, "registry-username") or os.environ.get("REGISTRY_USERNAME", "")
    password = os.environ.get("REGISTRY_PASSWORD", "")
    gha.mask(password)
    if username and not password:
        raise ConfigError(
            "registry-username is set but there is no password",
            "pass the password or token in the REGISTRY_PASSWORD environment variable",
        )
    return username, password


def oci_registry(args: argparse.Namespace, repository: str) -> Any:
    """An OCI client for the repository's registry, with registry_credentials."""
    from .. import image, oci

    return oci.OciRegistry(image.registry_of(repository), *registry_credentials(args))


def mask_url_credentials(args: argparse.Namespace) -> None:
    """A password (or a token given as a user name) written into a URL stays out of every log."""
    from ..tracking import url_secrets

    given = [getattr(args, name.replace("-", "_"), None) or "" for name in URL_INPUTS]
    inputs = [gha.input_value(name) for name in URL_INPUTS]
    for raw in (*(os.environ.get(v, "") for v in URL_VARIABLES), *given, *inputs):
        for secret in url_secrets(str(raw)):
            gha.mask(secret)
