"""`--help` shows what each verb needs; the action input of the same name may still give it."""

from __future__ import annotations

import argparse
import re

import pytest

from mlops_actions.cli import build_parser
from mlops_actions.cli.options import REQUIRED_TITLE

REQUIRED = [
    ("evaluate", "candidate"),
    ("promote", "candidate"),
    ("build-push", "model-uri"),
    ("manifests", "image"),
    ("push-metrics", "stage"),
]


def verb_parser(verb: str) -> argparse.ArgumentParser:
    subparsers = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    parser: argparse.ArgumentParser = subparsers.choices[verb]
    return parser


@pytest.mark.parametrize(("verb", "flag"), REQUIRED, ids=[v for v, _ in REQUIRED])
def test_help_shows_the_required_option_as_required(verb: str, flag: str) -> None:
    text = verb_parser(verb).format_help()
    metavar = flag.upper().replace("-", "_")
    usage = " ".join(text.split("\n\n", 1)[0].split())
    assert f"--{flag} {metavar}" in usage
    assert f"[--{flag} {metavar}]" not in usage, usage
    section = text.split(f"{REQUIRED_TITLE}:\n", 1)[1].split("\n\n", 1)[0]
    assert re.search(rf"^  --{flag} {metavar}\b.*\(required\)", section, re.S | re.M), section
    # Everything else stays in brackets.
    assert "[--config CONFIG]" in usage


@pytest.mark.parametrize(("verb", "flag"), REQUIRED, ids=[v for v, _ in REQUIRED])
def test_a_required_option_may_still_come_from_the_action_input(verb: str, flag: str) -> None:
    args = build_parser().parse_args([verb])
    assert getattr(args, flag.replace("-", "_")) is None
    # Formatting the help did not make parsing strict.
    verb_parser(verb).format_help()
    assert getattr(build_parser().parse_args([verb]), flag.replace("-", "_")) is None


def test_run_takes_its_candidate_from_training() -> None:
    text = verb_parser("run").format_help()
    assert REQUIRED_TITLE not in text
    assert "[--candidate CANDIDATE]" in " ".join(text.split())
