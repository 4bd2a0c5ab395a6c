"""The only module that knows GitHub Actions.

Inputs, outputs, the job summary, annotations, masking and log groups. Outside a runner every
function here is harmless: outputs and the summary are skipped (their files are not set),
annotations become plain lines on stderr, masking does nothing. So the CLI works on a laptop.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TextIO

# Environment variables whose values are secrets wherever they appear. Anything whose name
# ends in one of SECRET_SUFFIXES is treated the same way.
SECRET_VARIABLES = frozenset(
    {
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_TRACKING_CLIENT_CERT_PATH",
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_CONNECTION_STRING",
        "GOOGLE_APPLICATION_CREDENTIALS_JSON",
        "DATABRICKS_TOKEN",
    }
)
SECRET_SUFFIXES = ("_TOKEN", "_PASSWORD", "_SECRET", "_SECRET_KEY", "_SECRET_ACCESS_KEY")


def in_runner(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("GITHUB_ACTIONS") == "true"


def input_value(name: str, environ: Mapping[str, str] | None = None) -> str:
    """An action input as the composite step passed it: `INPUT_<NAME>`, '' when unset.

    Composite actions do not export inputs by themselves; every action.yml here maps
    each input to `INPUT_<NAME>` (upper case, '-' -> '_') through `env:`.
    """
    env = os.environ if environ is None else environ
    return env.get("INPUT_" + name.upper().replace("-", "_"), "").strip()


def _append(variable: str, text: str) -> bool:
    path = os.environ.get(variable)
    if not path:
        return False
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
    return True


def set_output(name: str, value: str) -> None:
    """Write one step output with a random heredoc delimiter, as the runner's toolkit does."""
    delimiter = f"ghadelimiter_{uuid.uuid4()}"
    if delimiter in name or delimiter in value:  # pragma: no cover - a 122-bit coincidence
        raise ValueError("output delimiter collision")
    _append("GITHUB_OUTPUT", f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def add_summary(markdown: str) -> None:
    """Append Markdown to the job summary (no-op outside a runner)."""
    _append("GITHUB_STEP_SUMMARY", markdown.rstrip("\n") + "\n\n")


# What the runner reads as a line break (.NET's ReadLine), and the two forms of a workflow
# command: '::name …::data' at the start of a line (after spaces, which it trims), and the
# legacy '##[name …]data' anywhere in a line.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LEGACY_COMMAND = "##["


def log_safe(text: str) -> str:
    """`text` for the log, where no line can be taken for a workflow command.

    Values from inputs, the registry or the user's files may hold a line break followed by
    '::error::…' or '::add-mask::…'. Lines keep their text; a command's first character is
    percent-escaped, as the toolkit escapes command data, so the runner shows it instead.
    """
    return "\n".join(_defuse(line) for line in _LINE_BREAK.split(text))


def _defuse(line: str) -> str:
    line = line.replace(_LEGACY_COMMAND, "%23" + _LEGACY_COMMAND[1:])
    body = line.lstrip()
    if body.startswith("::"):
        return line[: len(line) - len(body)] + "%3A" + body[1:]
    return line


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def format_annotation(
    level: str,
    message: str,
    *,
    title: str | None = None,
    file: str | None = None,
    line: int | None = None,
) -> str:
    """The `::error title=…::message` workflow command, escaped like actions/toolkit does."""
    props = {"file": file, "line": None if line is None else str(line), "title": title}
    rendered = ",".join(f"{k}={_escape_property(v)}" for k, v in props.items() if v)
    head = f"::{level} {rendered}" if rendered else f"::{level}"
    return f"{head}::{_escape_data(message)}"


def annotate(
    level: str,
    message: str,
    *,
    title: str | None = None,
    file: str | None = None,
    line: int | None = None,
    stream: TextIO | None = None,
) -> None:
    """An error, warning or notice: an annotation on a runner, a plain line elsewhere."""
    out = stream or (sys.stdout if in_runner() else sys.stderr)
    if in_runner():
        print(format_annotation(level, message, title=title, file=file, line=line), file=out)
    else:
        prefix = f"{level}: {title}: " if title else f"{level}: "
        print(log_safe(prefix + message), file=out)
    out.flush()


def mask(value: str) -> None:
    """Ask the runner to hide `value` in every later log line (each line of it, if several)."""
    if not in_runner() or not value:
        return
    for part in value.splitlines():
        if part.strip():
            print(f"::add-mask::{part}", flush=True)


def is_secret_name(name: str) -> bool:
    return name in SECRET_VARIABLES or name.endswith(SECRET_SUFFIXES)


def mask_secret_environment(environ: Mapping[str, str] | None = None) -> None:
    """Mask every secret-looking environment value before anything else is printed."""
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if is_secret_name(name) and value:
            mask(value)


@contextmanager
def group(title: str) -> Iterator[None]:
    """A collapsible log group on a runner; a plain heading line elsewhere."""
    if in_runner():
        print(f"::group::{_escape_data(title)}", flush=True)
    else:
        print(log_safe(f"== {title}"), file=sys.stderr, flush=True)
    try:
        yield
    finally:
        if in_runner():
            print("::endgroup::", flush=True)
