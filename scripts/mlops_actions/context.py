"""Where a pipeline step runs: commit, branch, workflow run, actor.

Read from the variables GitHub sets on a runner, with `git` as the fallback on a laptop.
The same facts tag MLflow runs and, later, registry versions and images.
"""

from __future__ import annotations

import getpass
import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunContext:
    commit: str = ""
    branch: str = ""
    repository: str = ""
    workflow: str = ""
    run_url: str = ""
    actor: str = ""
    event: str = ""
    pull_request: int | None = None  # the pull request the event belongs to, if any
    head_sha: str = ""  # the commit a check run belongs on (a PR's head, not its merge commit)
    api_url: str = "https://api.github.com"

    def tags(self) -> dict[str, str]:
        """MLflow run tags: MLflow's own source tags plus ours under `mlops.`."""
        candidates = {
            "mlflow.source.git.commit": self.commit,
            "mlflow.source.git.branch": self.branch,
            "mlflow.source.git.repoURL": (
                f"https://github.com/{self.repository}" if self.repository else ""
            ),
            "mlops.git.commit": self.commit,
            "mlops.git.branch": self.branch,
            "mlops.github.repository": self.repository,
            "mlops.github.workflow": self.workflow,
            "mlops.github.run_url": self.run_url,
            "mlops.github.actor": self.actor,
            "mlops.github.event": self.event,
        }
        return {key: value for key, value in candidates.items() if value}


def _git(args: list[str], cwd: Path) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _event(environ: Mapping[str, str]) -> dict[str, Any]:
    path = environ.get("GITHUB_EVENT_PATH", "")
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
    except (OSError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def pull_request_of(event: Mapping[str, Any]) -> tuple[int | None, str]:
    """(number, head sha) of the pull request an event payload is about, else (None, '')."""
    pull = event.get("pull_request")
    if isinstance(pull, dict) and isinstance(pull.get("number"), int):
        return pull["number"], str(pull.get("head", {}).get("sha", ""))
    issue = event.get("issue")  # issue_comment on a pull request
    if (
        isinstance(issue, dict)
        and issue.get("pull_request")
        and isinstance(issue.get("number"), int)
    ):
        return issue["number"], ""
    runs = (
        event.get("workflow_run", {}).get("pull_requests")
        if isinstance(event.get("workflow_run"), dict)
        else None
    )
    if runs and isinstance(runs[0], dict) and isinstance(runs[0].get("number"), int):
        return runs[0]["number"], str(runs[0].get("head", {}).get("sha", ""))
    return None, ""


def detect(environ: Mapping[str, str], cwd: Path) -> RunContext:
    """The run context from a runner's variables, else from the local git checkout."""
    if environ.get("GITHUB_ACTIONS") == "true":
        server = environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        repository = environ.get("GITHUB_REPOSITORY", "")
        run_id = environ.get("GITHUB_RUN_ID", "")
        attempt = environ.get("GITHUB_RUN_ATTEMPT", "")
        run_url = f"{server}/{repository}/actions/runs/{run_id}" if repository and run_id else ""
        if run_url and attempt:
            run_url += f"/attempts/{attempt}"
        # On pull requests GITHUB_REF_NAME is "<n>/merge"; the head branch is what people know.
        branch = environ.get("GITHUB_HEAD_REF") or environ.get("GITHUB_REF_NAME", "")
        pull_request, head_sha = pull_request_of(_event(environ))
        return RunContext(
            commit=environ.get("GITHUB_SHA", ""),
            branch=branch,
            repository=repository,
            workflow=environ.get("GITHUB_WORKFLOW", ""),
            run_url=run_url,
            actor=environ.get("GITHUB_ACTOR", ""),
            event=environ.get("GITHUB_EVENT_NAME", ""),
            pull_request=pull_request,
            head_sha=head_sha or environ.get("GITHUB_SHA", ""),
            api_url=environ.get("GITHUB_API_URL", "https://api.github.com"),
        )
    try:
        actor = getpass.getuser()
    except (KeyError, OSError):
        actor = ""
    return RunContext(
        commit=_git(["rev-parse", "HEAD"], cwd),
        branch=_git(["rev-parse", "--abbrev-ref", "HEAD"], cwd),
        actor=actor,
        event="local",
    )
