"""The metric values the gate compares, in either mode.

- logged: the metrics logged on the candidate's run and on the champion version's run.
- evaluate: both models evaluated on the same dataset by MLflow's default evaluator, in the
  user's Python (see evaluation_worker.py), with the results logged back to the candidate run.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, ServiceError
from .tracking import metric_value, metric_values

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from .gate import Rule
    from .registry import Candidate, VersionRef
    from .significance import Comparison

WORKER = Path(__file__).with_name("evaluation_worker.py")


@dataclass(frozen=True)
class Predictions:
    """Both models' per-row outputs on the evaluation rows (evaluate mode), for the bootstrap:
    each model's `predictions`, and `probabilities` with `classes` where it gives them."""

    truth: Any
    candidate: dict[str, Any]
    champion: dict[str, Any]


@dataclass(frozen=True)
class Metrics:
    candidate: dict[str, float]
    champion: dict[str, float] | None  # None: there is no champion
    champion_evaluation_run_id: str = ""  # evaluate mode: the nested run with the champion's
    predictions: Predictions | None = None  # evaluate mode with a champion, when asked for


@dataclass(frozen=True)
class EvaluationSpec:
    data: Path
    targets: str
    model_type: str
    python: str
    metric_prefix: str
    average: str = "weighted"  # MLflow's evaluator setting for multiclass precision, recall, F1
    keep_predictions: bool = False  # a rule has a confidence: the bootstrap needs the rows


def run_metrics(client: MlflowClient, run_id: str) -> dict[str, float]:
    """A run's latest metric values; {} for a version registered without a run.

    Every metric the gate reads from MLflow comes through here (candidate, champion, history).
    """
    if not run_id:
        return {}
    return metric_values(client.get_run(run_id).data.metrics)


def logged(client: MlflowClient, candidate: Candidate, champion: VersionRef | None) -> Metrics:
    if not candidate.run_id:
        raise ConfigError(
            f"candidate {candidate.given} has no MLflow run, so it has no logged metrics",
            "use compare: evaluate to evaluate it on a dataset instead",
        )
    return Metrics(
        candidate=run_metrics(client, candidate.run_id),
        champion=None if champion is None else run_metrics(client, champion.run_id),
    )


def _from_json(values: Mapping[str, Any]) -> dict[str, float]:
    """The worker's values: numbers, or "inf" / "-inf" / "nan" (JSON has none of them)."""
    return {k: math.nan if v is None else metric_value(v) for k, v in values.items()}


def reevaluate(
    spec: EvaluationSpec,
    candidate: Candidate,
    champion: VersionRef | None,
    environ: Mapping[str, str],
    cwd: Path,
) -> Metrics:
    """Evaluate both models on `spec.data` in the user's Python; log back to the candidate."""
    if not candidate.model_uri or not candidate.run_id:
        raise ConfigError(
            f"candidate {candidate.given} has no logged model and run to evaluate",
            "pass the train step's model-uri, or a run that logged a model",
        )
    python = shutil.which(spec.python, path=environ.get("PATH"))
    if python is None:
        raise ConfigError(
            f"gate.evaluation.python: '{spec.python}' is not on PATH",
            "set it to the Python that has the model's dependencies and mlflow",
        )
    request = {
        "data": str((cwd / spec.data).resolve()),
        "targets": spec.targets,
        "model_type": spec.model_type,
        "metric_prefix": spec.metric_prefix,
        "average": spec.average,
        "candidate_run_id": candidate.run_id,
        "candidate_model_uri": candidate.model_uri,
        "champion_model_uri": champion.uri if champion else "",
        "champion_run_name": f"gate: champion {champion.name} v{champion.version}"
        if champion
        else "",
        "champion_tags": {
            "mlops.gate.role": "champion-evaluation",
            "mlops.gate.model": champion.name if champion else "",
            "mlops.gate.champion_version": champion.version if champion else "",
        },
    }
    with tempfile.TemporaryDirectory(prefix="mlops-evaluate-") as scratch:
        request_file, result_file = Path(scratch, "request.json"), Path(scratch, "result.json")
        if spec.keep_predictions and champion is not None:
            request["predictions_dir"] = scratch
        request_file.write_text(json.dumps(request), encoding="utf-8")
        done = subprocess.run(
            [python, str(WORKER), str(request_file), str(result_file)],
            cwd=cwd,
            env=dict(environ),
            check=False,
        )
        text = result_file.read_text(encoding="utf-8") if result_file.exists() else ""
        result: dict[str, Any] = json.loads(text) if text else {}
        ok = done.returncode == 0 and "error" not in result
        predictions = (
            _read_predictions(Path(scratch), result)
            if ok and "predictions_dir" in request
            else None
        )
    if not ok:
        message = result.get("error") or f"the evaluation exited with status {done.returncode}"
        if result.get("service"):
            raise ServiceError(
                f"evaluation failed talking to MLflow: {message}",
                "check the tracking server named in MLFLOW_TRACKING_URI",
            )
        raise ConfigError(
            f"evaluation with {spec.python} failed: {message}",
            result.get("hint") or "see the evaluator's output above",
        )
    return Metrics(
        candidate=_from_json(result["candidate"]),
        champion=_from_json(result["champion"]) if champion else None,
        champion_evaluation_run_id=result.get("champion_evaluation_run_id", ""),
        predictions=predictions,
    )


def _read_predictions(directory: Path, result: Mapping[str, Any]) -> Predictions:
    """The worker's .npy files (never pickles: they come from the user's Python)."""
    import numpy as np

    def load(name: str) -> Any:
        return np.load(directory / name, allow_pickle=False)

    files = result.get("predictions") or {}
    models = {
        role: {kind: load(name) for kind, name in files.get(role, {}).items()}
        for role in ("candidate", "champion")
    }
    return Predictions(load("truth.npy"), models["candidate"], models["champion"])


@dataclass(frozen=True)
class Intervals:
    """The paired bootstraps by metric, and why a metric has none (it fails closed)."""

    found: dict[str, Comparison]
    unavailable: dict[str, str]


def paired_intervals(
    rules: Sequence[Rule], metrics: Metrics, *, resamples: int, seed: int, average: str
) -> Intervals:
    """The paired bootstrap of every rule with a confidence; none without a champion (nothing
    to pair with). A metric the models' outputs cannot give (no probabilities, say) is left
    out with the reason, and its rule fails closed."""
    from .significance import compare

    predictions = metrics.predictions
    result = Intervals({}, {})
    if predictions is None or metrics.champion is None:
        return result
    by_confidence: dict[float, list[str]] = {}
    for rule in rules:
        if rule.confidence is not None:
            by_confidence.setdefault(rule.confidence, []).append(rule.metric)

    def bootstrap(names: list[str], confidence: float) -> list[Comparison]:
        return compare(
            predictions.truth,
            predictions.champion,
            predictions.candidate,
            names,
            confidence=confidence,
            resamples=resamples,
            seed=seed,
            average=average,
        )

    for confidence, names in by_confidence.items():
        try:  # together: the metrics of one family share their resamples' sums
            found = bootstrap(names, confidence)
        except ConfigError:  # then one by one, to tell which cannot be computed and why
            found = []
            for name in names:
                try:
                    found += bootstrap([name], confidence)
                except ConfigError as error:
                    result.unavailable[name] = error.message
        result.found.update((comparison.metric, comparison) for comparison in found)
    return result


# ----------------------------------------------------------------------------- assessment


@dataclass(frozen=True)
class Assessment:
    """Everything the gate needs: who is compared, their metric values, the champion history."""

    candidate: Candidate
    champion: VersionRef | None
    metrics: Metrics
    history: tuple[tuple[str, float], ...]  # (label, primary metric) of recent champions


def champion_history(
    client: MlflowClient, champion: VersionRef | None, alias: str, limit: int, metric: str
) -> tuple[tuple[str, float], ...]:
    """The primary metric of the versions that held the alias, oldest first.

    From the alias history that promote records; for a registry without it, the champion and
    the versions registered before it.
    """
    from .promote import history_of
    from .registry import recent_versions, version_ref

    if champion is None or limit <= 0:
        return ()
    holders = [m.to_version for m in history_of(client, champion.name, alias) if m.to_version]
    # A version that held the alias twice (a rollback) is shown once, where it last took it.
    ordered = [v for i, v in enumerate(holders) if v not in holders[i + 1 :]][-limit:]
    if ordered:
        versions = [version_ref(client.get_model_version(champion.name, v)) for v in ordered]
    else:
        registered = recent_versions(client, champion.name, limit + 20)
        versions = [v for v in registered if int(v.version) <= int(champion.version)][-limit:]
    points = []
    for version in versions:
        value = run_metrics(client, version.run_id).get(metric)
        if value is not None:
            points.append((f"v{version.version}", value))
    return tuple(points)


def assess(
    client: MlflowClient,
    *,
    tracking_uri: str,
    model_name: str,
    alias: str,
    candidate: str,
    spec: EvaluationSpec | None,  # None: compare logged metrics
    environ: Mapping[str, str],
    cwd: Path,
    history_limit: int,
    history_metric: str,
) -> Assessment:
    from .registry import alias_holder, resolve_candidate
    from .tracking import tracking_server

    with tracking_server(tracking_uri, f"resolving the candidate {candidate}"):
        resolved = resolve_candidate(client, candidate)
    with tracking_server(tracking_uri, f"looking up {model_name}@{alias}"):
        champion = alias_holder(client, model_name, alias)
    if spec is None:
        with tracking_server(tracking_uri, "reading the runs' metrics"):
            metrics = logged(client, resolved, champion)
    else:
        metrics = reevaluate(spec, resolved, champion, environ, cwd)
    prefix = spec.metric_prefix if spec else ""
    with tracking_server(tracking_uri, "reading the champion history"):
        history = champion_history(client, champion, alias, history_limit, prefix + history_metric)
    return Assessment(resolved, champion, metrics, history)
