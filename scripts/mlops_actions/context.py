"""Where a pipeline step runs: commit, branch, workflow run, actor.

Read from the variables GitHub sets on a runner, with `git` as the fallback on a laptop.
The same facts tag MLflow runs and, later, registry versions and images.
"""

from __future__ import annotations

import getpass
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunContext:
    commit: str = ""
    branch: str = ""
    repository: str = ""
    workflow: str = ""
    run_url: str = ""
    actor: str = ""
    event: str = ""

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
        return RunContext(
            commit=environ.get("GITHUB_SHA", ""),
            branch=branch,
            repository=repository,
            workflow=environ.get("GITHUB_WORKFLOW", ""),
            run_url=run_url,
            actor=environ.get("GITHUB_ACTOR", ""),
            event=environ.get("GITHUB_EVENT_NAME", ""),
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
