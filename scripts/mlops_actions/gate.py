"""The evaluation gate's decision: pure functions from rules and metric values to a verdict.

A rule names a metric, which way is better, and up to five bounds. Every bound of every rule is
checked and reported, not only the first failure. Comparisons at a bound are inclusive (a tie
passes), with a relative tolerance of 1e-9 so that floating-point noise such as
0.95 - 0.90 = 0.04999999999999993 does not turn a tie into a failure.

Fail closed: a metric that is missing, NaN or infinite fails every bound that needs it.

With a `confidence`, a rule's bounds relative to the champion are checked on the paired
interval of the difference (significance.py) rather than on the two point estimates: an
improvement must hold at the interval's lower bound (superiority), a regression must stay
within its limit at the upper bound (non-inferiority). An interval too wide to decide either
way fails, and says how many rows would decide at the observed variance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigError

if TYPE_CHECKING:
    from .significance import Comparison

Direction = Literal["higher", "lower"]
FirstModelPolicy = Literal["pass", "fail"]

# Relative tolerance of the inclusive comparisons, and the absolute one for bounds near zero.
REL_TOLERANCE = 1e-9
ABS_TOLERANCE = 1e-12

# Bound name -> (needs a champion, unit). Order is the order of the report.
BOUNDS: dict[str, tuple[bool, str]] = {
    "threshold": (False, ""),
    "min_improvement": (True, ""),
    "min_improvement_pct": (True, "%"),
    "max_regression": (True, ""),
    "max_regression_pct": (True, "%"),
}


@dataclass(frozen=True)
class Rule:
    metric: str
    direction: Direction
    threshold: float | None = None
    min_improvement: float | None = None
    min_improvement_pct: float | None = None
    max_regression: float | None = None
    max_regression_pct: float | None = None
    confidence: float | None = None  # paired interval for the champion bounds (evaluate mode)

    def bounds(self) -> list[tuple[str, float]]:
        return [(name, value) for name in BOUNDS if (value := getattr(self, name)) is not None]

    def describe(self) -> str:
        """The rule in words, e.g. 'accuracy ≥ 0.9, at least +0.01 over the champion'."""
        better = "≥" if self.direction == "higher" else "≤"
        words = []
        for name, value in self.bounds():
            unit = BOUNDS[name][1]
            if name == "threshold":
                words.append(f"{better} {value:g}")
            elif name.startswith("min_improvement"):
                words.append(f"at least {value:+g}{unit} better than the champion")
            else:
                words.append(f"at most {value:g}{unit} worse than the champion")
        text = f"{self.direction} is better; " + ", ".join(words)
        if self.confidence is not None:
            text += f"; at {self.confidence:.0%} confidence"
        return text


@dataclass(frozen=True)
class Check:
    """One bound of one rule."""

    bound: str  # a key of BOUNDS
    limit: float
    actual: float | None  # the value compared with the limit (metric, change or percentage)
    passed: bool | None  # None: not applicable (no champion yet, first model allowed)
    reason: str
    low: float | None = None  # with a confidence: the interval of `actual`
    high: float | None = None


@dataclass(frozen=True)
class RuleResult:
    metric: str
    direction: Direction
    candidate: float | None
    champion: float | None
    delta: float | None  # candidate - champion, in the metric's own sign
    improvement: float | None  # positive when the candidate is better, whatever the direction
    improvement_pct: float | None
    checks: tuple[Check, ...]
    description: str
    confidence: float | None = None
    significance: Comparison | None = None  # the paired interval and test, when computed

    @property
    def passed(self) -> bool:
        return all(check.passed is not False for check in self.checks)


@dataclass(frozen=True)
class Decision:
    passed: bool  # the gate's verdict, whatever the mode
    advisory: bool  # report only: the step succeeds even when the verdict is "rejected"
    first_model: bool  # there was no champion to compare with
    first_model_policy: FirstModelPolicy
    rules: tuple[RuleResult, ...]
    reasons: tuple[str, ...] = field(default=())

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "rejected"

    @property
    def failed_rules(self) -> list[RuleResult]:
        return [rule for rule in self.rules if not rule.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN and infinities become null (the reasons say what they were)."""
        data = asdict(self)
        data["verdict"] = self.verdict
        for rule, result in zip(data["rules"], self.rules, strict=True):
            rule["passed"] = result.passed
            if result.significance is not None:
                rule["significance"]["difference"] = result.significance.difference
        return _json_safe(data)  # type: ignore[no-any-return]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


# ----------------------------------------------------------------------------- parsing


def parse_rules(
    raw: Sequence[Mapping[str, Any]] | None, default_confidence: float | None = None
) -> list[Rule]:
    """Rules from the schema-validated `gate.rules` list; an empty gate is an error.

    A rule's `confidence` wins over the gate's `default_confidence`; `confidence: false` keeps
    a rule on point estimates whatever the default.
    """
    if not raw:
        raise ConfigError(
            "gate.rules is empty: a gate with no rules would pass every model",
            "add at least one rule under gate.rules in mlops.yaml, e.g. "
            "{metric: accuracy, direction: higher, threshold: 0.9}, or use the `rules` input",
        )
    rules = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        where = f"gate.rules[{index}]"
        metric = str(item["metric"])
        if metric in seen:
            raise ConfigError(
                f"{where}: metric '{metric}' has a rule already",
                "merge the bounds into one rule per metric",
            )
        seen.add(metric)
        bounds = {name: _number(item.get(name), f"{where}.{name}") for name in BOUNDS}
        confidence = item.get("confidence", default_confidence)
        rules.append(
            Rule(
                metric=metric,
                direction=item["direction"],
                confidence=_confidence(confidence, f"{where}.confidence"),
                **bounds,
            )
        )
    return rules


def _confidence(value: Any, where: str) -> float | None:
    if value is False or value is None:
        return None
    number = _number(value, where)
    if number is None or not 0.5 <= number < 1:
        raise ConfigError(
            f"{where} must be at least 0.5 and below 1, got {value!r}",
            "use e.g. 0.95 for a 95 % interval, or false for point estimates",
        )
    return number


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- deciding


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def at_least(value: float, limit: float) -> bool:
    """value >= limit, where a tie within floating-point noise counts as equal."""
    return value >= limit or math.isclose(
        value, limit, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE
    )


def relative_change(improvement: float, champion: float) -> float:
    """Improvement in percent of the champion's magnitude; ±inf when the champion is 0."""
    if champion == 0:
        return 0.0 if improvement == 0 else math.copysign(math.inf, improvement)
    return improvement / abs(champion) * 100.0


def _describe_value(value: float | None) -> str:
    if value is None:
        return "missing"
    return "NaN" if math.isnan(value) else f"{value:g}"


def check_rule(
    rule: Rule,
    candidate: float | None,
    champion: float | None,
    *,
    has_champion: bool,
    interval: Comparison | None = None,
    unavailable: str = "",
) -> RuleResult:
    sign = 1.0 if rule.direction == "higher" else -1.0
    delta = improvement = improvement_pct = None
    if candidate is not None and champion is not None and _finite(candidate) and _finite(champion):
        delta = candidate - champion
        improvement = sign * delta
        improvement_pct = relative_change(improvement, champion)
    comparable = delta is not None

    checks = []
    for name, limit in rule.bounds():
        needs_champion = BOUNDS[name][0]
        if not _finite(candidate):
            checks.append(
                Check(
                    name,
                    limit,
                    None,
                    False,
                    f"candidate's {rule.metric} is {_describe_value(candidate)}",
                )
            )
        elif needs_champion and not has_champion:
            checks.append(Check(name, limit, None, None, "no champion to compare with"))
        elif needs_champion and not comparable:
            checks.append(
                Check(
                    name,
                    limit,
                    None,
                    False,
                    f"champion's {rule.metric} is {_describe_value(champion)}",
                )
            )
        elif needs_champion and rule.confidence is not None:
            assert champion is not None
            checks.append(_check_interval(rule, name, limit, champion, interval, unavailable))
        else:
            checks.append(_check_bound(rule, name, limit, candidate, improvement, improvement_pct))
    return RuleResult(
        metric=rule.metric,
        direction=rule.direction,
        candidate=candidate,
        champion=champion,
        delta=delta,
        improvement=improvement,
        improvement_pct=improvement_pct,
        checks=tuple(checks),
        description=rule.describe(),
        confidence=rule.confidence,
        significance=interval if rule.confidence is not None else None,
    )


def _check_bound(
    rule: Rule,
    name: str,
    limit: float,
    candidate: float | None,
    improvement: float | None,
    improvement_pct: float | None,
) -> Check:
    assert candidate is not None
    unit = BOUNDS[name][1]
    if name == "threshold":
        ok = (
            at_least(candidate, limit)
            if rule.direction == "higher"
            else at_least(-candidate, -limit)
        )
        relation = ("≥" if ok else "<") if rule.direction == "higher" else ("≤" if ok else ">")
        return Check(name, limit, candidate, ok, f"{candidate:g} {relation} {limit:g}")
    actual = improvement_pct if unit == "%" else improvement
    assert actual is not None
    if name.startswith("min_improvement"):
        ok = at_least(actual, limit)
        text = f"improvement {actual:+g}{unit} {'≥' if ok else '<'} {limit:+g}{unit}"
    else:
        regression = -actual
        ok = at_least(limit, regression)
        text = f"regression {max(regression, 0.0):g}{unit} {'≤' if ok else '>'} {limit:g}{unit}"
        actual = regression
    return Check(name, limit, actual, ok, text)


def _check_interval(
    rule: Rule,
    name: str,
    limit: float,
    champion: float,
    interval: Comparison | None,
    unavailable: str = "",
) -> Check:
    """A champion bound at the edge of the paired interval that is least favourable to it."""
    from .significance import rows_needed

    unit = BOUNDS[name][1]
    if interval is None or not (_finite(interval.low) and _finite(interval.high)):
        why = f": {unavailable}" if unavailable else ""
        return Check(
            name, limit, None, False, f"no paired interval of {rule.metric} could be computed{why}"
        )
    sign = 1.0 if rule.direction == "higher" else -1.0
    scale = 100.0 / abs(champion) if unit == "%" else 1.0
    if unit == "%" and champion == 0:
        return Check(name, limit, None, False, f"champion's {rule.metric} is 0: no percentage")
    # The improvement's interval (positive = candidate better), in the bound's unit.
    low, high = sorted((sign * interval.low * scale, sign * interval.high * scale))
    estimate = sign * interval.difference * scale
    level = (
        f"{interval.confidence:.0%} interval {low:+g}{unit} to {high:+g}{unit}, n={interval.rows}"
    )
    improving = name.startswith("min_improvement")
    # Superiority: the whole interval at or above +limit; non-inferiority: at or above -limit.
    floor = limit if improving else -limit
    ok = at_least(low, floor)
    word = "improvement" if improving else "regression"
    shown = estimate if improving else -estimate
    if improving:
        text = (
            f"improvement {estimate:+g}{unit} ({level}) {'≥' if ok else 'not ≥'} {limit:+g}{unit}"
        )
    else:
        text = f"regression {-estimate:g}{unit} ({level}) {'≤' if ok else 'not ≤'} {limit:g}{unit}"
    if not ok and at_least(estimate, floor):
        needed = rows_needed(interval, sign * floor / scale)
        more = f"; about {needed} rows would decide at this variance" if needed else ""
        text += (
            f": the {word} holds at the estimate but not across the interval, the evaluation "
            f"set is too small to tell{more}"
        )
    actual_low, actual_high = (low, high) if improving else (-high, -low)
    return Check(name, limit, shown, ok, text, actual_low, actual_high)


def decide(
    rules: Sequence[Rule],
    candidate_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    *,
    first_model_policy: FirstModelPolicy = "pass",
    advisory: bool = False,
    intervals: Mapping[str, Comparison] | None = None,
    unavailable: Mapping[str, str] | None = None,
) -> Decision:
    """The verdict: every rule passes, and a first model passes only if the policy allows it.

    `champion_metrics` is None when no model holds the champion alias yet. Then bounds relative
    to the champion do not apply, absolute thresholds still do, and `first_model_policy`
    decides whether a first model may pass at all.
    """
    has_champion = champion_metrics is not None
    champion = champion_metrics or {}
    results = tuple(
        check_rule(
            rule,
            candidate_metrics.get(rule.metric),
            champion.get(rule.metric),
            has_champion=has_champion,
            interval=(intervals or {}).get(rule.metric),
            unavailable=(unavailable or {}).get(rule.metric, ""),
        )
        for rule in rules
    )
    reasons = [
        f"{result.metric}: {check.reason}"
        for result in results
        for check in result.checks
        if check.passed is False
    ]
    if not has_champion and first_model_policy == "fail":
        reasons.insert(0, "no champion yet and gate.first_model is 'fail'")
    return Decision(
        passed=not reasons,
        advisory=advisory,
        first_model=not has_champion,
        first_model_policy=first_model_policy,
        rules=results,
        reasons=tuple(reasons),
    )
