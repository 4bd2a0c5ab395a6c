"""The gate's decision table: directions, ties, tolerances, relative and absolute forms,
first models, and missing / NaN / infinite metrics."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import pytest

from mlops_actions import gate, report, tracking
from mlops_actions.errors import ConfigError

NAN, INF = math.nan, math.inf


def rule(metric: str = "m", direction: str = "higher", **bounds: float) -> gate.Rule:
    return gate.parse_rules([{"metric": metric, "direction": direction, **bounds}])[0]


# (direction, bounds, candidate, champion, expected verdict)
TABLE: list[tuple[str, dict[str, float], float | None, float | None, bool]] = [
    # absolute thresholds, inclusive at the bound, both directions
    ("higher", {"threshold": 0.9}, 0.91, None, True),
    ("higher", {"threshold": 0.9}, 0.9, None, True),  # tie passes
    ("higher", {"threshold": 0.9}, 0.8999, None, False),
    ("lower", {"threshold": 5.0}, 4.0, None, True),
    ("lower", {"threshold": 5.0}, 5.0, None, True),  # tie passes
    ("lower", {"threshold": 5.0}, 5.0001, None, False),
    # improvement over the champion: higher is better
    ("higher", {"min_improvement": 0.0}, 0.95, 0.93, True),  # improvement passes
    ("higher", {"min_improvement": 0.0}, 0.93, 0.93, True),  # tie = "no worse" passes
    ("higher", {"min_improvement": 0.0}, 0.92, 0.93, False),  # regression fails
    ("higher", {"min_improvement": 0.05}, 0.95, 0.90, True),  # 0.95-0.90 is 0.04999…: a tie
    ("higher", {"min_improvement": 0.05}, 0.949, 0.90, False),
    # improvement over the champion: lower is better (the inverted case other tools get wrong)
    ("lower", {"min_improvement": 0.0}, 90.0, 100.0, True),  # lower latency passes
    ("lower", {"min_improvement": 0.0}, 110.0, 100.0, False),  # higher latency fails
    ("lower", {"min_improvement": 10.0}, 90.0, 100.0, True),  # exactly 10 better: tie
    ("lower", {"min_improvement": 10.0}, 91.0, 100.0, False),
    # allowed regression (tolerance), absolute
    ("higher", {"max_regression": 0.02}, 0.91, 0.93, True),  # exactly 0.02 worse: tie
    ("higher", {"max_regression": 0.02}, 0.90, 0.93, False),
    ("higher", {"max_regression": 0.0}, 0.99, 0.93, True),  # an improvement is no regression
    ("lower", {"max_regression": 5.0}, 105.0, 100.0, True),
    ("lower", {"max_regression": 5.0}, 105.5, 100.0, False),
    ("lower", {"max_regression": 5.0}, 50.0, 100.0, True),
    # relative forms, in percent of the champion
    ("higher", {"min_improvement_pct": 1.0}, 0.909, 0.9, True),  # +1 %: tie
    ("higher", {"min_improvement_pct": 1.0}, 0.905, 0.9, False),
    ("lower", {"min_improvement_pct": 10.0}, 90.0, 100.0, True),
    ("lower", {"min_improvement_pct": 10.0}, 95.0, 100.0, False),
    ("lower", {"max_regression_pct": 10.0}, 110.0, 100.0, True),  # +10 %: tie
    ("lower", {"max_regression_pct": 10.0}, 111.0, 100.0, False),
    ("higher", {"max_regression_pct": 5.0}, 0.95, 1.0, True),
    ("higher", {"max_regression_pct": 5.0}, 0.94, 1.0, False),
    ("higher", {"max_regression_pct": 5.0}, -1.04, -1.0, True),  # negative champion: 4 % worse
    ("higher", {"max_regression_pct": 5.0}, -1.06, -1.0, False),
    # a champion at zero: any improvement is infinite, any regression too
    ("lower", {"min_improvement_pct": 5.0}, 0.0, 0.0, False),
    ("higher", {"min_improvement_pct": 5.0}, 0.1, 0.0, True),
    ("lower", {"max_regression_pct": 5.0}, 0.1, 0.0, False),
    # missing, NaN and infinite metrics fail closed
    ("higher", {"threshold": 0.5}, None, None, False),
    ("higher", {"threshold": 0.5}, NAN, None, False),
    ("higher", {"threshold": 0.5}, INF, None, False),
    ("lower", {"threshold": 0.5}, -INF, None, False),
    ("higher", {"min_improvement": 0.0}, 0.9, NAN, False),  # the champion's NaN too
    ("higher", {"max_regression": 1.0}, 0.9, INF, False),
]


@pytest.mark.parametrize(("direction", "bounds", "candidate", "champion", "passes"), TABLE)
def test_decision_table(
    direction: str,
    bounds: dict[str, float],
    candidate: float | None,
    champion: float | None,
    passes: bool,
) -> None:
    rules = [rule("m", direction, **bounds)]
    candidate_metrics = {} if candidate is None else {"m": candidate}
    # A champion exists in every row that gives it a value (NaN included); None: no champion
    # for threshold rows, but a champion without the metric for comparison rows.
    needs_champion = any(name != "threshold" for name in bounds)
    champion_metrics: dict[str, float] | None
    champion_metrics = {"m": champion} if champion is not None else {} if needs_champion else None
    decision = gate.decide(rules, candidate_metrics, champion_metrics)
    assert decision.passed is passes, decision
    result = decision.rules[0]
    assert result.passed is passes
    if not passes:
        assert decision.reasons, "a rejection always says why"
        assert decision.reasons[0].startswith("m: ")


def test_missing_champion_metric_fails_with_a_reason() -> None:
    decision = gate.decide([rule("m", min_improvement=0.0)], {"m": 0.9}, {"other": 1.0})
    assert not decision.passed
    assert decision.reasons == ("m: champion's m is missing",)


@pytest.mark.parametrize(("value", "word"), [(None, "missing"), (NAN, "NaN"), (INF, "inf")])
def test_bad_candidate_metric_is_named(value: float | None, word: str) -> None:
    metrics = {} if value is None else {"m": value}
    decision = gate.decide([rule("m", threshold=0.5)], metrics, None)
    assert decision.reasons == (f"m: candidate's m is {word}",)


# What MLflow's SQL stores (SQLite, PostgreSQL) hand back for a metric logged as ±inf.
STORED_INF = sys.float_info.max


def test_the_stored_stand_in_for_infinity_is_read_as_infinity() -> None:
    read = tracking.metric_value
    assert (read(STORED_INF), read(-STORED_INF)) == (INF, -INF)
    assert (read("inf"), read("-inf"), math.isnan(read("nan"))) == (INF, -INF, True)  # worker
    assert (read(1e308), read(0.5), read(3)) == (1e308, 0.5, 3.0)  # large is not infinite


def test_stored_infinities_fail_every_rule_that_reads_them() -> None:
    rules = [rule("acc", threshold=0.5), rule("rmse", "lower", threshold=5, min_improvement=0.0)]
    stored = {
        "acc": tracking.metric_value(STORED_INF),
        "rmse": tracking.metric_value(-STORED_INF),
    }
    decision = gate.decide(rules, stored, None)
    assert not decision.passed
    assert decision.reasons == (
        "acc: candidate's acc is inf",
        "rmse: candidate's rmse is -inf",  # the threshold
        "rmse: candidate's rmse is -inf",  # and the comparison
    )

    champion = {"acc": 0.9, "rmse": tracking.metric_value(STORED_INF)}
    decision = gate.decide(rules, {"acc": 0.9, "rmse": 1.0}, champion)
    assert decision.reasons == ("rmse: champion's rmse is inf",)


def test_first_model_policy() -> None:
    rules = [rule("acc", threshold=0.9, min_improvement=0.0)]
    allowed = gate.decide(rules, {"acc": 0.95}, None, first_model_policy="pass")
    assert allowed.passed
    assert allowed.first_model
    checks = {c.bound: c.passed for c in allowed.rules[0].checks}
    assert checks == {"threshold": True, "min_improvement": None}  # not applicable
    # thresholds still apply to a first model
    below = gate.decide(rules, {"acc": 0.85}, None, first_model_policy="pass")
    assert not below.passed
    refused = gate.decide(rules, {"acc": 0.95}, None, first_model_policy="fail")
    assert not refused.passed
    assert refused.reasons[0] == "no champion yet and gate.first_model is 'fail'"


def test_every_rule_is_reported_not_only_the_first_failure() -> None:
    rules = [
        rule("acc", "higher", threshold=0.9),
        rule("latency_ms", "lower", max_regression=5.0),
        rule("f1", "higher", min_improvement=0.0),
    ]
    decision = gate.decide(
        rules, {"acc": 0.8, "latency_ms": 120.0, "f1": 0.9}, {"acc": 0.9, "latency_ms": 100.0}
    )
    assert [r.passed for r in decision.rules] == [False, False, False]
    assert len(decision.reasons) == 3
    assert "regression 20 > 5" in decision.reasons[1]


def test_improvement_and_deltas_follow_the_direction() -> None:
    rules = [rule("latency_ms", "lower", max_regression=5.0), rule("acc", min_improvement=0.0)]
    decision = gate.decide(
        rules, {"latency_ms": 80.0, "acc": 0.9}, {"latency_ms": 100.0, "acc": 0.8}
    )
    latency, accuracy = decision.rules
    assert latency.delta == -20.0
    assert latency.improvement == 20.0
    assert latency.improvement_pct == pytest.approx(20.0)
    assert accuracy.delta == pytest.approx(0.1)
    assert accuracy.improvement == pytest.approx(0.1)
    assert decision.passed


def test_advisory_keeps_the_verdict() -> None:
    decision = gate.decide([rule("acc", threshold=0.9)], {"acc": 0.5}, None, advisory=True)
    assert not decision.passed
    assert decision.advisory
    assert report.gate_title(decision).startswith("advisory, would be rejected")


def test_decision_json_has_no_nan() -> None:
    decision = gate.decide([rule("acc", threshold=0.9)], {"acc": NAN}, None)
    text = json.dumps(decision.to_dict(), allow_nan=False)
    assert json.loads(text)["rules"][0]["candidate"] is None


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([], "gate.rules is empty"),
        (
            [{"metric": "a", "direction": "higher", "threshold": 1}] * 2,
            "metric 'a' has a rule already",
        ),
    ],
)
def test_bad_rules(rules: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        gate.parse_rules(rules)


def test_report_marks_rules_and_charts_history() -> None:
    rules = [rule("acc", threshold=0.9, min_improvement=0.0), rule("loss", "lower", threshold=1)]
    decision = gate.decide(rules, {"acc": 0.95, "loss": 2.0}, {"acc": 0.93, "loss": 0.5})
    facts = report.GateFacts(
        model_name="iris",
        alias="champion",
        compare="logged",
        candidate="abc",
        champion_version="3",
        champion_run_url="http://mlflow/#/experiments/1/runs/x",
        primary_metric="acc",
        history=(("v1", 0.91), ("v2", 0.92), ("v3", 0.93)),
    )
    text = report.gate_report(decision, facts)
    assert text.startswith("### ❌ Gate rejected `iris`")
    assert "[`iris` v3](http://mlflow/#/experiments/1/runs/x)" in text
    assert "| ✅ | `acc` (higher is better) | 0.95 | 0.93 | +0.02 (better, +2.15 %) |" in text
    assert "| ❌ | `loss` (lower is better) | 2 | 0.5 |" in text
    assert "- loss: 2 > 1" in text
    assert '  x-axis ["v1", "v2", "v3", "candidate"]' in text
    assert "  bar [0.91, 0.92, 0.93, 0.95]" in text
    assert "  line [0.9, 0.9, 0.9, 0.9]" in text


def test_history_chart_names_the_versions_it_cannot_draw() -> None:
    decision = gate.decide([rule("rmse", "lower", threshold=5)], {"rmse": 1.5}, {"rmse": 2.0})
    facts = report.GateFacts(
        model_name="housing",
        alias="champion",
        compare="logged",
        candidate="abc",
        champion_version="3",
        primary_metric="rmse",
        history=(("v1", 2.5), ("v2", tracking.metric_value(STORED_INF)), ("v3", 2.0)),
    )
    text = report.gate_report(decision, facts)
    assert '  x-axis ["v1", "v3", "candidate"]' in text
    assert "  bar [2.5, 2, 1.5]" in text
    assert "Not charted (not a finite number): v2 (∞)." in text


def test_a_rules_confidence_wins_over_the_gates_and_false_opts_out() -> None:
    raw = [
        {"metric": "accuracy_score", "direction": "higher", "min_improvement": 0},
        {"metric": "log_loss", "direction": "lower", "max_regression": 0.1, "confidence": 0.99},
        {"metric": "custom", "direction": "higher", "threshold": 1, "confidence": False},
    ]
    assert [rule.confidence for rule in gate.parse_rules(raw)] == [None, 0.99, None]
    assert [rule.confidence for rule in gate.parse_rules(raw, 0.9)] == [0.9, 0.99, None]
    assert gate.parse_rules(raw, 0.9)[0].describe().endswith("; at 90% confidence")
    for bad in (1.0, 0.4, float("nan"), True):
        with pytest.raises(ConfigError, match=r"gate.rules\[0\].confidence"):
            gate.parse_rules([{**raw[0], "confidence": bad}])
