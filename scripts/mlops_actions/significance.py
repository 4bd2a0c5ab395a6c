"""Is the candidate really better? Paired bootstrap intervals and McNemar's exact test.

Pure numpy (and scipy for the binomial test): per-row predictions of both models on the same
rows in, one `Comparison` per metric out. The metrics carry the names MLflow's evaluator logs
(`accuracy_score`, `f1_score`, `root_mean_squared_error`, ...) and compute what it computes
(scikit-learn's definitions: for two classes the positive one, by default the larger label as in
MLflow; for more, averaged as MLflow's `average` evaluator setting says, weighted by default).

Two resampling schemes, both paired (a resample draws rows, and each row brings both models'
predictions, so what the models share cancels out of the difference):

- **Classification counts** (accuracy, precision, recall, F1): these metrics depend on the rows
  only through the paired confusion table, counts of (true class, champion's class, candidate's
  class). Resampling n rows with replacement is then exactly a multinomial draw of that table
  with the observed cell frequencies: K³ numbers per resample whatever n, so a million rows cost
  what a hundred do.
- **Sums over rows** (errors, log loss, ROC AUC): a Poisson bootstrap, each row weighted by a
  Poisson(1) count in each resample (the large-n limit of the multinomial, and independent per
  row, so resamples can be drawn in chunks of bounded memory rather than as one n x R index
  matrix).

Seeded with numpy's PCG64: the same data, seed and resamples give the same interval anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError

COUNT_METRICS = ("accuracy_score", "precision_score", "recall_score", "f1_score")
AVERAGES = ("weighted", "macro", "micro")  # of a multiclass precision / recall / F1
REGRESSION_METRICS = (
    "mean_absolute_error",
    "mean_squared_error",
    "root_mean_squared_error",
    "r2_score",
    "mean_absolute_percentage_error",
)
PROBABILITY_METRICS = ("log_loss", "roc_auc")
RESAMPLABLE = (*COUNT_METRICS, *PROBABILITY_METRICS, *REGRESSION_METRICS)
CHUNK_CELLS = 4_000_000  # Poisson weights held at once (float32: 16 MB), whatever n and R


@dataclass(frozen=True)
class Comparison:
    """One metric of both models on the same rows, and the difference's interval."""

    metric: str
    champion: float
    candidate: float
    low: float  # of candidate - champion
    high: float
    confidence: float
    resamples: int
    seed: int
    rows: int
    method: str  # "paired bootstrap (multinomial counts)" | "paired bootstrap (Poisson)"
    p_value: float | None = None  # McNemar's exact test, for accuracy
    p_value_method: str = ""

    @property
    def difference(self) -> float:
        return self.candidate - self.champion


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """A two-sided percentile interval; NaN resamples (a class absent) are ignored."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


def _compared(
    metric: str,
    old: np.ndarray,
    new: np.ndarray,
    settings: tuple[float, int, int, int],
    method: str,
    p_value: tuple[float | None, str] = (None, ""),
) -> Comparison:
    """A Comparison from both models' values: [0] on the data, [1:] on the resamples.
    `settings` is (confidence, resamples, seed, rows)."""
    confidence, resamples, seed, rows = settings
    low, high = _percentiles(new[1:] - old[1:], confidence)
    return Comparison(
        metric,
        float(old[0]),
        float(new[0]),
        low,
        high,
        confidence,
        resamples,
        seed,
        rows,
        method,
        *p_value,
    )


# ----------------------------------------------------------------------------- counts


def _from_confusion(
    confusion: np.ndarray, metric: str, positive: int | None, average: str = "weighted"
) -> np.ndarray:
    """A metric from confusion tables [..., true, predicted], as scikit-learn computes it."""
    total = confusion.sum(axis=(-2, -1)).astype(float)
    diagonal = np.diagonal(confusion, axis1=-2, axis2=-1).astype(float)
    if metric == "accuracy_score" or (positive is None and average == "micro"):
        # Micro-averaged precision, recall and F1 of a single-label problem are the accuracy.
        accuracy = np.full(total.shape, np.nan)
        return np.asarray(np.divide(diagonal.sum(-1), total, out=accuracy, where=total > 0))
    support = confusion.sum(axis=-1).astype(float)  # rows: true class
    predicted = confusion.sum(axis=-2).astype(float)  # columns: predicted class
    zeros = np.zeros_like(diagonal)
    precision = np.divide(diagonal, predicted, out=zeros.copy(), where=predicted > 0)
    recall = np.divide(diagonal, support, out=zeros.copy(), where=support > 0)
    if metric == "precision_score":
        per_class = precision
    elif metric == "recall_score":
        per_class = recall
    else:
        both = precision + recall
        per_class = np.divide(2 * precision * recall, both, out=zeros.copy(), where=both > 0)
    if positive is not None:
        return np.asarray(per_class[..., positive])
    if average == "macro":
        return np.asarray(per_class.mean(-1))
    weights = np.divide(support, total[..., None], out=zeros.copy(), where=total[..., None] > 0)
    return np.asarray((per_class * weights).sum(-1))


def _count_comparisons(
    y_true: np.ndarray,
    champion: np.ndarray,
    candidate: np.ndarray,
    metrics: list[str],
    *,
    confidence: float,
    resamples: int,
    seed: int,
    positive_label: Any,
    average: str,
) -> list[Comparison]:
    labels, coded = np.unique(np.concatenate([y_true, champion, candidate]), return_inverse=True)
    k, n = len(labels), len(y_true)
    truth, old, new = coded[:n], coded[n : 2 * n], coded[2 * n :]
    positive = _positive_index(labels, positive_label) if k <= 2 else None
    table = np.bincount((truth * k + old) * k + new, minlength=k**3)
    draws = np.random.default_rng(seed).multinomial(n, table / n, size=resamples)
    tables = np.concatenate([table[None, :], draws]).reshape(-1, k, k, k)
    champion_confusion = tables.sum(axis=3)  # [true, champion's]
    candidate_confusion = tables.sum(axis=2)  # [true, candidate's]
    results = []
    for metric in metrics:
        old_values = _from_confusion(champion_confusion, metric, positive, average)
        new_values = _from_confusion(candidate_confusion, metric, positive, average)
        p_value: tuple[float | None, str] = (None, "")
        if metric == "accuracy_score":
            p_value = (mcnemar_exact(truth, old, new), "McNemar exact")
        results.append(
            _compared(
                metric,
                old_values,
                new_values,
                (confidence, resamples, seed, n),
                "paired bootstrap (multinomial counts)",
                p_value,
            )
        )
    return results


def _positive_index(labels: np.ndarray, positive_label: Any) -> int:
    """scikit-learn's average="binary" scores one class: the given one, else (MLflow's default)
    the larger label."""
    if positive_label is not None:
        matches = np.flatnonzero(labels == positive_label)
        if matches.size:
            return int(matches[0])
    return len(labels) - 1


def mcnemar_exact(truth: np.ndarray, champion: np.ndarray, candidate: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: of the rows where exactly one model is right, is the
    split between them 50/50? (A binomial test on the discordant rows.)"""
    from scipy.stats import binomtest  # type: ignore[import-untyped]

    old_right, new_right = champion == truth, candidate == truth
    only_new = int(np.sum(new_right & ~old_right))
    only_old = int(np.sum(old_right & ~new_right))
    if only_new + only_old == 0:
        return 1.0
    return float(binomtest(only_new, only_new + only_old, 0.5).pvalue)


# ----------------------------------------------------------------------------- sums


def _poisson_sums(columns: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Row 0: the plain column sums; rows 1..R: the sums under Poisson(1) row weights."""
    rows = columns.shape[0]
    rng = np.random.default_rng(seed)
    per_chunk = max(1, CHUNK_CELLS // max(rows, 1))
    sums = [columns.sum(axis=0, keepdims=True)]
    done = 0
    while done < resamples:
        size = min(per_chunk, resamples - done)
        weights = rng.poisson(1.0, size=(size, rows)).astype(np.float32)
        sums.append(weights @ columns.astype(np.float32))
        done += size
    return np.concatenate(sums).astype(float)


def _regression_values(sums: np.ndarray, metric: str, model: int) -> np.ndarray:
    """A regression metric of model 0 (champion) or 1 (candidate) from weighted sums."""
    weight, y, y2 = sums[:, 0], sums[:, 1], sums[:, 2]
    absolute, squared, relative = (sums[:, 3 + 3 * model + i] for i in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "mean_absolute_error":
            return np.asarray(absolute / weight)
        if metric == "mean_squared_error":
            return np.asarray(squared / weight)
        if metric == "root_mean_squared_error":
            return np.asarray(np.sqrt(squared / weight))
        if metric == "mean_absolute_percentage_error":
            return np.asarray(relative / weight)
        total = y2 - y * y / weight  # r2_score: 1 - SSE / SST
        return np.asarray(np.where(total > 0, 1.0 - squared / total, np.nan))


def _regression_comparisons(
    y_true: np.ndarray,
    champion: np.ndarray,
    candidate: np.ndarray,
    metrics: list[str],
    *,
    confidence: float,
    resamples: int,
    seed: int,
) -> list[Comparison]:
    y = y_true.astype(float)
    floor = np.maximum(np.abs(y), np.finfo(np.float64).eps)  # scikit-learn's MAPE
    columns = [np.ones_like(y), y, y * y]
    for predictions in (champion, candidate):
        error = predictions.astype(float) - y
        columns += [np.abs(error), error * error, np.abs(error) / floor]
    sums = _poisson_sums(np.column_stack(columns), resamples, seed)
    results = []
    for metric in metrics:
        old, new = _regression_values(sums, metric, 0), _regression_values(sums, metric, 1)
        results.append(
            _compared(
                metric,
                old,
                new,
                (confidence, resamples, seed, len(y)),
                "paired bootstrap (Poisson)",
            )
        )
    return results


def _weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC under row weights (one row of `weights` per resample), ties counted half."""
    order = np.argsort(scores, kind="mergesort")
    scores, positive, weights = scores[order], positive[order], weights[:, order]
    negative_weights = weights * ~positive
    positive_weights = weights * positive
    # Negatives strictly below each score, and tied with it, via the tie groups' boundaries.
    starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
    group = np.cumsum(np.r_[True, scores[1:] != scores[:-1]]) - 1
    cumulative = np.concatenate(
        [np.zeros((weights.shape[0], 1)), np.cumsum(negative_weights, axis=1)], axis=1
    )
    ends = np.r_[starts[1:], len(scores)]
    below = cumulative[:, starts][:, group]
    tied = (cumulative[:, ends] - cumulative[:, starts])[:, group]
    wins = (positive_weights * (below + 0.5 * tied)).sum(axis=1)
    pairs = positive_weights.sum(axis=1) * negative_weights.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(pairs > 0, wins / pairs, np.nan))


def _aligned(model: dict[str, Any], labels: np.ndarray, who: str) -> np.ndarray:
    """The model's probabilities with one column per label in `labels`, in that order.

    The model's `classes` (scikit-learn's `classes_`) say which column is which; without them
    the columns must be the labels in sorted order, one each.
    """
    probabilities = np.asarray(model["probabilities"], dtype=float)
    classes = model.get("classes")
    if probabilities.ndim != 2:
        raise ConfigError(f"the {who}'s probabilities are not a rows x classes table")
    if classes is None:
        if probabilities.shape[1] != len(labels):
            raise ConfigError(
                f"the {who} gives probabilities for {probabilities.shape[1]} classes and the "
                f"evaluation set has {len(labels)} labels, with no class list to match them",
                "evaluate on a dataset with every class, or gate on a metric of predictions",
            )
        return probabilities
    aligned = np.zeros((probabilities.shape[0], len(labels)))
    where = {label: i for i, label in enumerate(np.asarray(classes).tolist())}
    for column, label in enumerate(labels.tolist()):
        if label in where:
            aligned[:, column] = probabilities[:, where[label]]
    return aligned


def _probability_comparisons(
    y_true: np.ndarray,
    champion: dict[str, Any],
    candidate: dict[str, Any],
    metrics: list[str],
    *,
    confidence: float,
    resamples: int,
    seed: int,
    positive_label: Any,
    average: str,
) -> list[Comparison]:
    """log_loss and roc_auc (binary: the positive class; more: one-vs-rest, averaged)."""
    known = [
        np.asarray(m["classes"]) for m in (champion, candidate) if m.get("classes") is not None
    ]
    labels, truth = np.unique(y_true, return_inverse=True)
    if known:
        labels = np.unique(np.concatenate([labels, *known]))
        truth = np.searchsorted(labels, y_true)
    old_p, new_p = _aligned(champion, labels, "champion"), _aligned(candidate, labels, "candidate")
    rows = len(truth)
    results = []
    for metric in metrics:
        if metric == "log_loss":
            losses = []
            for probabilities in (old_p, new_p):
                p = np.clip(probabilities, 1e-15, 1 - 1e-15)
                p = p / p.sum(axis=1, keepdims=True)  # scikit-learn renormalises too
                losses.append(-np.log(p[np.arange(rows), truth]))
            sums = _poisson_sums(np.column_stack([np.ones(rows), *losses]), resamples, seed)
            old, new = sums[:, 1] / sums[:, 0], sums[:, 2] / sums[:, 0]
        elif metric == "roc_auc":
            old, new = _auc_values(
                old_p, new_p, truth, labels, positive_label, average, resamples, seed
            )
        else:
            raise ConfigError(f"{metric} is not a probability metric")
        results.append(
            _compared(
                metric, old, new, (confidence, resamples, seed, rows), "paired bootstrap (Poisson)"
            )
        )
    return results


def _auc_values(
    old_p: np.ndarray,
    new_p: np.ndarray,
    truth: np.ndarray,
    labels: np.ndarray,
    positive_label: Any,
    average: str,
    resamples: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Both models' ROC AUC on the data and under each resample's Poisson row weights.

    Binary: the positive class's column. Multiclass: one-vs-rest per class, averaged plainly
    (macro) or by the class's (resampled) support (weighted), as MLflow's evaluator asks
    scikit-learn for; it logs no multiclass roc_auc for a micro average, so neither do we.
    """
    rows = len(truth)
    weights = np.vstack(
        [np.ones((1, rows)), np.random.default_rng(seed).poisson(1.0, size=(resamples, rows))]
    )
    present = np.unique(truth)
    if len(present) == 2 and len(labels) == 2:
        index = _positive_index(labels, positive_label)
        positive = truth == index
        return (
            _weighted_auc(old_p[:, index], positive, weights),
            _weighted_auc(new_p[:, index], positive, weights),
        )
    if average not in ("macro", "weighted"):
        raise ConfigError(
            f"a multiclass roc_auc has no {average} average (MLflow logs none)",
            "set gate.evaluation.average to macro or weighted, or gate on another metric",
        )
    values = []
    for probabilities in (old_p, new_p):
        per_class, supports = [], []
        for index in present:
            positive = truth == index
            per_class.append(_weighted_auc(probabilities[:, index], positive, weights))
            supports.append(weights @ positive)
        scores, support = np.array(per_class), np.array(supports)
        if average == "macro":
            values.append(scores.mean(axis=0))
        else:
            values.append((scores * support).sum(axis=0) / support.sum(axis=0))
    return values[0], values[1]


# ----------------------------------------------------------------------------- entry point


def check_resamplable(metric: str) -> None:
    if metric not in RESAMPLABLE:
        raise ConfigError(
            f"gate rule on '{metric}': with a confidence, the gate computes the metric from both "
            "models' predictions, and it cannot compute this one",
            f"use one of {', '.join(RESAMPLABLE)}, or drop `confidence` from this rule",
        )


def compare(
    y_true: Any,
    champion: dict[str, Any],
    candidate: dict[str, Any],
    metrics: list[str],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    positive_label: Any = None,
    average: str = "weighted",
) -> list[Comparison]:
    """Each metric of both models, with a paired interval of candidate - champion.

    `champion` and `candidate` hold the models' `predictions` (one per row) and, for log_loss
    and roc_auc, `probabilities` (rows x classes) with `classes`, the label of each column
    (without it, the columns are the evaluation set's labels in sorted order). A binary
    problem scores `positive_label`, by default the larger label; a multiclass one averages
    precision, recall, F1 and ROC AUC as `average` says (MLflow's evaluator setting).
    """
    for metric in metrics:
        check_resamplable(metric)
    if not 0.5 <= confidence < 1:
        raise ConfigError(f"confidence must be at least 0.5 and below 1, got {confidence}")
    if average not in AVERAGES:
        raise ConfigError(f"average must be one of {', '.join(AVERAGES)}, got {average!r}")
    truth = np.asarray(y_true)
    runs: list[tuple[tuple[str, ...], Callable[..., list[Comparison]], str]] = [
        (COUNT_METRICS, _count_comparisons, "predictions"),
        (REGRESSION_METRICS, _regression_comparisons, "predictions"),
        (PROBABILITY_METRICS, _probability_comparisons, "probabilities"),
    ]
    found: dict[str, Comparison] = {}
    for family, run, key in runs:
        wanted = [m for m in metrics if m in family]
        if not wanted:
            continue
        if champion.get(key) is None or candidate.get(key) is None:
            raise ConfigError(
                f"{', '.join(wanted)} needs both models' {key}",
                "log a model whose predict_proba MLflow can call, or gate on another metric",
            )
        extra = (
            {"positive_label": positive_label, "average": average}
            if run is not _regression_comparisons
            else {}
        )
        models = (
            (champion, candidate)
            if run is _probability_comparisons
            else (np.asarray(champion[key]), np.asarray(candidate[key]))
        )
        for comparison in run(
            truth,
            *models,
            wanted,
            confidence=confidence,
            resamples=resamples,
            seed=seed,
            **extra,
        ):
            found[comparison.metric] = comparison
    return [found[m] for m in metrics]


def rows_needed(comparison: Comparison, bound: float) -> int | None:
    """Rows that would make the interval narrow enough to decide against `bound`, at the
    observed variance (the half-width shrinks as 1/√n); None when the estimate sits on it."""
    distance = abs(comparison.difference - bound)
    half_width = (comparison.high - comparison.low) / 2
    if distance <= 0 or not math.isfinite(half_width):
        return None
    return max(comparison.rows, math.ceil(comparison.rows * (half_width / distance) ** 2))
