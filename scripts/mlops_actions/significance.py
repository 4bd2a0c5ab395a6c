"""Is the candidate really better? Paired bootstrap intervals and McNemar's exact test.

Pure numpy: per-row predictions of both models on the same
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
  row, so resamples can be drawn in blocks of bounded memory rather than as one n x R index
  matrix, and on every core at once).

Seeded with numpy's PCG64, one child seed per block of resamples, the blocks fixed by the rows
and resamples: the same data, seed and resamples give the same interval anywhere, on any number
of cores.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
# Poisson weights are drawn in blocks of resamples (each block from its own seed, one thread
# at a time), a tile of rows at a time. A sum holds one tile per thread; ROC AUC a whole block,
# about 11 bytes a cell (a block is one resample when the rows alone are more).
CHUNK_CELLS = 1_000_000  # cells per block, at most (smaller blocks measured no faster)
BLOCK_RESAMPLES = 256  # resamples per block, at most: enough blocks to keep every core busy
TILE_CELLS = 1 << 18  # cells per tile: the tile's arrays stay in a core's cache


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
    old_right, new_right = champion == truth, candidate == truth
    only_new = int(np.sum(new_right & ~old_right))
    only_old = int(np.sum(old_right & ~new_right))
    return binomial_two_sided(only_new, only_new + only_old)


def binomial_two_sided(successes: int, trials: int) -> float:
    """The exact two-sided p-value of `successes` in `trials` under p = 1/2 (scipy's
    binomtest for this symmetric case): twice the smaller tail, at most 1. In logs, so that
    a million discordant rows neither overflow nor underflow term by term."""
    fewer = min(successes, trials - successes)
    if 2 * fewer == trials:
        return 1.0
    steps = np.arange(1, fewer + 1, dtype=float)
    log_choose = np.concatenate([[0.0], np.cumsum(np.log((trials - steps + 1) / steps))])
    log_terms = log_choose - trials * math.log(2.0)
    top = float(log_terms.max())
    tail = math.exp(top) * float(np.exp(log_terms - top).sum())
    return min(1.0, 2.0 * tail)


# ----------------------------------------------------------------------------- Poisson weights


def _poisson_steps() -> np.ndarray:
    """Thresholds on a 16-bit uniform u: the Poisson(1) weight is how many of them u reaches.

    The inverse CDF at the midpoints (u + 0.5) / 65536: each weight's probability is within
    1/65536 of Poisson(1)'s, and weights above 8 (1 row in 10^6) are never drawn. The weights'
    mean is exactly 1 and their variance 1 - 3e-5, so an interval is narrower by 1.5e-5 of its
    width: far below the bootstrap's own noise (tested). Drawing and eight passes of comparisons
    take about 1.2 s per 10^9 weights on one core, numpy's Poisson sampler 30 s; a lookup in a
    65,536-entry table instead of the comparisons is twice as slow (measured).
    """
    cdf = np.cumsum([math.exp(-1) / math.factorial(k) for k in range(20)])
    steps = np.searchsorted((np.arange(65536) + 0.5) / 65536, cdf)
    return steps[steps < 65536].astype(np.uint16)


POISSON_STEPS = _poisson_steps()


def _poisson_tile(bits: np.random.BitGenerator, shape: tuple[int, int]) -> np.ndarray:
    """Poisson(1) weights (uint8) from the bit generator's raw 64-bit words, four per word."""
    cells = shape[0] * shape[1]
    words = bits.random_raw((cells + 3) // 4)
    # Little-endian whatever the machine, so a seed gives the same weights everywhere.
    uniform = words.astype("<u8", copy=False).view("<u2")[:cells].reshape(shape)
    weights = np.zeros(shape, np.uint8)
    reached = np.empty(shape, bool)
    for step in POISSON_STEPS:
        np.greater_equal(uniform, step, out=reached)
        weights += reached.view(np.uint8)
    return weights


@dataclass(frozen=True)
class _Block:
    """Some resamples' weights, drawn from their own child seed a tile of rows at a time."""

    resamples: range
    seed: np.random.SeedSequence
    width: int  # rows per tile

    def tiles(self, rows: int) -> Iterator[tuple[slice, np.ndarray]]:
        bits = np.random.PCG64(self.seed)
        for start in range(0, rows, self.width):
            where = slice(start, min(start + self.width, rows))
            yield where, _poisson_tile(bits, (len(self.resamples), where.stop - start))

    def weights(self, rows: int, weights: np.ndarray) -> np.ndarray:
        """All rows' weights at once (resamples x rows, into `weights`), for ROC AUC's ranks."""
        for where, tile in self.tiles(rows):
            weights[:, where] = tile
        return weights


def _blocks(rows: int, resamples: int, seed: int) -> list[_Block]:
    """The resamples cut into blocks by rows and resamples alone, one child seed each: the
    weights do not depend on how many threads draw them, or in what order."""
    size = max(1, min(BLOCK_RESAMPLES, CHUNK_CELLS // max(rows, 1)))
    width = max(1, TILE_CELLS // size)
    starts = range(0, resamples, size)
    seeds = np.random.SeedSequence(seed).spawn(len(starts))
    return [
        _Block(range(start, min(start + size, resamples)), child, width)
        for start, child in zip(starts, seeds, strict=True)
    ]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _each(work: Callable[[_Block], np.ndarray], blocks: list[_Block]) -> list[np.ndarray]:
    """`work` on every block, in threads (numpy lets go of the GIL while it draws, compares,
    multiplies and sums); results in the blocks' order."""
    workers = min(len(blocks), _cores())
    if workers < 2:
        return [work(block) for block in blocks]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(work, blocks))


# ----------------------------------------------------------------------------- sums


def _poisson_sums(columns: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Row 0: the plain column sums; rows 1..R: the sums under Poisson(1) row weights.

    The resamples sum in float32, a tile of rows at a time, added up in float64: columns that
    are differences between the models keep that precision relative to the difference.
    """
    rows = columns.shape[0]
    single = np.ascontiguousarray(columns.T, dtype=np.float32)

    def block_sums(block: _Block) -> np.ndarray:
        sums = np.zeros((len(block.resamples), columns.shape[1]))
        for where, weights in block.tiles(rows):
            # numpy's own loop rather than BLAS: OpenBLAS runs products of this size on threads
            # of its own, and called from both of ours at once it ran 5x slower (measured).
            sums += np.einsum("rm,cm->rc", weights.astype(np.float32), single[:, where])
        return sums

    resampled = _each(block_sums, _blocks(rows, resamples, seed))
    return np.concatenate([columns.sum(axis=0, keepdims=True), *resampled])


# The columns each metric sums: the champion's errors and the candidate's change in them (so
# their float32 sums keep the difference's own precision), y centred (so r2's total does not
# cancel). Only the columns the rules ask for are summed.
SUMMED = {
    "mean_absolute_error": ("absolute", "absolute change"),
    "mean_squared_error": ("squared", "squared change"),
    "root_mean_squared_error": ("squared", "squared change"),
    "mean_absolute_percentage_error": ("relative", "relative change"),
    "r2_score": ("y", "y squared", "squared", "squared change"),
}


def _regression_columns(
    y: np.ndarray, champion: np.ndarray, candidate: np.ndarray, names: list[str]
) -> np.ndarray:
    """The named columns, rows x names (only those: at 10^6 rows each is 8 MB)."""
    floor = np.maximum(np.abs(y), np.finfo(np.float64).eps)  # scikit-learn's MAPE
    old, new = (np.asarray(p, dtype=float) - y for p in (champion, candidate))
    centred = np.asarray(y - y.mean())

    def error(kind: str, residual: np.ndarray) -> np.ndarray:
        if kind == "absolute":
            return np.asarray(np.abs(residual))
        if kind == "squared":
            return np.asarray(np.square(residual))
        return np.asarray(np.abs(residual) / floor)  # relative

    def column(name: str) -> np.ndarray:
        if name == "weight":
            return np.ones_like(y)
        if name == "y":
            return centred
        if name == "y squared":
            return np.asarray(np.square(centred))
        kind, _, change = name.partition(" ")
        return error(kind, new) - error(kind, old) if change else error(kind, old)

    return np.column_stack([column(name) for name in names])


def _regression_values(sums: dict[str, np.ndarray], metric: str, model: int) -> np.ndarray:
    """A regression metric of model 0 (champion) or 1 (candidate) from the weighted sums."""

    def error(name: str) -> np.ndarray:
        return np.asarray(sums[name] + model * sums[f"{name} change"])

    weight = sums["weight"]
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "mean_absolute_error":
            return np.asarray(error("absolute") / weight)
        if metric == "mean_squared_error":
            return np.asarray(error("squared") / weight)
        if metric == "root_mean_squared_error":
            return np.asarray(np.sqrt(error("squared") / weight))
        if metric == "mean_absolute_percentage_error":
            return np.asarray(error("relative") / weight)
        total = sums["y squared"] - sums["y"] ** 2 / weight  # r2_score: 1 - SSE / SST
        return np.asarray(np.where(total > 0, 1.0 - error("squared") / total, np.nan))


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
    names = ["weight", *dict.fromkeys(name for metric in metrics for name in SUMMED[metric])]
    columns = _regression_columns(y, champion, candidate, names)
    summed = _poisson_sums(columns, resamples, seed)
    sums = dict(zip(names, summed.T, strict=True))
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


# ----------------------------------------------------------------------------- ROC AUC


class _Scratch(threading.local):
    """A thread's work arrays, reused from block to block: a fresh array this size costs the
    kernel's zeroing of its pages (a cumulative sum into one took twice as long, measured)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, int], dtype: type) -> np.ndarray:
        size = shape[0] * shape[1]
        found = self.arrays.get(name)
        if found is None or found.size < size or found.dtype != dtype:
            found = self.arrays[name] = np.empty(size, dtype)
        return found[:size].reshape(shape)


@dataclass(frozen=True)
class _Ranking:
    """One model's scores for one class, sorted once: ROC AUC under any row weights is then a
    cumulative sum over the negatives, looked up at each positive."""

    positives: np.ndarray  # rows of the class, by ascending score (so look-ups run forward)
    negatives: np.ndarray  # the other rows, by ascending score
    below: np.ndarray  # per positive: how many negatives score strictly lower
    not_above: np.ndarray  # ... lower or the same
    tied: bool


def _ranking(scores: np.ndarray, positive: np.ndarray) -> _Ranking:
    positives, negatives = (
        rows[np.argsort(scores[rows], kind="stable")]
        for rows in (np.flatnonzero(positive), np.flatnonzero(~positive))
    )
    ranked, looked_up = scores[negatives], scores[positives]
    below = np.searchsorted(ranked, looked_up, side="left")
    not_above = np.searchsorted(ranked, looked_up, side="right")
    return _Ranking(positives, negatives, below, not_above, bool(np.any(below != not_above)))


def _weighted_auc(ranking: _Ranking, weights: np.ndarray, scratch: _Scratch) -> np.ndarray:
    """ROC AUC under row weights (one row of `weights` per resample): the weighted share of
    positive-negative pairs in the right order, ties counted half. Exact in integers."""
    count, rows = weights.shape
    wide = np.int32 if rows < 2**24 else np.int64  # no overflow of weight x cumulative weight
    negatives = scratch.get("negatives", (count, len(ranking.negatives)), np.uint8)
    np.take(weights, ranking.negatives, axis=1, out=negatives, mode="clip")
    cumulative = scratch.get("cumulative", (count, len(ranking.negatives) + 1), wide)
    cumulative[:, 0] = 0
    np.cumsum(negatives, axis=1, dtype=wide, out=cumulative[:, 1:])
    positives = scratch.get("positives", (count, len(ranking.positives)), np.uint8)
    np.take(weights, ranking.positives, axis=1, out=positives, mode="clip")

    def pairs_below(counts: np.ndarray) -> np.ndarray:
        """Per resample: sum over positives of weight x negatives' weight below `counts`."""
        found = scratch.get("found", positives.shape, wide)
        np.take(cumulative, counts, axis=1, out=found, mode="clip")
        np.multiply(found, positives, out=found)
        return np.asarray(found.sum(axis=1, dtype=np.int64), dtype=float)

    wins = pairs_below(ranking.below)
    if ranking.tied:
        wins = (wins + pairs_below(ranking.not_above)) / 2
    pairs = positives.sum(axis=1, dtype=wide).astype(np.int64) * cumulative[:, -1]
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
            old_loss, new_loss = (_losses(p, truth) for p in (old_p, new_p))
            columns = np.column_stack([np.ones(rows), old_loss, new_loss - old_loss])
            sums = _poisson_sums(columns, resamples, seed)
            old = sums[:, 1] / sums[:, 0]
            new = old + sums[:, 2] / sums[:, 0]
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


def _losses(probabilities: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each row's log loss as scikit-learn (1.9) computes it: the true class's probability
    clipped to [eps, 1 - eps], eps float64's machine epsilon, and not renormalised."""
    eps = np.finfo(np.float64).eps
    chosen = probabilities[np.arange(len(truth)), truth]
    return np.asarray(-np.log(np.clip(chosen, eps, 1 - eps)))


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
    """Both models' ROC AUC on the data and under each resample's Poisson row weights (the
    same blocks of weights as the sums, so memory stays bounded).

    Binary: the positive class's column. Multiclass: one-vs-rest per class, averaged plainly
    (macro) or by the class's (resampled) support (weighted), as MLflow's evaluator asks
    scikit-learn for; it logs no multiclass roc_auc for a micro average, so neither do we.
    """
    present = np.unique(truth)
    if len(present) == 2 and len(labels) == 2:
        classes = [_positive_index(labels, positive_label)]
    elif average not in ("macro", "weighted"):
        raise ConfigError(
            f"a multiclass roc_auc has no {average} average (MLflow logs none)",
            "set gate.evaluation.average to macro or weighted, or gate on another metric",
        )
    else:
        classes = present.tolist()
    rankings = [
        (_ranking(old_p[:, c], truth == c), _ranking(new_p[:, c], truth == c)) for c in classes
    ]

    rows, scratch = len(truth), _Scratch()

    def aucs(weights: np.ndarray) -> np.ndarray:
        """[resample, model]: each model's (averaged) ROC AUC under the weights."""
        values = np.array([[_weighted_auc(r, weights, scratch) for r in pair] for pair in rankings])
        if len(classes) == 1 or average == "macro":
            return np.asarray(values.mean(axis=0).T)
        support = np.array([weights[:, truth == c].sum(axis=1) for c in classes])[:, None, :]
        return np.asarray(((values * support).sum(axis=0) / support.sum(axis=0)).T)

    def block_aucs(block: _Block) -> np.ndarray:
        return aucs(
            block.weights(rows, scratch.get("weights", (len(block.resamples), rows), np.uint8))
        )

    data = aucs(np.ones((1, rows), np.uint8))
    found = np.concatenate([data, *_each(block_aucs, _blocks(rows, resamples, seed))])
    return found[:, 0], found[:, 1]


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
