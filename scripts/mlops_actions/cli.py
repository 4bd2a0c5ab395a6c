"""`mlops-actions <verb>`: parse, resolve the config, call the core, report, map errors to exits.

Every option can also come from the action input of the same name (`INPUT_<NAME>`), so the
composite actions only map inputs to environment variables and exec this command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, gha
from .config import CONFIG_FILE_NAME, Config, resolve
from .errors import EXIT_INTERNAL, EXIT_OK, MlopsError

if TYPE_CHECKING:
    from .data import PullResult


@dataclass(frozen=True)
class Option:
    """One CLI option, also readable from the action input of the same name."""

    name: str
    help: str
    config_key: str | None = None  # where it lands in mlops.yaml terms


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
    Option("backend", "MLflow Projects backend (default: local)", "train.project.backend"),
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


def _add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    for option in options:
        parser.add_argument(
            f"--{option.name}", dest=option.name.replace("-", "_"), help=option.help, default=None
        )


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


# ----------------------------------------------------------------------------- verbs


def _targets(config: Config) -> list[str]:
    return [str(t) for t in config.get("data.targets") or []]


def _pull_data(config: Config) -> PullResult:
    """dvc-pull as configured, with its job summary; shared by `dvc-pull` and `run`."""
    from . import data, report

    targets = _targets(config)
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
    from . import data

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


def _train_request(config: Config, cwd: Path) -> Any:
    from . import tracking
    from .train import ProjectSpec, TrainRequest

    project = config.get("train.project")
    spec = None
    if project:
        spec = ProjectSpec(
            uri=str(project.get("uri") or "."),
            entry_point=str(project.get("entry_point") or "main"),
            parameters=dict(project.get("parameters") or {}),
            backend=str(project.get("backend") or "local"),
            backend_config=project.get("backend_config"),
            env_manager=str(project.get("env_manager") or "local"),
        )
    repository = os.environ.get("GITHUB_REPOSITORY", "")
    experiment = config.get("mlflow.experiment") or (
        repository.rsplit("/", 1)[-1] if repository else cwd.name
    )
    return TrainRequest(
        tracking_uri=tracking.resolve_tracking_uri(str(config.get("mlflow.tracking_uri", "")), cwd),
        registry_uri=str(config.get("mlflow.registry_uri") or ""),
        experiment=str(experiment),
        working_directory=(cwd / str(config.get("train.working_directory", "."))),
        base_environment=dict(os.environ),
        command=config.get("train.command"),
        project=spec,
        run_name=config.get("train.run_name"),
        tags={str(k): str(v) for k, v in (config.get("train.tags") or {}).items()},
    )


def run_train(config: Config, data_fingerprint: str) -> int:
    """Shared by `train` and `run`: train, emit outputs and summary, fail like the command."""
    from . import context, data, report, tracking
    from . import train as train_core

    cwd = Path.cwd()
    request = _train_request(config, cwd)
    if not data_fingerprint:
        data_fingerprint = data.workspace_fingerprint(
            Path(config.get("data.repo", ".")), _targets(config)
        )
    run_context = context.detect(os.environ, cwd)
    source = request.command or (request.project.uri if request.project else "")
    tags = {
        **run_context.tags(),
        "mlflow.source.name": source,
        "mlflow.source.type": "PROJECT" if request.project else "LOCAL",
        "mlflow.user": run_context.actor,
        "mlops.data.fingerprint": data_fingerprint,
        "mlops.train.mode": "project" if request.project else "command",
        "mlops.version": __version__,
    }
    tags = {k: v for k, v in tags.items() if v}
    with gha.group(f"train: {source}"):
        result = train_core.run_training(request, tags)
    emit(
        {
            "run-id": result.run_id,
            "run-url": result.run_url,
            "experiment-id": result.experiment_id,
            "status": result.status,
            "model-uri": result.model_uri,
            "metrics": json.dumps(result.metrics, sort_keys=True),
            "data-fingerprint": data_fingerprint,
        }
    )
    shown = tracking.redact(request.tracking_uri)
    gha.add_summary(report.train_summary(result, request.experiment, shown))
    if len(result.model_uris) > 1:
        gha.annotate(
            "warning",
            f"the run logged {len(result.model_uris)} models; model-uri is "
            f"the newest, {result.model_uri}",
            title="train",
        )
    if not result.model_uri and result.succeeded:
        gha.annotate(
            "warning",
            "the run logged no model: model-uri is empty (log one with mlflow.<flavor>.log_model)",
            title="train",
        )
    failed = train_core.failure(result)
    if failed is not None:
        raise failed
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    config = load_config(args, (*MLFLOW_OPTIONS, *TRAIN_OPTIONS))
    return run_train(config, _value(args, "data-fingerprint"))


def cmd_run(args: argparse.Namespace) -> int:
    """The pipeline stages, in order, on this machine: dvc-pull, then train."""
    from . import data

    config = load_config(args, (*MLFLOW_OPTIONS, *DATA_OPTIONS, *TRAIN_OPTIONS))
    fingerprint = ""
    if data.in_repository(Path(config.get("data.repo", "."))):
        print("stage 1/2: dvc-pull", file=sys.stderr)
        pulled = _pull_data(config)
        print(f"pulled {pulled.files_fetched} file(s) from '{pulled.remote}'", file=sys.stderr)
        fingerprint = pulled.fingerprint
    else:
        print("stage 1/2: dvc-pull skipped (not a DVC repository)", file=sys.stderr)
    print("stage 2/2: train", file=sys.stderr)
    return run_train(config, fingerprint)


def cmd_config_validate(args: argparse.Namespace) -> int:
    config = load_config(args, ())
    where = config.path or f"no {CONFIG_FILE_NAME} (defaults only)"
    print(f"{where}: valid")
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    options = (*MLFLOW_OPTIONS, *DATA_OPTIONS, *TRAIN_OPTIONS)
    print(load_config(args, options).render(), end="")
    return EXIT_OK


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlops-actions",
        description="Carry a model from DVC data to a tracked MLflow run, locally or in CI.",
    )
    parser.add_argument("--version", action="version", version=f"mlops-actions {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(
        name: str,
        handler: Callable[[argparse.Namespace], int],
        text: str,
        options: Sequence[Option],
    ) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=text, description=text)
        _add_options(sub, (CONFIG_OPTION, *options))
        sub.set_defaults(handler=handler)
        return sub

    pull = verb("dvc-pull", cmd_dvc_pull, "pull the DVC data the commit points to", DATA_OPTIONS)
    pull.add_argument(
        "--plan",
        action="store_true",
        help="only check the remote and print the fingerprint and cache path",
    )
    verb(
        "train",
        cmd_train,
        "run training inside a tagged MLflow run",
        (*MLFLOW_OPTIONS, *TRAIN_OPTIONS),
    )
    verb(
        "run",
        cmd_run,
        "run the pipeline stages locally, in order",
        (*MLFLOW_OPTIONS, *DATA_OPTIONS, *TRAIN_OPTIONS),
    )
    version = verbs.add_parser("version", help="print the version")
    version.set_defaults(handler=lambda _args: print(__version__) or EXIT_OK)

    config = verbs.add_parser("config", help="check or show mlops.yaml")
    config_verbs = config.add_subparsers(dest="config_verb", required=True, metavar="ACTION")
    validate = config_verbs.add_parser("validate", help="validate mlops.yaml against the schema")
    _add_options(validate, (CONFIG_OPTION,))
    validate.set_defaults(handler=cmd_config_validate)
    show = config_verbs.add_parser("show", help="print the effective config and its sources")
    _add_options(show, (CONFIG_OPTION, *MLFLOW_OPTIONS, *DATA_OPTIONS, *TRAIN_OPTIONS))
    show.set_defaults(handler=cmd_config_show)
    return parser


def _prepare_environment() -> None:
    """Process-wide settings for the clients, before any of them is imported."""
    from .tracking import HTTP_RETRY_DEFAULTS

    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")  # no usage reports from CI machines
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


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


def main(argv: Sequence[str] | None = None) -> int:
    gha.mask_secret_environment()
    parser = build_parser()
    args = parser.parse_args(argv)
    _prepare_environment()
    try:
        code: int = args.handler(args)
        return code
    except MlopsError as error:
        report_error(error)
        return error.exit_code
    except KeyboardInterrupt:
        gha.annotate("error", "interrupted", title="mlops-actions")
        return 130
    except Exception:
        traceback.print_exc()
        gha.annotate(
            "error",
            "internal error in mlops-actions (a bug): the traceback is above; please report it",
            title="internal error",
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
