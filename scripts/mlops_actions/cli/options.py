"""The options of every verb: each a CLI flag, an action input and often a mlops.yaml key."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from .. import gha
from ..config import CONFIG_FILE_NAME
from ..errors import EXIT_USAGE


class Parser(argparse.ArgumentParser):
    """The CLI's parsers: no abbreviated flags, usage errors as one annotation and exit 2.

    argparse would take `--candidat` for `--candidate`, and a later flag that shares the
    prefix would change what an old workflow means. Sub-parsers are of the parent's class.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self.shown_required: list[argparse.Action] = []

    def format_usage(self) -> str:
        with self._usage_shows_required():
            return super().format_usage()

    def format_help(self) -> str:
        with self._usage_shows_required():
            return super().format_help()

    @contextmanager
    def _usage_shows_required(self) -> Iterator[None]:
        """The usage line without [brackets] around what the verb needs; parsing still lets it
        be absent (the action input of the same name may give it)."""
        for action in self.shown_required:
            action.required = True
        try:
            yield
        finally:
            for action in self.shown_required:
                action.required = False

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        gha.annotate("error", f"{self.prog}: {message}", title="usage error")
        sys.exit(EXIT_USAGE)


@dataclass(frozen=True)
class Option:
    """One CLI option, also readable from the action input of the same name."""

    name: str
    help: str
    config_key: str | None = None  # where it lands in mlops.yaml terms
    # The verb cannot run without it. Shown as required in --help but not enforced by argparse:
    # in a step the value comes from the action input of the same name, and the verb names the
    # input when neither is given.
    required: bool = False


CONFIG_OPTION = Option("config", f"path of the config file (default: {CONFIG_FILE_NAME})")
MLFLOW_OPTIONS = (
    Option(
        "tracking-uri",
        "MLflow tracking URI (default: SQLite in ./mlflow.db)",
        "mlflow.tracking_uri",
    ),
    Option("registry-uri", "MLflow registry URI, when not the tracking URI", "mlflow.registry_uri"),
    Option(
        "experiment", "MLflow experiment name (default: the repository name)", "mlflow.experiment"
    ),
)
DATA_OPTIONS = (
    Option("targets", "DVC targets, separated by spaces, commas or newlines", "data.targets"),
    Option("remote", "DVC remote (default: the repository's default remote)", "data.remote"),
    Option("jobs", "parallel downloads", "data.jobs"),
    Option("repo", "directory of the DVC repository", "data.repo"),
)
TRAIN_OPTIONS = (
    Option("command", "shell command that trains, run with bash", "train.command"),
    Option("project-uri", "MLflow Project directory (instead of a command)", "train.project.uri"),
    Option(
        "entry-point", "MLflow Project entry point (default: main)", "train.project.entry_point"
    ),
    Option(
        "parameters",
        "entry point parameters: key=value lines or a JSON object",
        "train.project.parameters",
    ),
    Option(
        "backend",
        "local | ray | an MLflow Projects backend for a project (default: local)",
        "train.backend",
    ),
    Option(
        "backend-config",
        "backend configuration: JSON file path or JSON object",
        "train.project.backend_config",
    ),
    Option(
        "env-manager",
        "local | virtualenv | uv | conda (default: local)",
        "train.project.env_manager",
    ),
    Option("run-name", "MLflow run name", "train.run_name"),
    Option("working-directory", "directory the command runs in", "train.working_directory"),
    Option("tags", "extra run tags: key=value lines or a JSON object", "train.tags"),
    Option("data-fingerprint", "fingerprint from dvc-pull (default: computed from the checkout)"),
)

GATE_OPTIONS = (
    Option(
        "candidate",
        "run id or model URI of the candidate (train's run-id or model-uri)",
        required=True,
    ),
    Option("model-name", "registered model name", "model.name"),
    Option(
        "champion-alias", "alias of the production model (default: champion)", "gate.champion_alias"
    ),
    Option("rules", "gate rules as a YAML or JSON list (default: gate.rules)", "gate.rules"),
    Option(
        "first-model", "pass | fail when no champion exists (default: pass)", "gate.first_model"
    ),
    Option("advisory", "true: report the verdict but never fail (default: false)", "gate.advisory"),
    Option("compare", "logged | evaluate (default: logged)", "gate.compare"),
    Option("evaluation-data", "evaluation dataset for compare=evaluate", "gate.evaluation.data"),
    Option("evaluation-targets", "label column of the dataset", "gate.evaluation.targets"),
    Option("model-type", "classifier | regressor", "gate.evaluation.model_type"),
    Option("evaluation-python", "Python with the model's dependencies", "gate.evaluation.python"),
    Option(
        "confidence",
        "default confidence of the rules' paired intervals, e.g. 0.95 (compare=evaluate)",
        "gate.confidence",
    ),
    Option("resamples", "bootstrap resamples (default: 2000)", "gate.resamples"),
    Option("seed", "bootstrap seed (default: 0)", "gate.seed"),
    Option("primary-metric", "metric charted across champions", "gate.primary_metric"),
    Option("pr-comment", "comment on the pull request (default: true)", "gate.report.pr_comment"),
    Option("check-run", "create a check run (default: true)", "gate.report.check_run"),
    Option("decision-file", "where to write the decision JSON"),
    Option("github-token", "GitHub token (default: GITHUB_TOKEN)"),
    Option("pr-number", "pull request to comment on (default: from the event)"),
)

PROMOTE_OPTIONS = (
    Option(
        "candidate", "run id or model URI to promote (train's run-id or model-uri)", required=True
    ),
    Option("model-name", "registered model name", "model.name"),
    Option("alias", "alias to move (default: champion)", "promote.alias"),
    Option("expected-version", "version the alias must point at now: N, none or any"),
    Option("stage", "also transition to this legacy stage (Staging, Production)", "promote.stage"),
    Option(
        "require-gate",
        "refuse candidates the gate rejected (default: true)",
        "promote.require_gate",
    ),
    Option("history-limit", "moves kept per alias (default: 50)", "promote.history_limit"),
    Option(
        "dispatch-event", "repository_dispatch event type after a move", "promote.dispatch_event"
    ),
    Option("github-token", "GitHub token for the dispatch (default: GITHUB_TOKEN)"),
)
ALIAS_OPTIONS = (
    Option("model-name", "registered model name", "model.name"),
    Option("alias", "the alias (default: champion)", "promote.alias"),
)
ROLLBACK_OPTIONS = (
    *ALIAS_OPTIONS,
    Option("to-version", "version to restore (default: the previous holder)"),
    Option(
        "dispatch-event", "repository_dispatch event type after a move", "promote.dispatch_event"
    ),
    Option("github-token", "GitHub token for the dispatch (default: GITHUB_TOKEN)"),
)

IMAGE_OPTIONS = (
    Option(
        "model-uri",
        "model to serve, e.g. models:/<name>@champion or models:/<name>/<version>",
        required=True,
    ),
    Option("image", "image repository, e.g. ghcr.io/acme/iris-serving", "image.repository"),
    Option("base-image", "base image with Python 3 (pin it by digest)", "image.base_image"),
    Option("tags", "extra tags, separated by spaces, commas or newlines", "image.tags"),
    Option("build-args", "extra build arguments: key=value lines or JSON", "image.build_args"),
    Option("platform", "target platform, e.g. linux/amd64", "image.platform"),
    Option("push", "push after the smoke test (default: true)", "image.push"),
    Option("smoke-test", "run the image before pushing (default: true)", "image.smoke_test"),
    Option("extra-ca", "CA bundle for package downloads during the build", "image.extra_ca"),
    Option("dockerfile", "your own Dockerfile instead of the generated one", "image.dockerfile"),
    Option("docker-cli", "Docker client to build with", "image.docker_cli"),
    Option("registry-username", "registry user (the password comes from REGISTRY_PASSWORD)"),
    Option(
        "attestations",
        "attach an SBOM and build provenance to the pushed digest (default: true)",
        "image.attestations",
    ),
    Option(
        "promotion-id",
        "the promote step's promotion-id: its history entry records the image",
    ),
)


MONITORING_OPTIONS = (
    Option(
        "pushgateway-url",
        "Pushgateway URL (default: MLOPS_PUSHGATEWAY_URL, then monitoring.pushgateway_url)",
        "monitoring.pushgateway_url",
    ),
    Option("job", "job label (default: mlops-actions)", "monitoring.job"),
    Option(
        "pipeline",
        "pipeline label (default: model.name, else the repository name)",
        "monitoring.pipeline",
    ),
    Option("timeout-seconds", "push timeout in seconds (default: 5)", "monitoring.timeout_seconds"),
    Option("model-name", "registered model name (the default pipeline label)", "model.name"),
)
PUSH_OPTIONS = (
    Option("stage", "stage label, e.g. deploy", required=True),
    Option("status", "success | failure | cancelled | skipped (or give exit-code)"),
    Option("exit-code", "the stage's exit code (or give status)"),
    Option("duration-seconds", "the stage's wall time in seconds"),
    Option("metrics", "extra gauges: name=value lines (the action input; --metric on the CLI)"),
    Option("metrics-file", "extra gauges from a JSON object file: {name: number}"),
    *MONITORING_OPTIONS,
)


def _unique(*groups: Sequence[Option]) -> tuple[Option, ...]:
    """Options of several verbs, each name once (the first definition wins)."""
    seen: dict[str, Option] = {}
    for group in groups:
        for option in group:
            seen.setdefault(option.name, option)
    return tuple(seen.values())


# `run` takes the candidate from its own training stage.
RUN_OPTIONS = tuple(
    replace(option, required=False)
    for option in _unique(
        MLFLOW_OPTIONS, DATA_OPTIONS, TRAIN_OPTIONS, GATE_OPTIONS, PROMOTE_OPTIONS
    )
)
REQUIRED_TITLE = "required (the flag, or in a step the action input of the same name)"


def _add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    needed = parser.add_argument_group(REQUIRED_TITLE) if any(o.required for o in options) else None
    for option in options:
        action = (needed if option.required and needed else parser).add_argument(
            f"--{option.name}",
            dest=option.name.replace("-", "_"),
            help=f"{option.help} (required)" if option.required else option.help,
            default=None,
        )
        if option.required and isinstance(parser, Parser):
            parser.shown_required.append(action)
