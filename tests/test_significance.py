"""The gate's statistics (significance.py): point estimates equal scikit-learn's, as MLflow's
evaluator computes them; intervals are reproducible; a superiority rule at 95 % confidence
promotes an equally good candidate about as rarely as promised."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as sk

from mlops_actions import significance
from mlops_actions.errors import ConfigError


def classifier_pair(rng: np.random.Generator, rows: int, classes: int, skill: tuple[float, float]):
    truth = rng.integers(0, classes, rows)
    predictions = []
    for accuracy in skill:
        wrong = (truth + rng.integers(1, classes, rows)) % classes
        predictions.append(np.where(rng.random(rows) < accuracy, truth, wrong))
    return truth, predictions[0], predictions[1]


def probabilities_for(rng: np.random.Generator, truth: np.ndarray, classes: int, sharp: float):
    logits = rng.normal(size=(len(truth), classes))
    logits[np.arange(len(truth)), truth] += sharp
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("classes", [2, 3])
def test_classifier_point_estimates_equal_scikit_learns(classes: int) -> None:
    rng = np.random.default_rng(7)
    truth, old, new = classifier_pair(rng, 500, classes, (0.7, 0.8))
    found = significance.compare(
        truth,
        {"predictions": old},
        {"predictions": new},
        list(significance.COUNT_METRICS),
        resamples=200,
    )
    average = "binary" if classes == 2 else "weighted"
    for comparison, predictions in ((c, p) for c in found for p in (old, new)):
        expected = {
            "accuracy_score": sk.accuracy_score(truth, predictions),
            "precision_score": sk.precision_score(truth, predictions, average=average),
            "recall_score": sk.recall_score(truth, predictions, average=average),
            "f1_score": sk.f1_score(truth, predictions, average=average),
        }[comparison.metric]
        got = comparison.champion if predictions is old else comparison.candidate
        assert got == pytest.approx(expected, abs=1e-12), comparison.metric


def test_probability_and_regression_point_estimates_equal_scikit_learns() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 400)
    old_p, new_p = (probabilities_for(rng, truth, 2, s) for s in (0.5, 1.5))
    old_p[:50] = np.round(old_p[:50], 1)  # ties, which ROC AUC counts half
    found = significance.compare(
        truth, {"probabilities": old_p}, {"probabilities": new_p}, ["log_loss", "roc_auc"]
    )
    assert found[0].champion == pytest.approx(sk.log_loss(truth, old_p))
    assert found[0].candidate == pytest.approx(sk.log_loss(truth, new_p))
    assert found[1].champion == pytest.approx(sk.roc_auc_score(truth, old_p[:, 1]))
    assert found[1].candidate == pytest.approx(sk.roc_auc_score(truth, new_p[:, 1]))

    y = rng.normal(10, 3, 300)
    old, new = y + rng.normal(0, 2, 300), y + rng.normal(0, 1, 300)
    found = significance.compare(
        y, {"predictions": old}, {"predictions": new}, list(significance.REGRESSION_METRICS)
    )
    reference = {
        "mean_absolute_error": sk.mean_absolute_error,
        "mean_squared_error": sk.mean_squared_error,
        "root_mean_squared_error": sk.root_mean_squared_error,
        "r2_score": sk.r2_score,
        "mean_absolute_percentage_error": sk.mean_absolute_percentage_error,
    }
    for comparison in found:
        assert comparison.champion == pytest.approx(reference[comparison.metric](y, old))
        assert comparison.candidate == pytest.approx(reference[comparison.metric](y, new))
        assert comparison.low < comparison.difference < comparison.high
        assert comparison.method == "paired bootstrap (Poisson)"


# ----------------------------------------------------------------------------- MLflow's evaluator


@pytest.fixture(scope="module")
def evaluation_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local SQLite tracking store for mlflow.models.evaluate's runs; the previous tracking
    URI is put back afterwards."""
    import mlflow

    directory = tmp_path_factory.mktemp("evaluator")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{directory / 'mlflow.db'}")
    # The active experiment is process-wide too: an earlier test may have left one of another
    # store's (its id means nothing here).
    mlflow.set_experiment("evaluator")
    yield directory
    mlflow.set_tracking_uri(previous)


def mlflow_metrics(
    model: Any, frame: Any, model_type: str, config: dict[str, Any], directory: Path
) -> dict[str, float]:
    """What MLflow's default evaluator logs for the model on the frame (target: `label`)."""
    import mlflow
    import mlflow.sklearn

    path = directory / f"model-{len(list(directory.iterdir()))}"
    mlflow.sklearn.save_model(
        model,
        str(path),
        pip_requirements=["scikit-learn"],
        skops_trusted_types=["sklearn.tree._tree.Tree"],  # our own trees
    )
    with mlflow.start_run():
        result = mlflow.models.evaluate(
            str(path),
            frame,
            targets="label",
            model_type=model_type,
            evaluator_config={"log_model_explainability": False, **config},
        )
    return dict(result.metrics)


def outputs(model: Any, features: Any) -> dict[str, Any]:
    """A model's outputs as the gate passes them to compare()."""
    found = {"predictions": model.predict(features)}
    if hasattr(model, "predict_proba"):
        found |= {"probabilities": model.predict_proba(features), "classes": model.classes_}
    return found


def synthetic(rows: int, labels: list[Any] | None) -> Any:
    """Features a, b, c and a label: a class of `labels` (by a noisy score) or a number."""
    import pandas as pd

    rng = np.random.default_rng(21)
    frame = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["a", "b", "c"])
    score = frame.to_numpy() @ np.array([1.0, -0.8, 0.4]) + rng.normal(0, 0.8, rows)
    if labels is None:
        frame["label"] = 5.0 + 2.0 * score  # no zeros, for the percentage error
    else:
        cuts = np.quantile(score, np.linspace(0, 1, len(labels) + 1)[1:-1])
        frame["label"] = np.asarray(labels)[np.searchsorted(cuts, score)]
    return frame


EVALUATED = {
    # A tree (tied probabilities, and zero ones for some true classes: ROC AUC's ties counted
    # half, log loss's clipping) against a logistic regression; labels not 0/1, so MLflow
    # scores the larger, 2.
    "binary": ([1, 2], "classifier", {}),
    "three classes, weighted": (["ant", "bee", "cat"], "classifier", {}),
    "three classes, macro": (["ant", "bee", "cat"], "classifier", {"average": "macro"}),
    "regressor": (None, "regressor", {}),
}


@pytest.mark.parametrize("case", list(EVALUATED))
def test_point_estimates_equal_mlflows_evaluator(case: str, evaluation_store: Path) -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    labels, model_type, config = EVALUATED[case]
    frame = synthetic(300, labels)
    features, truth = frame[["a", "b", "c"]], frame["label"].to_numpy()
    if labels is None:
        models = [DecisionTreeRegressor(max_depth=3), LinearRegression()]
    else:
        models = [DecisionTreeClassifier(max_depth=3, random_state=0), LogisticRegression()]
    # Trained on half the rows: on the rest the tree gives some true classes probability 0.
    champion, candidate = (model.fit(features[:150], truth[:150]) for model in models)
    logged = [
        mlflow_metrics(model, frame, model_type, config, evaluation_store)
        for model in (champion, candidate)
    ]
    metrics = [metric for metric in significance.RESAMPLABLE if metric in logged[0]]
    expected = (
        list(significance.REGRESSION_METRICS)
        if labels is None
        else [*significance.COUNT_METRICS, *significance.PROBABILITY_METRICS]
    )
    assert sorted(metrics) == sorted(expected)
    found = significance.compare(
        truth,
        outputs(champion, features),
        outputs(candidate, features),
        metrics,
        resamples=50,
        average=config.get("average", "weighted"),
    )
    for comparison in found:
        old, new = (metrics_[comparison.metric] for metrics_ in logged)
        assert comparison.champion == pytest.approx(old, rel=1e-9, abs=1e-9), comparison.metric
        assert comparison.candidate == pytest.approx(new, rel=1e-9, abs=1e-9), comparison.metric
    assert found[0].champion != found[0].candidate  # two different models


def test_intervals_are_seeded_and_reproducible() -> None:
    rng = np.random.default_rng(1)
    truth, old, new = classifier_pair(rng, 300, 2, (0.8, 0.8))

    def interval(seed: int) -> tuple[float, float]:
        (found,) = significance.compare(
            truth, {"predictions": old}, {"predictions": new}, ["f1_score"], seed=seed
        )
        return found.low, found.high

    assert interval(5) == interval(5)
    assert interval(5) != interval(6)


def block_weights(rows: int, resamples: int, seed: int) -> np.ndarray:
    """The Poisson weights compare() draws, resamples x rows, as the blocks lay them out."""
    blocks = significance._blocks(rows, resamples, seed)
    return np.vstack(
        [b.weights(rows, np.empty((len(b.resamples), rows), np.uint8)) for b in blocks]
    )


def test_poisson_weights_are_the_inverse_cdf_tables_with_mean_and_variance_one() -> None:
    from scipy.stats import poisson

    # The 16-bit table of Poisson(1)'s inverse CDF at the midpoints, as comparisons.
    table = np.searchsorted(poisson.cdf(np.arange(20), 1), (np.arange(65536) + 0.5) / 65536)
    uniform = np.arange(65536, dtype=np.uint16)
    reached = (uniform[:, None] >= significance.POISSON_STEPS[None, :]).sum(axis=1)
    assert np.array_equal(reached, table)
    counts = np.bincount(table) / 65536
    values = np.arange(len(counts))
    mean = (values * counts).sum()
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert ((values - mean) ** 2 * counts).sum() == pytest.approx(1.0, abs=1e-4)

    weights = block_weights(20_000, 300, seed=3)  # 6 million draws
    assert weights.mean() == pytest.approx(1.0, abs=0.002)
    assert weights.var() == pytest.approx(1.0, abs=0.004)
    for k in range(5):
        assert (weights == k).mean() == pytest.approx(poisson.pmf(k, 1), abs=0.001)


def test_resampled_sums_and_roc_auc_are_those_of_the_drawn_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small blocks and tiles, so that 40 resamples of 500 rows take 2 blocks of 3 tiles each.
    monkeypatch.setattr(significance, "CHUNK_CELLS", 10_000)
    monkeypatch.setattr(significance, "TILE_CELLS", 4096)
    assert len(significance._blocks(500, 40, 0)) == 2
    rng = np.random.default_rng(4)
    rows, resamples = 500, 40
    weights = block_weights(rows, resamples, seed=9).astype(float)
    columns = rng.normal(size=(rows, 3))
    sums = significance._poisson_sums(columns, resamples, seed=9)
    assert np.allclose(sums[0], columns.sum(axis=0))
    assert np.abs(sums[1:] - weights @ columns).max() < 1e-4  # float32 sums of about 30

    truth = rng.integers(0, 3, rows)
    old_p, new_p = (probabilities_for(rng, truth, 3, s) for s in (0.5, 1.5))
    old_p[100:200] = old_p[:100]  # ties, counted half
    labels = np.arange(3)
    for average in ("macro", "weighted"):
        old, new = significance._auc_values(
            old_p, new_p, truth, labels, None, average, resamples, seed=9
        )
        for resample in (0, 1, 17, resamples):
            w = None if resample == 0 else weights[resample - 1]
            for found, p in ((old, old_p), (new, new_p)):
                expected = sk.roc_auc_score(
                    truth, p, multi_class="ovr", average=average, sample_weight=w
                )
                assert found[resample] == pytest.approx(expected, abs=1e-12)
    binary = truth == 2
    old, _ = significance._auc_values(
        old_p[:, :2], old_p[:, :2], binary.astype(int), np.arange(2), None, "weighted", 40, 9
    )
    for resample in (0, 5):
        w = None if resample == 0 else weights[resample - 1]
        expected = sk.roc_auc_score(binary, old_p[:, 1], sample_weight=w)
        assert old[resample] == pytest.approx(expected, abs=1e-12)


def test_intervals_do_not_depend_on_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 2, 3000)
    old_p, new_p = (probabilities_for(rng, truth, 2, s) for s in (0.5, 0.7))
    models = [
        {"probabilities": p, "predictions": p.argmax(axis=1).astype(float)} for p in (old_p, new_p)
    ]
    metrics = ["log_loss", "roc_auc", "root_mean_squared_error", "r2_score"]

    def intervals(cores: int) -> list[tuple[float, float]]:
        monkeypatch.setattr(significance, "_cores", lambda: cores)
        found = significance.compare(truth, *models, metrics, resamples=700, seed=2)
        return [(c.low, c.high) for c in found]

    assert intervals(1) == intervals(2) == intervals(3)


def test_mcnemar_exact_p_value() -> None:
    truth = np.ones(20, dtype=int)
    champion = np.r_[np.zeros(10, dtype=int), np.ones(10, dtype=int)]  # wrong on 10 rows
    candidate = np.ones(20, dtype=int)  # right on all: 10 discordant rows, all its way
    assert significance.mcnemar_exact(truth, champion, candidate) == pytest.approx(2 * 0.5**10)
    assert significance.mcnemar_exact(truth, candidate, candidate) == 1.0


@pytest.mark.parametrize(
    ("successes", "trials"), [(0, 1), (3, 7), (4, 8), (17, 50), (480, 1000), (49_000, 100_000)]
)
def test_the_binomial_test_equals_scipys(successes: int, trials: int) -> None:
    # The suite's own environment has no scipy: the test is written out in numpy.
    from scipy.stats import binomtest

    expected = binomtest(successes, trials, 0.5).pvalue
    assert significance.binomial_two_sided(successes, trials) == pytest.approx(expected, rel=1e-9)


def test_a_metric_it_cannot_resample_is_named_with_the_ones_it_can() -> None:
    with pytest.raises(ConfigError) as raised:
        significance.compare([1], {"predictions": [1]}, {"predictions": [1]}, ["max_error"])
    assert "max_error" in str(raised.value)
    assert "f1_score" in str(raised.value)


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    rate = successes / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half = (
        z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials**2)) / (1 + z * z / trials)
    )
    return centre - half, centre + half


def promotions(skill: tuple[float, float], seeds: int = 400) -> tuple[int, int]:
    """How often a superiority rule at 95 % (lower bound above 0) and a plain comparison
    (estimate above 0) promote the candidate, over independent evaluation sets."""
    significant = plain = 0
    for seed in range(seeds):
        truth, old, new = classifier_pair(np.random.default_rng(seed), 300, 2, skill)
        (found,) = significance.compare(
            truth,
            {"predictions": old},
            {"predictions": new},
            ["accuracy_score"],
            resamples=1000,
            seed=seed,
        )
        significant += found.low > 0
        plain += found.difference > 0
    return significant, plain


def test_an_equally_good_candidate_is_rarely_promoted_and_a_better_one_usually() -> None:
    significant, plain = promotions((0.8, 0.8))
    low, high = wilson(significant, 400)
    print(f"equal models: {significant}/400 promoted at 95 % ({low:.3f}-{high:.3f}); plain {plain}")
    assert high < 0.08, "about 5 % at most"
    assert 0.35 < plain / 400 < 0.6, "a plain comparison promotes about half of the time"
    power, _ = promotions((0.75, 0.85), seeds=100)
    print(f"candidate better by 10 points on 300 rows: power {power}/100")
    assert power > 80


def test_rows_needed_scales_with_the_interval() -> None:
    comparison = significance.Comparison(
        "accuracy_score", 0.80, 0.81, -0.02, 0.04, 0.95, 1000, 0, 300, "paired bootstrap"
    )
    # Half-width 0.03 must shrink below the distance 0.01 to the bound 0: (0.03/0.01)² x 300.
    assert significance.rows_needed(comparison, 0.0) == 2700


# ----------------------------------------------------------------------------- the gate's use


def interval(metric: str, champion: float, candidate: float, low: float, high: float):
    return significance.Comparison(
        metric, champion, candidate, low, high, 0.95, 2000, 0, 400, "paired bootstrap"
    )


def test_superiority_holds_at_the_lower_bound_and_too_few_rows_is_a_verdict() -> None:
    from mlops_actions import gate

    rule = gate.Rule("accuracy_score", "higher", min_improvement=0.0, confidence=0.95)
    clear = gate.check_rule(
        rule,
        0.90,
        0.80,
        has_champion=True,
        interval=interval("accuracy_score", 0.80, 0.90, 0.05, 0.15),
    )
    assert clear.passed
    (check,) = clear.checks
    assert (check.low, check.high) == pytest.approx((0.05, 0.15))
    noisy = gate.check_rule(
        rule,
        0.805,
        0.80,
        has_champion=True,
        interval=interval("accuracy_score", 0.80, 0.805, -0.02, 0.03),
    )
    assert not noisy.passed
    reason = noisy.checks[0].reason
    assert "95% interval -0.02 to +0.03, n=400" in reason
    assert "too small to tell" in reason
    # Half-width 0.025 must shrink to the distance 0.005 from the bound: (0.025/0.005)^2 x 400.
    assert "about 10000 rows would decide" in reason
    worse = gate.check_rule(
        rule,
        0.78,
        0.80,
        has_champion=True,
        interval=interval("accuracy_score", 0.80, 0.78, -0.05, 0.01),
    )
    assert not worse.passed
    assert "too small" not in worse.checks[0].reason


def test_non_inferiority_on_a_lower_is_better_metric_uses_the_regressions_upper_bound() -> None:
    from mlops_actions import gate

    rule = gate.Rule("log_loss", "lower", max_regression=0.05, confidence=0.95)
    # Candidate's log loss higher by 0.01 (a regression), interval of the difference 0 to 0.04.
    within = gate.check_rule(
        rule, 0.31, 0.30, has_champion=True, interval=interval("log_loss", 0.30, 0.31, 0.0, 0.04)
    )
    assert within.passed, within.checks[0].reason
    assert within.checks[0].high == pytest.approx(0.04)
    beyond = gate.check_rule(
        rule, 0.31, 0.30, has_champion=True, interval=interval("log_loss", 0.30, 0.31, -0.02, 0.07)
    )
    assert not beyond.passed
    assert "too small to tell" in beyond.checks[0].reason
    pct = gate.Rule("log_loss", "lower", max_regression_pct=10.0, confidence=0.95)
    result = gate.check_rule(
        pct, 0.31, 0.30, has_champion=True, interval=interval("log_loss", 0.30, 0.31, 0.0, 0.02)
    )
    assert result.passed  # at most 6.7 % worse across the interval


def test_a_rule_with_confidence_and_no_interval_fails_closed() -> None:
    from mlops_actions import gate

    rule = gate.Rule("f1_score", "higher", threshold=0.5, min_improvement=0.0, confidence=0.95)
    decision = gate.decide([rule], {"f1_score": 0.9}, {"f1_score": 0.8})
    assert not decision.passed
    assert decision.reasons == ("f1_score: no paired interval of f1_score could be computed",)
    # With the reason it could not, as the gate passes it on.
    decision = gate.decide(
        [rule],
        {"f1_score": 0.9},
        {"f1_score": 0.8},
        unavailable={"f1_score": "f1_score needs both models' predictions"},
    )
    assert decision.reasons == (
        "f1_score: no paired interval of f1_score could be computed: f1_score needs both "
        "models' predictions",
    )


def test_paired_intervals_leave_out_what_the_outputs_cannot_give() -> None:
    from mlops_actions import evaluation, gate

    rng = np.random.default_rng(5)
    truth, old, new = classifier_pair(rng, 200, 2, (0.7, 0.8))
    metrics = evaluation.Metrics(
        candidate={},
        champion={},
        predictions=evaluation.Predictions(
            truth,
            {"predictions": new},
            {"predictions": old},  # no probabilities
        ),
    )
    rules = [
        gate.Rule("accuracy_score", "higher", min_improvement=0.0, confidence=0.9),
        gate.Rule("log_loss", "lower", max_regression=0.0, confidence=0.9),
        gate.Rule("f1_score", "higher", threshold=0.5),  # no confidence: no interval
    ]
    found = evaluation.paired_intervals(rules, metrics, resamples=300, seed=1, average="macro")
    assert list(found.found) == ["accuracy_score"]
    assert found.found["accuracy_score"].confidence == 0.9
    assert list(found.unavailable) == ["log_loss"]
    assert "probabilities" in found.unavailable["log_loss"]
