"""Markdown for the job summary: pure functions from results to text."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .data import PullResult
from .gate import Decision, RuleResult
from .train import TrainResult

STATUS_MARK = {"FINISHED": "✅", "FAILED": "❌", "KILLED": "⏹️"}


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"  # pragma: no cover - unreachable


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def dvc_pull_summary(result: PullResult) -> str:
    lines = [
        "### 📦 dvc-pull",
        "",
        f"Pulled from remote `{result.remote}`: **{result.files_fetched}** file(s) fetched, "
        f"{human_bytes(result.bytes_fetched)} downloaded "
        "(0 when the DVC cache already had everything).",
        "",
        f"Data fingerprint: `{result.fingerprint}`",
        "",
        "| path | hash | size | files |",
        "|---|---|---:|---:|",
    ]
    for entry in result.entries[:50]:
        size = human_bytes(entry.size) if entry.size is not None else ""
        lines.append(
            f"| `{_cell(entry.path)}` | `{entry.hash[:20]}` | {size} | {entry.nfiles or 1} |"
        )
    if len(result.entries) > 50:
        lines.append(f"| … {len(result.entries) - 50} more | | | |")
    return "\n".join(lines)


def train_summary(result: TrainResult, experiment: str, tracking_display: str) -> str:
    mark = STATUS_MARK.get(result.status, "")
    run = f"[{result.run_id}]({result.run_url})" if result.run_url else f"`{result.run_id}`"
    lines = [
        f"### {mark} train: {result.status.lower()}",
        "",
        f"MLflow run {run} in experiment `{_cell(experiment)}` on `{tracking_display}`"
        + (f", exit status {result.exit_code}" if result.exit_code else "")
        + ".",
        "",
        f"Model: `{result.model_uri}`" if result.model_uri else "The run logged no model.",
    ]
    if result.metrics:
        lines += ["", "| metric | value |", "|---|---:|"]
        lines += [f"| {_cell(k)} | {v:.6g} |" for k, v in sorted(result.metrics.items())]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class GateFacts:
    """What the gate report says besides the decision itself: names and links."""

    model_name: str
    alias: str
    compare: str  # logged | evaluate
    candidate: str  # as given (run id or model URI)
    candidate_run_url: str = ""
    champion_version: str = ""  # '' when there is no champion
    champion_run_url: str = ""
    workflow_run_url: str = ""
    primary_metric: str = ""
    history: tuple[tuple[str, float], ...] = ()  # (version label, value), oldest first


def number(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.5g}"


def _delta(rule: RuleResult) -> str:
    if rule.delta is None or rule.improvement is None:
        return "—"
    if rule.improvement == 0:
        return "±0 (tie)"
    trend = "better" if rule.improvement > 0 else "worse"
    pct = f", {rule.improvement_pct:+.2f} %" if rule.improvement_pct is not None else ""
    if rule.improvement_pct is not None and math.isinf(rule.improvement_pct):
        pct = ""
    return f"{rule.delta:+.4g} ({trend}{pct})"


def _mark(passed: bool | None) -> str:
    return {True: "✅", False: "❌", None: "⚪"}[passed]


def gate_title(decision: Decision) -> str:
    """One line: the check run's title and the commit status's description."""
    total = len(decision.rules)
    failed = len(decision.failed_rules)
    if decision.passed:
        head = f"passed: {total} of {total} rules"
    elif failed:
        head = f"rejected: {failed} of {total} rules failed"
    else:
        head = "rejected: " + decision.reasons[0]
    if decision.first_model:
        head += " (first model)"
    return f"advisory, would be {head}" if decision.advisory and not decision.passed else head


def _link(text: str, url: str) -> str:
    return f"[{text}]({url})" if url else text


def history_chart(facts: GateFacts, decision: Decision) -> str:
    """A mermaid bar chart of the primary metric across champion versions and the candidate.

    GitHub renders mermaid itself, so no image leaves the repository.
    """
    rule = next((r for r in decision.rules if r.metric == facts.primary_metric), None)
    points = [(label, value) for label, value in facts.history if math.isfinite(value)]
    # An infinite or NaN value has no bar; it is named below the chart instead.
    left_out = [f"{label} ({number(v)})" for label, v in facts.history if not math.isfinite(v)]
    if rule is not None and rule.candidate is not None and math.isfinite(rule.candidate):
        points.append(("candidate", rule.candidate))
    if len(points) < 2 or rule is None:
        return ""
    threshold = next((c.limit for c in rule.checks if c.bound == "threshold"), None)
    values = [value for _, value in points] + ([threshold] if threshold is not None else [])
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.05 or 1.0
    labels = ", ".join(json.dumps(label) for label, _ in points)
    lines = [
        "```mermaid",
        "xychart-beta",
        f'  title "{facts.primary_metric}: recent champion versions and the candidate"',
        f"  x-axis [{labels}]",
        f'  y-axis "{facts.primary_metric}" {low - pad:.6g} --> {high + pad:.6g}',
        "  bar [" + ", ".join(f"{value:.6g}" for _, value in points) + "]",
    ]
    if threshold is not None:
        lines.append("  line [" + ", ".join(f"{threshold:.6g}" for _ in points) + "]")
    lines.append("```")
    if threshold is not None:
        lines.append(f"Bars: {facts.primary_metric}; line: the threshold, {threshold:g}.")
    if left_out:
        lines.append(f"Not charted (not a finite number): {', '.join(left_out)}.")
    return "\n".join(lines)


def gate_report(decision: Decision, facts: GateFacts) -> str:
    """The Markdown report: job summary, PR comment and check-run text all use it."""
    if decision.passed:
        head = f"### ✅ Gate passed: `{facts.model_name}`"
    elif decision.advisory:
        head = f"### ⚠️ Gate would reject `{facts.model_name}` (advisory mode: not enforced)"
    else:
        head = f"### ❌ Gate rejected `{facts.model_name}`"
    how = (
        "metrics logged on the runs"
        if facts.compare == "logged"
        else "both models evaluated on the same dataset"
    )
    candidate = _link(f"`{_cell(facts.candidate)}`", facts.candidate_run_url)
    if facts.champion_version:
        champion = _link(f"`{facts.model_name}` v{facts.champion_version}", facts.champion_run_url)
        against = f"against the champion {champion} (`@{facts.alias}`)"
    else:
        policy = decision.first_model_policy
        against = f"with no champion yet (no version holds `@{facts.alias}`; first_model: {policy})"
    lines = [
        head,
        "",
        f"Candidate {candidate} {against}, compared on {how}.",
        "",
        "| | metric | candidate | champion | change | checks |",
        "|---|---|---:|---:|---|---|",
    ]
    for rule in decision.rules:
        checks = " · ".join(f"{_mark(c.passed)} {_cell(c.reason)}" for c in rule.checks)
        lines.append(
            f"| {_mark(rule.passed)} | `{_cell(rule.metric)}` ({rule.direction} is better) "
            f"| {number(rule.candidate)} | {number(rule.champion)} | {_delta(rule)} | {checks} |"
        )
    intervals = significance_table(decision)
    if intervals:
        lines += ["", intervals]
    if not decision.passed:
        lines += ["", "**Why:**", ""] + [f"- {_cell(reason)}" for reason in decision.reasons]
    chart = history_chart(facts, decision)
    if chart:
        lines += ["", chart]
    lines += [
        "",
        "<sub>Bounds are inclusive: a tie at a bound passes. ⚪ means not applicable "
        "(no champion to compare with)."
        + (
            f" Decided in {_link('this workflow run', facts.workflow_run_url)}."
            if facts.workflow_run_url
            else ""
        )
        + "</sub>",
    ]
    return "\n".join(lines)


def significance_table(decision: Decision) -> str:
    """The paired intervals behind the rules with a confidence: estimate, interval, p-value,
    rows, resamples, seed and method, so that anyone can reproduce the verdict."""
    rows = [rule for rule in decision.rules if rule.significance is not None]
    if not rows:
        return ""
    lines = [
        "**Is the difference real?** Paired bootstrap of candidate - champion on the same rows:",
        "",
        "| metric | difference | interval | p-value | n | resamples | seed | method |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for rule in rows:
        found = rule.significance
        assert found is not None
        p_value = (
            f"{found.p_value:.3g} ({found.p_value_method})" if found.p_value is not None else "—"
        )
        lines.append(
            f"| `{_cell(rule.metric)}` | {found.difference:+.4g} "
            f"| {found.confidence:.0%}: {found.low:+.4g} to {found.high:+.4g} | {p_value} "
            f"| {found.rows} | {found.resamples} | {found.seed} | {found.method} |"
        )
    return "\n".join(lines)


def move_summary(result: Any, reason: str, failed: str = "") -> str:
    """Job summary of an alias move, with the alias's recent history.

    `failed` names the follow-up that failed after the alias moved: the summary says the alias
    moved, what is left, and that a re-run finishes it (not "not moved").
    """
    mark = "↩️" if reason == "rollback" else "🚀"
    lines = [
        f"### {mark} {reason}: `{result.model_name}@{result.alias}`"
        + (" — moved, follow-up failed" if failed else ""),
        "",
        result.message + ".",
    ]
    if failed:
        lines += [
            "",
            f"> [!WARNING]\n> The alias moved, but {failed} failed. Deployments that follow "
            f"`{result.alias_uri}` see version {result.version} already. Re-run the same "
            "promotion to finish what is left; it is done once.",
        ]
    lines += ["", f"Version URI `{result.version_uri}`; alias URI `{result.alias_uri}`."]
    if result.history:
        lines += [
            "",
            "| # | when | reason | from | to | workflow run |",
            "|---:|---|---|---:|---:|---|",
        ]
        for move in result.history[-10:]:
            run = f"[run]({move.workflow_run})" if move.workflow_run else ""
            lines.append(
                f"| {move.seq} | {move.at} | {move.reason} | {move.from_version or '—'} "
                f"| {move.to_version or '—'} | {run} |"
            )
    return "\n".join(lines)


def image_summary(
    outputs: dict[str, str], facts: Any, smoke: Any, *, pushed: bool, linked: Any = None
) -> str:
    """Job summary of build-push: what was built from which model, where it went, and what
    the registry now records about it."""
    size = human_bytes(int(outputs["size-bytes"]))
    lines = [
        f"### 🐳 build-push: `{outputs['image']}`",
        "",
        f"Model `{facts.uri}` ({facts.flavor}, MLflow {facts.mlflow_version}), image {size}.",
        "",
        "| | |",
        "|---|---|",
        f"| tags | {', '.join(f'`{t}`' for t in outputs['tags'].splitlines())} |",
        f"| digest | `{outputs['digest']}` |" if pushed else "| pushed | no (push: false) |",
        f"| image id | `{outputs['image-id'][:19]}` |",
    ]
    if smoke is not None:
        lines.append(
            f"| smoke test | /ping after {smoke.seconds_to_ping:.1f} s, /invocations and "
            "/metrics answered |"
        )
    if linked is not None:
        lines += [
            f"| SBOM | `{outputs['sbom-digest']}` (CycloneDX, refers to the digest) |",
            f"| provenance | `{outputs['provenance-digest']}` (SLSA v1, refers to the digest) |",
            "| model version | "
            + (
                f"`{facts.name}` version {facts.version} tagged `mlops.image`"
                + (f", history entry {linked.history_entry}" if linked.history_entry else "")
                if linked.version_tagged
                else "not a registered version: no tags"
            )
            + " |",
        ]
    elif pushed and not outputs.get("sbom-digest"):
        lines.append("| attestations | not stored (see the error above, or attestations: false) |")
    return "\n".join(lines)
