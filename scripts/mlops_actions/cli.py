"""`mlops-actions <verb>`: parse, resolve the config, call the core, report, map errors to exits.

Every option can also come from the action input of the same name (`INPUT_<NAME>`), so the
composite actions only map inputs to environment variables and exec this command.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, gha, monitor
from .config import CONFIG_FILE_NAME, Config, resolve
from .errors import EXIT_INTERNAL, EXIT_OK, MlopsError

if TYPE_CHECKING:
    from .data import PullResult
    from .monitor import PushResult, Sample, Target
    from .train import TrainResult


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

GATE_OPTIONS = (
    Option("candidate", "run id or model URI of the candidate (train's run-id or model-uri)"),
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
    Option("primary-metric", "metric charted across champions", "gate.primary_metric"),
    Option("pr-comment", "comment on the pull request (default: true)", "gate.report.pr_comment"),
    Option("check-run", "create a check run (default: true)", "gate.report.check_run"),
    Option("decision-file", "where to write the decision JSON"),
    Option("github-token", "GitHub token (default: GITHUB_TOKEN)"),
    Option("pr-number", "pull request to comment on (default: from the event)"),
)

PROMOTE_OPTIONS = (
    Option("candidate", "run id or model URI to promote (train's run-id or model-uri)"),
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
    Option("model-uri", "model to serve, e.g. models:/<name>@champion or models:/<name>/<version>"),
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
    Option("stage", "stage label, e.g. deploy"),
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


RUN_OPTIONS = _unique(MLFLOW_OPTIONS, DATA_OPTIONS, TRAIN_OPTIONS, GATE_OPTIONS, PROMOTE_OPTIONS)


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


def _pull_data(config: Config, targets: list[str] | None = None) -> PullResult:
    """dvc-pull as configured (or of `targets`), with its job summary; used by several verbs."""
    from . import data, report

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


def run_train(config: Config, data_fingerprint: str) -> TrainResult:
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
        started = time.monotonic()
        result = train_core.run_training(request, tags)
    _observe(monitor.train_samples(time.monotonic() - started))
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
    return result


def cmd_train(args: argparse.Namespace) -> int:
    config = load_config(args, (*MLFLOW_OPTIONS, *TRAIN_OPTIONS))
    run_train(config, _value(args, "data-fingerprint"))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """The pipeline stages, in order, on this machine: dvc-pull, train, gate, promote."""
    from . import data

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


def _gate_files(model_name: str) -> tuple[Path, Path]:
    """Decision JSON and report Markdown: in RUNNER_TEMP on a runner, else in ./mlops-gate."""
    base = Path(os.environ.get("RUNNER_TEMP") or Path.cwd()) / "mlops-gate"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)
    return base / f"{safe}.decision.json", base / f"{safe}.report.md"


def _evaluation_spec(config: Config) -> Any:
    from .errors import ConfigError
    from .evaluation import EvaluationSpec

    if config.get("gate.compare") != "evaluate":
        return None
    missing = [
        k for k in ("data", "targets", "model_type") if not config.get(f"gate.evaluation.{k}")
    ]
    if missing:
        keys = ", ".join(f"gate.evaluation.{k}" for k in missing)
        raise ConfigError(
            f"compare: evaluate needs {keys}",
            "set them in mlops.yaml or through the evaluation-data, evaluation-targets "
            "and model-type inputs",
        )
    return EvaluationSpec(
        data=Path(str(config.get("gate.evaluation.data"))),
        targets=str(config.get("gate.evaluation.targets")),
        model_type=str(config.get("gate.evaluation.model_type")),
        python=str(config.get("gate.evaluation.python")),
        metric_prefix=str(config.get("gate.evaluation.metric_prefix")),
    )


def _ensure_evaluation_data(config: Config, spec: Any) -> None:
    """Pull the evaluation dataset with DVC when the checkout does not have it yet."""
    from . import data

    path = Path(spec.data)
    if not path.exists() and data.in_repository(Path(config.get("data.repo", "."))):
        _pull_data(config, [str(path)])


def _gate_rules(config: Config, candidate: str) -> tuple[str, list[Any], str]:
    """The model name, the parsed rules and the charted metric, or a ConfigError."""
    from . import gate
    from .errors import ConfigError

    model_name = str(config.get("model.name") or "")
    if not model_name:
        raise ConfigError(
            "model.name is not set: the gate needs the registered model to find the champion",
            "set model.name in mlops.yaml or the model-name input",
        )
    if not candidate:
        raise ConfigError(
            "the candidate input is empty",
            "pass the train step's run-id (or model-uri) as the candidate input",
        )
    rules = gate.parse_rules(config.get("gate.rules"))
    return model_name, rules, str(config.get("gate.primary_metric") or rules[0].metric)


def run_gate(config: Config, candidate: str, args: argparse.Namespace) -> int:
    """Decide, write the decision everywhere, and exit 0 (passed), 1 (rejected) or an error."""
    from . import context, evaluation, gate, report, tracking
    from .errors import EXIT_REJECTED

    model_name, rules, primary = _gate_rules(config, candidate)
    spec = _evaluation_spec(config)
    if spec is not None:
        _ensure_evaluation_data(config, spec)
    cwd = Path.cwd()
    tracking_uri = tracking.resolve_tracking_uri(str(config.get("mlflow.tracking_uri", "")), cwd)
    registry_uri = str(config.get("mlflow.registry_uri") or "")
    alias = str(config.get("gate.champion_alias"))
    mlflow_client = tracking.client(tracking_uri, registry_uri)
    worker_env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    if registry_uri:
        worker_env["MLFLOW_REGISTRY_URI"] = registry_uri
    with gha.group(f"gate: {candidate} against {model_name}@{alias}"):
        assessed = evaluation.assess(
            mlflow_client,
            tracking_uri=tracking_uri,
            model_name=model_name,
            alias=alias,
            candidate=candidate,
            spec=spec,
            environ=worker_env,
            cwd=cwd,
            history_limit=int(config.get("gate.history")),
            history_metric=primary,
        )
    decision = gate.decide(
        rules,
        assessed.metrics.candidate,
        assessed.metrics.champion,
        first_model_policy=config.get("gate.first_model"),
        advisory=bool(config.get("gate.advisory")),
    )
    _observe(monitor.gate_samples(decision, time.time()))
    run_context = context.detect(os.environ, cwd)
    champion = assessed.champion

    def run_link(run_id: str) -> str:
        return _run_link(mlflow_client, tracking_uri, run_id)

    facts = report.GateFacts(
        model_name=model_name,
        alias=alias,
        compare=str(config.get("gate.compare")),
        candidate=candidate,
        candidate_run_url=run_link(assessed.candidate.run_id),
        champion_version=champion.version if champion else "",
        champion_run_url=run_link(champion.run_id) if champion else "",
        workflow_run_url=run_context.run_url,
        primary_metric=primary,
        history=assessed.history,
    )
    markdown = report.gate_report(decision, facts)
    decision_file, report_file = _gate_files(model_name)
    if _value(args, "decision-file"):
        decision_file = Path(_value(args, "decision-file"))
    document = _decision_document(decision, facts, assessed, run_context)
    decision_file.parent.mkdir(parents=True, exist_ok=True)
    report_file.parent.mkdir(parents=True, exist_ok=True)
    decision_file.write_text(
        json.dumps(document, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    )
    report_file.write_text(markdown + "\n", encoding="utf-8")
    _record_decision(mlflow_client, tracking_uri, assessed.candidate.run_id, document, markdown)
    emit(
        {
            "passed": "true" if decision.passed else "false",
            "verdict": decision.verdict,
            "decision-file": str(decision_file.resolve()),
            "report-file": str(report_file.resolve()),
            "champion-version": champion.version if champion else "",
            "champion-model-uri": champion.uri if champion else "",
            "candidate-run-id": assessed.candidate.run_id,
            "candidate-model-uri": assessed.candidate.model_uri,
        }
    )
    gha.add_summary(markdown)
    title = report.gate_title(decision)
    if decision.passed:
        gha.annotate("notice", f"{model_name}: {title}", title="gate passed")
    else:
        level = "warning" if decision.advisory else "error"
        gha.annotate(level, f"{model_name}: {title}. " + "; ".join(decision.reasons), title="gate")
    failure = _publish_gate(config, args, run_context, decision, markdown, model_name, title)
    if not decision.passed and not decision.advisory:
        return EXIT_REJECTED
    return failure


def _run_link(mlflow_client: Any, tracking_uri: str, run_id: str) -> str:
    from . import tracking

    if not run_id or not tracking_uri.startswith(("http://", "https://")):
        return ""
    with tracking.tracking_server(tracking_uri, f"reading run {run_id}"):
        experiment_id = mlflow_client.get_run(run_id).info.experiment_id
    return tracking.run_ui_url(tracking_uri, experiment_id, run_id)


def _decision_document(
    decision: Any, facts: Any, assessed: Any, run_context: Any
) -> dict[str, Any]:
    """The decision file's content: who was compared, on what, and every rule's outcome."""
    champion = assessed.champion
    return {
        "model": facts.model_name,
        "alias": facts.alias,
        "candidate": {
            "given": facts.candidate,
            "run_id": assessed.candidate.run_id,
            "model_uri": assessed.candidate.model_uri,
        },
        "champion": None
        if champion is None
        else {"version": champion.version, "run_id": champion.run_id, "model_uri": champion.uri},
        "compare": facts.compare,
        "champion_evaluation_run_id": assessed.metrics.champion_evaluation_run_id or None,
        "workflow_run_url": run_context.run_url or None,
        "commit": run_context.commit or None,
        **decision.to_dict(),
    }


def _record_decision(
    client: Any, tracking_uri: str, run_id: str, document: dict[str, Any], markdown: str
) -> None:
    """Tag the candidate run with the verdict and attach the decision and report."""
    from . import tracking

    if not run_id:
        return
    champion = document.get("champion") or {}
    tags = {
        "mlops.gate.verdict": document["verdict"],
        "mlops.gate.champion_version": champion.get("version", "none"),
        "mlops.gate.alias": document["alias"],
        "mlops.gate.compare": document["compare"],
        "mlops.gate.workflow_run_url": document.get("workflow_run_url") or "",
    }
    with tracking.tracking_server(tracking_uri, f"recording the decision on run {run_id}"):
        for key, value in tags.items():
            if value:
                client.set_tag(run_id, key, value)
        client.log_text(
            run_id, json.dumps(document, indent=2, ensure_ascii=False), "mlops-gate/decision.json"
        )
        client.log_text(run_id, markdown, "mlops-gate/report.md")


def _github_token(args: argparse.Namespace) -> str:
    """The github-token input, else GITHUB_TOKEN or GH_TOKEN from the environment."""
    return (
        _value(args, "github-token")
        or (os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN") or "").strip()
    )


def _publish_gate(
    config: Config,
    args: argparse.Namespace,
    run_context: Any,
    decision: Any,
    markdown: str,
    model_name: str,
    title: str,
) -> int:
    """The PR comment and the check run. Returns the exit code of the first failure, or 0."""
    from . import github_report
    from .errors import ConfigError, MlopsError

    want_comment = bool(config.get("gate.report.pr_comment"))
    want_check = bool(config.get("gate.report.check_run"))
    if not (want_comment or want_check):
        return EXIT_OK
    token = _github_token(args)
    notes: list[str] = []
    if not token or not run_context.repository:
        why = (
            "not running in a GitHub workflow (GITHUB_REPOSITORY is not set)"
            if not run_context.repository
            else "no GitHub token (the github-token input, or GITHUB_TOKEN)"
        )
        notes.append(f"PR comment and check run skipped: {why}.")
        gha.annotate("notice", notes[0], title="gate report")
        gha.add_summary("\n".join(f"_{note}_" for note in notes))
        return EXIT_OK
    gha.mask(token)
    number_text = _value(args, "pr-number")
    try:
        pull_request = int(number_text) if number_text else run_context.pull_request
    except ValueError:
        raise ConfigError(f"input 'pr-number' must be a number, got {number_text!r}") from None
    reporter = github_report.GitHubReporter(
        github_report.Target(
            api_url=run_context.api_url,
            token=token,
            repository=run_context.repository,
            pull_request=pull_request,
            head_sha=run_context.head_sha,
            run_url=run_context.run_url,
        )
    )
    failures: list[MlopsError] = []
    outputs: dict[str, str] = {}
    if want_comment and pull_request is None:
        notes.append("PR comment skipped: this run is not for a pull request.")
    elif want_comment:
        hidden = github_report.marker(
            "gate", workflow=run_context.workflow or "local", model=model_name
        )
        try:
            posted = reporter.upsert_comment(hidden, markdown)
            outputs["comment-url"] = posted.url
            notes.append(f"PR comment {posted.action}: {posted.url}")
        except MlopsError as comment_error:
            failures.append(comment_error)
    if want_check and run_context.head_sha:
        conclusion: github_report.Conclusion = (
            "success" if decision.passed else ("neutral" if decision.advisory else "failure")
        )
        try:
            published = reporter.publish_check(
                f"model gate: {model_name}", conclusion, title, markdown
            )
            outputs["check-url"] = published.url
            notes.append(f"{published.action.replace('-', ' ')}: {conclusion}")
        except MlopsError as check_error:
            failures.append(check_error)
    emit(outputs)
    if notes:
        gha.add_summary("\n".join(f"_{note}_" for note in notes))
    for failure in failures:
        report_error(failure)
    return failures[0].exit_code if failures else EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    config = load_config(args, (*MLFLOW_OPTIONS, *GATE_OPTIONS))
    return run_gate(config, _value(args, "candidate"), args)


def _model_name(config: Config) -> str:
    from .errors import ConfigError

    name = str(config.get("model.name") or "")
    if not name:
        raise ConfigError(
            "model.name is not set", "set model.name in mlops.yaml or the model-name input"
        )
    return name


def _registry_client(config: Config) -> tuple[Any, str]:
    from . import tracking

    uri = tracking.resolve_tracking_uri(str(config.get("mlflow.tracking_uri", "")), Path.cwd())
    return tracking.client(uri, str(config.get("mlflow.registry_uri") or "")), uri


def _expected_version(given: str, alias: str, gate_tags: dict[str, str]) -> str:
    """N, none or any; by default the holder the gate compared against, if it gated this alias."""
    from .errors import ConfigError
    from .promote import ANY, NONE

    text = given.strip().lower()
    if text in (ANY, NONE) or text.isdigit():
        return text
    if text:
        raise ConfigError(
            f"input 'expected-version' must be a version number, 'none' or 'any', got {given!r}"
        )
    if gate_tags.get("mlops.gate.alias") == alias and "mlops.gate.champion_version" in gate_tags:
        return gate_tags["mlops.gate.champion_version"] or NONE
    return ANY


def _move_outputs(result: Any) -> dict[str, str]:
    return {
        "version": result.version,
        "previous-version": result.previous_version or "",
        "alias": result.alias,
        "model-uri": result.version_uri,
        "alias-uri": result.alias_uri,
        "changed": "true" if result.changed else "false",
        "registered": "true" if result.registered else "false",
    }


def _after_move(config: Config, args: argparse.Namespace, result: Any, reason: str) -> None:
    """Outputs, summary, and the optional repository_dispatch that starts a deployment."""
    from . import context, github_report, report

    _observe(monitor.move_samples(result, time.time()))
    outputs = _move_outputs(result)
    emit(outputs)
    gha.add_summary(report.move_summary(result, reason))
    gha.annotate("notice", result.message, title=reason)
    event = str(config.get("promote.dispatch_event") or "")
    if not (event and result.changed):
        return
    run_context = context.detect(os.environ, Path.cwd())
    token = _github_token(args)
    if not token or not run_context.repository:
        gha.annotate(
            "warning",
            f"repository_dispatch '{event}' skipped: no GitHub token or repository",
            title=reason,
        )
        return
    gha.mask(token)
    reporter = github_report.GitHubReporter(
        github_report.Target(run_context.api_url, token, run_context.repository, None, "")
    )
    reporter.dispatch(
        event, {k.replace("-", "_"): v for k, v in outputs.items()} | {"reason": reason}
    )
    print(f"dispatched repository event '{event}' to {run_context.repository}")


def cmd_promote(args: argparse.Namespace) -> int:
    config = load_config(args, (*MLFLOW_OPTIONS, *PROMOTE_OPTIONS))
    return run_promote(config, _value(args, "candidate"), args)


def run_promote(config: Config, given: str, args: argparse.Namespace) -> int:
    """Shared by `promote` and `run`: refuse a rejected candidate, move the alias, report."""
    from . import context, promote, registry, tracking
    from .errors import EXIT_REJECTED, MlopsError

    model_name, alias, mlflow_client, uri = _alias_scope(config)
    with tracking.tracking_server(uri, f"resolving the candidate {given or '(none)'}"):
        candidate = registry.resolve_candidate(mlflow_client, given)
        tags = dict(mlflow_client.get_run(candidate.run_id).data.tags) if candidate.run_id else {}
    verdict = tags.get("mlops.gate.verdict", "")
    if verdict == "rejected" and config.get("promote.require_gate"):
        error = MlopsError(
            f"the gate rejected {given} (tag mlops.gate.verdict on run {candidate.run_id})",
            "promote a candidate that passed, or set require-gate: false to override",
        )
        error.exit_code = EXIT_REJECTED
        raise error
    run_context = context.detect(os.environ, Path.cwd())
    provenance = promote.Provenance(
        workflow_run=run_context.run_url,
        commit=run_context.commit,
        actor=run_context.actor,
        data_fingerprint=tags.get("mlops.data.fingerprint", ""),
        gate_verdict=verdict,
        gate_link=tags.get("mlops.gate.workflow_run_url", ""),
    )
    expected = _expected_version(_value(args, "expected-version"), alias, tags)
    with tracking.tracking_server(uri, f"promoting {given} to {model_name}@{alias}"):
        result = promote.promote(
            mlflow_client,
            model_name=model_name,
            alias=alias,
            candidate=candidate,
            expected=expected,
            provenance=provenance,
            stage=str(config.get("promote.stage") or ""),
            history_limit=int(config.get("promote.history_limit")),
            lock_wait_seconds=float(config.get("promote.lock_wait_seconds")),
        )
    _after_move(config, args, result, "promote")
    return EXIT_OK


def _alias_scope(config: Config) -> tuple[str, str, Any, str]:
    """Model name, alias, registry client and tracking URI of an alias-moving verb."""
    mlflow_client, uri = _registry_client(config)
    return _model_name(config), str(config.get("promote.alias")), mlflow_client, uri


def cmd_rollback(args: argparse.Namespace) -> int:
    from . import context, promote, tracking

    config = load_config(args, (*MLFLOW_OPTIONS, *ROLLBACK_OPTIONS))
    model_name, alias, mlflow_client, uri = _alias_scope(config)
    run_context = context.detect(os.environ, Path.cwd())
    with tracking.tracking_server(uri, f"rolling back {model_name}@{alias}"):
        result = promote.rollback(
            mlflow_client,
            model_name=model_name,
            alias=alias,
            to_version=_value(args, "to-version"),
            provenance=promote.Provenance(
                workflow_run=run_context.run_url, commit=run_context.commit, actor=run_context.actor
            ),
            history_limit=int(config.get("promote.history_limit")),
            lock_wait_seconds=float(config.get("promote.lock_wait_seconds")),
        )
    _after_move(config, args, result, "rollback")
    return EXIT_OK


def cmd_registry_history(args: argparse.Namespace) -> int:
    from . import promote, tracking

    model_name, alias, mlflow_client, uri = _alias_scope(
        load_config(args, (*MLFLOW_OPTIONS, *ALIAS_OPTIONS))
    )
    with tracking.tracking_server(uri, f"reading the history of {model_name}@{alias}"):
        moves = promote.history_of(mlflow_client, model_name, alias)
    if args.json:
        print(json.dumps(promote.as_dicts(moves), indent=2))
        return EXIT_OK
    print(f"{'#':>4}  {'when':20}  {'reason':8}  {'from':>5} -> {'to':<5}  by")
    for move in moves:
        by = " ".join(part for part in (move.workflow_run, move.commit[:12], move.actor) if part)
        print(
            f"{move.seq:>4}  {move.at:20}  {move.reason:8}  "
            f"{move.from_version or '-':>5} -> {move.to_version or '-':<5}  {by}"
        )
    return EXIT_OK


def cmd_registry_unlock(args: argparse.Namespace) -> int:
    from . import promote, tracking

    model_name, alias, mlflow_client, uri = _alias_scope(
        load_config(args, (*MLFLOW_OPTIONS, *ALIAS_OPTIONS))
    )
    name = promote.lock_name(model_name, alias)
    with tracking.tracking_server(uri, f"removing the lock {name}"):
        promote.delete_lock(mlflow_client, name)
    print(f"removed {name} (if it existed)")
    return EXIT_OK


def cmd_build_push(args: argparse.Namespace) -> int:
    """Build the serving image of a model, smoke-test it, push it, report the digest."""
    import tempfile
    from datetime import datetime, timezone

    from . import context, image, registry, report, tracking
    from .errors import ConfigError

    config = load_config(args, (*MLFLOW_OPTIONS, *IMAGE_OPTIONS))
    given = _value(args, "model-uri")
    if not given:
        raise ConfigError("the model-uri input is empty", "e.g. models:/<name>@champion")
    repository, push, username, password = _image_target(config, args)
    gha.mask(password)
    mlflow_client, uri = _registry_client(config)
    run_context = context.detect(os.environ, Path.cwd())
    engine = image.docker_client()
    registry_host = image.registry_of(repository)
    if push and username:  # before building: bad credentials should not cost a build
        image.login(engine, registry_host, username, password)
    with tempfile.TemporaryDirectory(prefix="mlops-image-") as scratch:
        with tracking.tracking_server(uri, f"resolving the model {given}"):
            resolved = registry.resolve_candidate(mlflow_client, given)
            model_dir = _download_model(resolved.model_uri, uri, config, Path(scratch))
        name = resolved.version.name if resolved.version else ""
        version = resolved.version.version if resolved.version else ""
        facts = image.read_model(model_dir, resolved.model_uri, name, version)
        alias = given.split("@", 1)[1] if "@" in given else ""
        tags = _image_tags(version, alias, run_context.commit, config.get("image.tags") or [])
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        source = f"https://github.com/{run_context.repository}" if run_context.repository else ""
        spec = image.BuildSpec(
            context=image.write_context(model_dir, facts, Path(scratch) / "context"),
            base_image=str(config.get("image.base_image") or _default_base(facts)),
            tags=tuple(f"{repository}:{tag}" for tag in tags),
            labels=image.labels_for(facts, run_context.commit, source, created),
            build_args={
                "MODEL_NAME": name,
                "MODEL_VERSION": version,
                **{str(k): str(v) for k, v in (config.get("image.build_args") or {}).items()},
            },
            platform=str(config.get("image.platform") or ""),
            extra_ca=Path(str(config.get("image.extra_ca")))
            if config.get("image.extra_ca")
            else None,
            dockerfile=Path(str(config.get("image.dockerfile")))
            if config.get("image.dockerfile")
            else None,
        )
        cli_names = (
            [str(config.get("image.docker_cli"))]
            if config.get("image.docker_cli")
            else [
                "docker",
                "/usr/bin/docker",
            ]
        )
        builder = image.find_builder(cli_names, os.environ)
        with gha.group(f"docker build {repository} ({', '.join(tags)})"):
            image_id = image.build(builder, spec)
    smoke = None
    if config.get("image.smoke_test"):
        with gha.group("smoke test"):
            smoke = image.smoke_test(engine, image_id, facts.example)
        print(f"smoke test passed: /ping after {smoke.seconds_to_ping:.1f} s")
    digest = ""
    if push:
        for tag in tags:
            digest = image.push(engine, repository, tag)
    outputs = {
        "image": f"{repository}@{digest}" if digest else f"{repository}:{tags[0]}",
        "digest": digest,
        "tags": "\n".join(f"{repository}:{tag}" for tag in tags),
        "image-id": image_id,
        "size-bytes": str(image.image_size(engine, image_id)),
        "model-version": version,
    }
    emit(outputs)
    _observe(monitor.image_samples(int(outputs["size-bytes"]), version))
    gha.add_summary(report.image_summary(outputs, facts, smoke, pushed=bool(digest)))
    return EXIT_OK


def _image_target(config: Config, args: argparse.Namespace) -> tuple[str, bool, str, str]:
    """Repository, push on/off and registry credentials, checked before anything is built."""
    from .errors import ConfigError

    repository = str(config.get("image.repository") or "")
    push = bool(config.get("image.push"))
    if not repository:
        raise ConfigError(
            "image.repository is not set", "set the image input, e.g. ghcr.io/<owner>/<name>"
        )
    if repository != repository.lower():
        raise ConfigError(
            f"image repository {repository!r} has upper-case letters; registries refuse them",
            f"use {repository.lower()!r}",
        )
    username = _value(args, "registry-username") or os.environ.get("REGISTRY_USERNAME", "")
    password = _value(args, "registry-password") or os.environ.get("REGISTRY_PASSWORD", "")
    if push and username and not password:
        raise ConfigError(
            "registry-username is set but there is no password",
            "pass the password or token in the REGISTRY_PASSWORD environment variable",
        )
    return repository, push, username, password


def _download_model(model_uri: str, tracking_uri: str, config: Config, scratch: Path) -> Path:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(str(config.get("mlflow.registry_uri") or tracking_uri))
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=model_uri, dst_path=str(scratch / "model")
    )
    return Path(local)


def _image_tags(version: str, alias: str, commit: str, extra: Sequence[str]) -> list[str]:
    """v<version>, the alias, sha-<commit>, then the user's; each once, in that order."""
    tags = [f"v{version}" if version else "", alias, f"sha-{commit[:12]}" if commit else ""]
    tags += [str(tag) for tag in extra]
    unique = [tag for i, tag in enumerate(tags) if tag and tag not in tags[:i]]
    return unique or ["latest"]


def _default_base(facts: Any) -> str:
    major_minor = ".".join(facts.python_version.split(".")[:2]) or "3.11"
    return f"python:{major_minor}-slim"


def cmd_config_validate(args: argparse.Namespace) -> int:
    config = load_config(args, ())
    where = config.path or f"no {CONFIG_FILE_NAME} (defaults only)"
    print(f"{where}: valid")
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    print(load_config(args, RUN_OPTIONS).render(), end="")
    return EXIT_OK


# ----------------------------------------------------------------------------- monitoring

# Verbs that push their outcome when monitoring.pushgateway_url is set (`run` pushes each stage).
MONITORED_VERBS = frozenset({"dvc-pull", "train", "evaluate", "promote", "rollback", "build-push"})


@dataclass
class StageRun:
    """The stage running now: what it reports for the Pushgateway, and how it ended."""

    name: str
    samples: list[Sample] = field(default_factory=list)
    exit_code: int = EXIT_OK


_current_stage: contextvars.ContextVar[StageRun | None] = contextvars.ContextVar(
    "mlops_stage", default=None
)
# Gateways that failed once in this process: later stages of `run` do not wait for them again,
# so a pipeline with the gateway down prints one warning.
_unreachable: set[str] = set()


def _observe(samples: Iterable[Sample]) -> None:
    """Add a verb's own gauges to the stage being monitored (a no-op outside one)."""
    stage = _current_stage.get()
    if stage is not None:
        stage.samples.extend(samples)


def _observe_pull(result: PullResult) -> None:
    _observe(monitor.pull_samples(result.files_fetched, result.bytes_fetched))


@contextmanager
def monitored(stage: str, settings: Callable[[], Config | None]) -> Iterator[StageRun]:
    """Time the stage and push its outcome when it ends, whether it returns or raises.

    The body sets `exit_code` when it returns one instead of raising (the gate's rejection).
    `settings` gives the config after the stage, so a verb loads it only once itself.
    """
    run = StageRun(stage)
    token = _current_stage.set(run)
    started = time.monotonic()
    try:
        yield run
    except MlopsError as error:
        run.exit_code = error.exit_code
        raise
    except KeyboardInterrupt:
        run.exit_code = 130
        raise
    except Exception:
        run.exit_code = EXIT_INTERNAL
        raise
    finally:
        _current_stage.reset(token)
        duration = time.monotonic() - started
        _push_stage(run, duration, settings)


def _push_stage(run: StageRun, duration: float, settings: Callable[[], Config | None]) -> None:
    """Best effort: a failed push, or a bug in it, is one warning; the stage's result stands."""
    try:
        config = settings()
        target = _monitoring_target(config) if config is not None else None
        if target is None:
            return
        if target.shown_url in _unreachable:
            print(
                f"metrics of stage '{run.name}' not pushed: {target.shown_url} failed earlier",
                file=sys.stderr,
            )
            return
        samples = [*monitor.stage_samples(run.exit_code, duration, time.time()), *run.samples]
        _report_push(target, run.name, samples, monitor.push(target, run.name, samples))
    except Exception as error:  # monitoring never fails a stage, not even through a bug
        gha.annotate(
            "warning",
            f"metrics of stage '{run.name}' not pushed: internal error {error!r} "
            "(a bug in mlops-actions; please report it)",
            title="push-metrics",
        )


def _report_push(target: Target, stage: str, samples: Sequence[Sample], result: PushResult) -> None:
    if result.pushed:
        print(
            f"pushed {len(samples)} metrics of stage '{stage}' to {result.url} "
            f"(job={target.job}, pipeline={target.pipeline})",
            file=sys.stderr,
        )
        return
    _unreachable.add(result.url)
    gha.annotate(
        "warning",
        f"metrics of stage '{stage}' not pushed to {result.url}: {result.error}. "
        f"Fix: {result.hint}. The pipeline goes on without them",
        title="push-metrics",
    )


def _monitoring_config(args: argparse.Namespace) -> Config | None:
    """The config for the hook; the environment alone if the file is what made the verb fail."""
    from .config import resolve

    try:
        return load_config(args, MONITORING_OPTIONS)
    except MlopsError:
        pass
    try:
        return resolve(config_path=None, environ=os.environ)
    except MlopsError:
        return None


def _monitoring_target(config: Config) -> Target | None:
    """Where to push, or None when monitoring is off. Secrets are masked here."""
    url = str(config.get("monitoring.pushgateway_url") or "")
    if not url:
        return None
    repository = os.environ.get("GITHUB_REPOSITORY", "")
    pipeline = (
        config.get("monitoring.pipeline")
        or config.get("model.name")
        or (repository.rsplit("/", 1)[-1] if repository else Path.cwd().name)
    )
    target = monitor.Target(
        url=url,
        job=str(config.get("monitoring.job")),
        pipeline=str(pipeline),
        timeout_seconds=float(config.get("monitoring.timeout_seconds")),
        username=os.environ.get("MLOPS_PUSHGATEWAY_USERNAME", "").strip(),
        password=os.environ.get("MLOPS_PUSHGATEWAY_PASSWORD", ""),
        token=os.environ.get("MLOPS_PUSHGATEWAY_TOKEN", "").strip(),
    )
    for secret in (target.password, target.token):
        gha.mask(secret)
    return target


def _mask_url_credentials(args: argparse.Namespace) -> None:
    """A password written into a Pushgateway URL stays out of every log."""
    from urllib.parse import urlsplit

    for raw in (os.environ.get("MLOPS_PUSHGATEWAY_URL", ""), _value(args, "pushgateway-url")):
        try:
            password = urlsplit(raw.strip()).password
        except ValueError:
            continue
        if password:
            gha.mask(password)


def _where(args: argparse.Namespace, name: str) -> str:
    """How the user gave a value: the flag on the command line, else the action input."""
    given = getattr(args, name.replace("-", "_"), None) is not None
    return f"--{name}" if given else f"input '{name}'"


def _stage_of(args: argparse.Namespace) -> str | None:
    """The stage a verb reports as, or None (push-metrics, config, `run` itself, --plan)."""
    verb = str(args.verb)
    if verb not in MONITORED_VERBS or getattr(args, "plan", False):
        return None
    return verb


def _push_metric_samples(args: argparse.Namespace) -> list[Sample]:
    """--metric name=value (or the metrics input's lines) and --metrics-file, validated."""
    from .errors import ConfigError

    samples = [monitor.parse_assignment(text, f"--metric {text!r}") for text in args.metric or ()]
    for line in _value(args, "metrics").splitlines():
        if line.strip():
            samples.append(monitor.parse_assignment(line.strip(), _where(args, "metrics")))
    path_text = _value(args, "metrics-file")
    if path_text:
        where = _where(args, "metrics-file")
        try:
            document = json.loads(Path(path_text).read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"{where}: cannot read {path_text}: {error.strerror}") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"{where}: {path_text} is not valid JSON: {error.msg}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{where}: {path_text} must hold a JSON object of name: number")
        samples.extend(monitor.custom_sample(str(k), v, where) for k, v in document.items())
    return samples


def _exit_code_of(args: argparse.Namespace) -> int:
    """The stage's exit code from --exit-code, else from --status."""
    from .errors import ConfigError

    status, code_text = _value(args, "status").lower(), _value(args, "exit-code")
    by_status = {"success": 0, "failure": 1, "cancelled": 130}
    if status and status not in by_status:
        raise ConfigError(
            f"{_where(args, 'status')} must be success, failure, cancelled or skipped, "
            f"got {status!r}",
            "pass the stage's steps.<id>.outcome or job.status",
        )
    if code_text:
        try:
            code = int(code_text)
        except ValueError:
            raise ConfigError(
                f"{_where(args, 'exit-code')} must be a whole number, got {code_text!r}"
            ) from None
        if status and (code == 0) != (status == "success"):
            raise ConfigError(f"status {status!r} contradicts exit-code {code}", "give only one")
        return code
    if not status:
        raise ConfigError(
            "neither status nor exit-code is set", "e.g. status: ${{ steps.<id>.outcome }}"
        )
    return by_status[status]


def _duration_of(args: argparse.Namespace) -> float | None:
    from .errors import ConfigError

    text = _value(args, "duration-seconds")
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ConfigError(
            f"{_where(args, 'duration-seconds')} must be a number of seconds, got {text!r}"
        )
    return seconds


def cmd_push_metrics(args: argparse.Namespace) -> int:
    """Push one stage's outcome (a stage this suite does not run) with extra gauges."""
    from .errors import ConfigError

    stage = _value(args, "stage")
    if not stage:
        raise ConfigError(f"{_where(args, 'stage')} is empty", "name the stage, e.g. deploy")
    monitor.check_stage(stage, _where(args, "stage"))
    if _value(args, "status").lower() == "skipped":  # steps.<id>.outcome of a skipped step
        print(f"stage '{stage}' was skipped: nothing to push", file=sys.stderr)
        emit({"pushed": "false"})
        return EXIT_OK
    exit_code = _exit_code_of(args)
    duration = _duration_of(args)
    extra = _push_metric_samples(args)
    target = _monitoring_target(load_config(args, MONITORING_OPTIONS))
    if target is None:
        gha.annotate(
            "warning",
            "no Pushgateway URL: nothing pushed. Fix: set the pushgateway-url input, "
            "MLOPS_PUSHGATEWAY_URL or monitoring.pushgateway_url",
            title="push-metrics",
        )
        emit({"pushed": "false"})
        return EXIT_OK
    samples = [*monitor.stage_samples(exit_code, duration, time.time()), *extra]
    result = monitor.push(target, stage, samples)
    _report_push(target, stage, samples, result)
    emit({"pushed": "true" if result.pushed else "false"})
    gha.add_summary(monitor.summary(target, stage, samples, result))
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
        "evaluate",
        cmd_evaluate,
        "gate: may the candidate replace the champion? exit 0 passed, 1 rejected",
        (*MLFLOW_OPTIONS, *GATE_OPTIONS),
    )
    verb(
        "build-push",
        cmd_build_push,
        "build a serving image for a model, smoke-test it, push it, report the digest",
        (*MLFLOW_OPTIONS, *IMAGE_OPTIONS, Option("registry-password", "(use REGISTRY_PASSWORD)")),
    )
    verb(
        "promote",
        cmd_promote,
        "register the candidate and move an alias to it, safely and with history",
        (*MLFLOW_OPTIONS, *PROMOTE_OPTIONS),
    )
    verb(
        "rollback",
        cmd_rollback,
        "move an alias back to its previous holder (or --to-version)",
        (*MLFLOW_OPTIONS, *ROLLBACK_OPTIONS),
    )
    registry_parser = verbs.add_parser("registry", help="inspect the registry's alias history")
    registry_verbs = registry_parser.add_subparsers(
        dest="registry_verb", required=True, metavar="ACTION"
    )
    history = registry_verbs.add_parser("history", help="the moves of an alias, oldest first")
    _add_options(history, (CONFIG_OPTION, *MLFLOW_OPTIONS, *ALIAS_OPTIONS))
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(handler=cmd_registry_history)
    unlock = registry_verbs.add_parser("unlock", help="remove a lock a crashed promotion left")
    _add_options(unlock, (CONFIG_OPTION, *MLFLOW_OPTIONS, *ALIAS_OPTIONS))
    unlock.set_defaults(handler=cmd_registry_unlock)
    pushing = verb(
        "push-metrics",
        cmd_push_metrics,
        "push a stage's outcome and extra gauges to a Prometheus Pushgateway",
        PUSH_OPTIONS,
    )
    pushing.add_argument(
        "--metric",
        action="append",
        metavar="NAME=VALUE",
        help="an extra gauge; repeat for several",
    )
    verb(
        "run",
        cmd_run,
        "run the pipeline stages locally, in order: dvc-pull, train, evaluate, promote",
        RUN_OPTIONS,
    )
    version = verbs.add_parser("version", help="print the version")
    version.set_defaults(handler=lambda _args: print(__version__) or EXIT_OK)

    config = verbs.add_parser("config", help="check or show mlops.yaml")
    config_verbs = config.add_subparsers(dest="config_verb", required=True, metavar="ACTION")
    validate = config_verbs.add_parser("validate", help="validate mlops.yaml against the schema")
    _add_options(validate, (CONFIG_OPTION,))
    validate.set_defaults(handler=cmd_config_validate)
    show = config_verbs.add_parser("show", help="print the effective config and its sources")
    _add_options(show, (CONFIG_OPTION, *RUN_OPTIONS))
    show.set_defaults(handler=cmd_config_show)
    return parser


def _prepare_environment(verb: str) -> None:
    """Process-wide settings for the clients, before any of them is imported."""
    from .tracking import HTTP_RETRY_DEFAULTS, REGISTRY_RETRY_DEFAULTS

    moves_alias = verb in {"promote", "rollback"}
    for name, value in (REGISTRY_RETRY_DEFAULTS if moves_alias else HTTP_RETRY_DEFAULTS).items():
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


def _run_verb(args: argparse.Namespace) -> int:
    """The verb's handler, monitored as a stage when it is one."""
    stage = _stage_of(args)
    if stage is None:
        code: int = args.handler(args)
        return code
    with monitored(stage, lambda: _monitoring_config(args)) as run:
        run.exit_code = args.handler(args)
    return run.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    gha.mask_secret_environment()
    parser = build_parser()
    args = parser.parse_args(argv)
    _mask_url_credentials(args)
    _prepare_environment(str(args.verb))
    try:
        return _run_verb(args)
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
