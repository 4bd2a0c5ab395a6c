"""Markdown for the job summary: pure functions from results to text."""

from __future__ import annotations

from .data import PullResult
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
