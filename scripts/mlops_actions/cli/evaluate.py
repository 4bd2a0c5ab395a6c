"""`mlops-actions evaluate`: the gate decides, then reports in files, MLflow tags, PR and checks."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from .. import gha, monitor
from ..config import Config
from ..errors import EXIT_OK
from .common import (
    _github_token,
    _output_file,
    _value,
    emit,
    load_config,
    mlflow_uris,
    report_error,
)
from .dvc_pull import _pull_data
from .monitoring import _observe
from .options import GATE_OPTIONS, MLFLOW_OPTIONS


def _gate_files(model_name: str) -> tuple[Path, Path]:
    """Decision JSON and report Markdown: in RUNNER_TEMP on a runner, else in ./mlops-gate."""
    base = Path(os.environ.get("RUNNER_TEMP") or Path.cwd()) / "mlops-gate"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)
    return base / f"{safe}.decision.json", base / f"{safe}.report.md"


def _evaluation_spec(config: Config, rules: list[Any]) -> Any:
    from ..errors import ConfigError
    from ..evaluation import EvaluationSpec

    with_confidence = [rule.metric for rule in rules if rule.confidence is not None]
    if config.get("gate.compare") != "evaluate":
        if with_confidence:
            raise ConfigError(
                f"gate rule(s) on {', '.join(with_confidence)} have a confidence, and "
                "compare: logged has only two logged numbers, no rows to resample",
                "set gate.compare to evaluate (the compare input) with gate.evaluation.data, "
                "or drop confidence (gate.confidence, the confidence input)",
            )
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
        average=str(config.get("gate.evaluation.average")),
        keep_predictions=bool(with_confidence),
    )


def _check_resamplable(rules: list[Any], model_type: str) -> None:
    """Before anything runs: every rule with a confidence is on a metric the bootstrap can
    compute for this kind of model."""
    from .. import significance
    from ..errors import ConfigError

    family = (
        significance.REGRESSION_METRICS
        if model_type == "regressor"
        else (*significance.COUNT_METRICS, *significance.PROBABILITY_METRICS)
    )
    for rule in rules:
        if rule.confidence is None:
            continue
        significance.check_resamplable(rule.metric)
        if rule.metric not in family:
            raise ConfigError(
                f"gate rule on '{rule.metric}': a {model_type} has no such metric",
                f"with a confidence, a {model_type}'s rules can use {', '.join(family)}",
            )


def _ensure_evaluation_data(config: Config, spec: Any) -> None:
    """Pull the evaluation dataset with DVC when the checkout does not have it yet."""
    from .. import data

    path = Path(spec.data)
    if not path.exists() and data.in_repository(Path(config.get("data.repo", "."))):
        _pull_data(config, [str(path)])


def _gate_rules(config: Config, candidate: str) -> tuple[str, list[Any], str]:
    """The model name, the parsed rules and the charted metric, or a ConfigError."""
    from .. import gate
    from ..errors import ConfigError

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
    rules = gate.parse_rules(config.get("gate.rules"), config.get("gate.confidence"))
    return model_name, rules, str(config.get("gate.primary_metric") or rules[0].metric)


def run_gate(config: Config, candidate: str, args: argparse.Namespace) -> int:
    """Decide, write the decision everywhere, and exit 0 (passed), 1 (rejected) or an error."""
    from .. import context, evaluation, gate, report, tracking
    from ..errors import EXIT_REJECTED

    tracking_uri, registry_uri = mlflow_uris(config)
    chosen_file = _output_file(args, "decision-file")
    model_name, rules, primary = _gate_rules(config, candidate)
    spec = _evaluation_spec(config, rules)
    if spec is not None:
        _check_resamplable(rules, spec.model_type)
        _ensure_evaluation_data(config, spec)
    cwd = Path.cwd()
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
        intervals = _bootstrap(config, rules, assessed.metrics)
    decision = gate.decide(
        rules,
        assessed.metrics.candidate,
        assessed.metrics.champion,
        first_model_policy=config.get("gate.first_model"),
        advisory=bool(config.get("gate.advisory")),
        intervals=intervals.found,
        unavailable=intervals.unavailable,
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
    decision_file = chosen_file or decision_file
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


def _bootstrap(config: Config, rules: list[Any], metrics: Any) -> Any:
    """The paired intervals of the rules with a confidence, timed in the log."""
    from .. import evaluation

    started = time.monotonic()
    intervals = evaluation.paired_intervals(
        rules,
        metrics,
        resamples=int(config.get("gate.resamples")),
        seed=int(config.get("gate.seed")),
        average=str(config.get("gate.evaluation.average")),
    )
    if intervals.found:
        rows = next(iter(intervals.found.values())).rows
        print(
            f"paired bootstrap of {', '.join(intervals.found)}: {rows} rows, "
            f"{config.get('gate.resamples')} resamples, seed {config.get('gate.seed')}, "
            f"{time.monotonic() - started:.2f} s"
        )
    return intervals


def _run_link(mlflow_client: Any, tracking_uri: str, run_id: str) -> str:
    from .. import tracking

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
    from .. import tracking

    if not run_id:
        return
    champion = document.get("champion") or {}
    tags = {
        "mlops.gate.verdict": document["verdict"],
        "mlops.gate.champion_version": champion.get("version", "none"),
        "mlops.gate.model": document["model"],  # whose alias was read: promote checks it
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
    from .. import github_report
    from ..errors import ConfigError, MlopsError

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
