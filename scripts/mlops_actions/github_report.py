"""Report a result on GitHub through PyGithub: one pull-request comment updated in place, and a
check run (or a commit status where check runs are not permitted).

Errors name the permission to add to the workflow, because a missing grant in `permissions:`
is the usual cause of a 403 from GitHub's API.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigError, ServiceError

if TYPE_CHECKING:
    from github.Repository import Repository

# GitHub's limits: comment bodies and check-run texts are at most 65 536 characters.
MAX_BODY = 65_000
MAX_STATUS_DESCRIPTION = 140

UNSAFE_IN_MARKER = re.compile(r"[^\w./@ -]")  # keeps "-->" and quotes out of the marker

Conclusion = Literal["success", "failure", "neutral"]


@dataclass(frozen=True)
class Target:
    api_url: str
    token: str
    repository: str  # owner/name
    pull_request: int | None
    head_sha: str
    run_url: str = ""


@dataclass(frozen=True)
class Published:
    url: str
    action: str  # created, updated, check-run, commit-status


class PermissionMissing(ConfigError):
    title = "GitHub permission missing"


def marker(kind: str, **identity: str) -> str:
    """A hidden HTML comment that finds the comment again on the next run."""
    fields = " ".join(
        f'{key}="{UNSAFE_IN_MARKER.sub("_", value)}"' for key, value in identity.items()
    )
    return f"<!-- mlops-actions:{kind} {fields} -->"


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 40].rstrip() + "\n\n… (truncated, see the job summary)"


class GitHubReporter:
    def __init__(
        self, target: Target, *, timeout: int = 15, retries: int = 3, write_interval: float = 1.0
    ) -> None:
        from github import Auth, Github, GithubRetry

        self.target = target
        self._github = Github(
            auth=Auth.Token(target.token),
            base_url=target.api_url.rstrip("/"),
            timeout=timeout,
            # None: the caller retries (the relay, with its own backoff and record).
            retry=GithubRetry(total=retries, backoff_factor=1, max_rate_limit_wait=60)
            if retries
            else None,
            per_page=100,
            lazy=True,
            # GitHub's advice against its secondary rate limits: a second between writes.
            seconds_between_writes=write_interval,
            seconds_between_requests=min(0.25, write_interval),
        )

    def _repo(self) -> Repository:
        return self._github.get_repo(self.target.repository, lazy=True)

    @contextmanager
    def _calling(self, doing: str, permission: str) -> Iterator[None]:
        from github import GithubException, RateLimitExceededException
        from requests.exceptions import RequestException

        api = self.target.api_url
        try:
            yield
        except RateLimitExceededException:
            raise ServiceError(
                f"GitHub API rate limit exceeded while {doing}",
                "retry later, or use a token with a higher limit",
            ) from None
        except GithubException as error:
            detail = error.data.get("message", "") if isinstance(error.data, dict) else ""
            status = error.status
            if status == 403:
                raise PermissionMissing(
                    f"GitHub refused {doing} (HTTP 403: {detail or 'forbidden'})",
                    f"add `{permission}` to the job's `permissions:` (pull requests from forks "
                    "get a read-only token; report from a workflow_run workflow instead)",
                ) from None
            if status == 401:
                raise ConfigError(
                    f"GitHub rejected the token while {doing} (HTTP 401: {detail})",
                    "pass a valid token as the github-token input (default: github.token)",
                ) from None
            if status in (404, 422):
                raise ConfigError(
                    f"GitHub answered HTTP {status} while {doing}: {detail}",
                    f"check that {self.target.repository} and the pull request exist and that "
                    "the token can see them",
                ) from None
            raise ServiceError(
                f"GitHub API {api} failed while {doing}: HTTP {status} {detail}".rstrip(),
                "retry the job; see https://www.githubstatus.com",
            ) from None
        except (RequestException, OSError) as error:
            raise ServiceError(
                f"GitHub API {api} unreachable while {doing}: {type(error).__name__}",
                "check GITHUB_API_URL and the network",
            ) from None

    def upsert_comment(self, hidden_marker: str, body: str) -> Published:
        """Edit the pull request's comment that carries `hidden_marker`, or create it."""
        number = self.target.pull_request
        assert number is not None
        text = _truncate(f"{hidden_marker}\n{body}", MAX_BODY)
        issue = self._repo().get_issue(number)
        with self._calling(f"reading the comments of pull request #{number}", "issues: read"):
            existing = [c for c in issue.get_comments() if hidden_marker in (c.body or "")]
        permission = "pull-requests: write"
        if existing:
            comment = existing[-1]
            with self._calling(f"updating comment {comment.id} on #{number}", permission):
                comment.edit(text)
            return Published(comment.html_url, "updated")
        with self._calling(f"commenting on pull request #{number}", permission):
            created = issue.create_comment(text)
        return Published(created.html_url, "created")

    def publish_check(
        self, name: str, conclusion: Conclusion, title: str, summary: str
    ) -> Published:
        """A completed check run on the head commit; a commit status if that is forbidden."""
        repo = self._repo()
        sha = self.target.head_sha
        links: dict[str, Any] = {"details_url": self.target.run_url} if self.target.run_url else {}
        try:
            with self._calling("creating a check run", "checks: write"):
                run = repo.create_check_run(
                    name=name,
                    head_sha=sha,
                    status="completed",
                    conclusion=conclusion,
                    output={"title": title, "summary": _truncate(summary, MAX_BODY)},
                    **links,
                )
            return Published(run.html_url, "check-run")
        except PermissionMissing:
            # Tokens that are not a GitHub App's (or that lack checks: write) cannot create
            # check runs; a commit status carries the same verdict.
            pass
        state = "failure" if conclusion == "failure" else "success"
        with self._calling(
            "creating a commit status (check runs were refused)",
            "checks: write` or `statuses: write",
        ):
            status = repo.get_commit(sha).create_status(
                state=state,
                description=title[:MAX_STATUS_DESCRIPTION],
                context=name,
                **({"target_url": self.target.run_url} if self.target.run_url else {}),
            )
        return Published(status.url, "commit-status")

    def dispatch(self, event_type: str, payload: dict[str, str]) -> None:
        """A repository_dispatch event, e.g. to start a deployment workflow."""
        with self._calling(f"sending repository_dispatch '{event_type}'", "contents: write"):
            # Not Repository.create_repository_dispatch: it returns False on a 4xx or 5xx, and
            # a refused event must not pass for a sent one.
            self._github.requester.requestJsonAndCheck(
                "POST",
                f"/repos/{self.target.repository}/dispatches",
                input={"event_type": event_type, "client_payload": payload},
            )
