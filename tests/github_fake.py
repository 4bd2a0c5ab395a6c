"""A local stand-in for the parts of GitHub's REST API the suite calls, recording each request.

It answers with payloads shaped like GitHub's (ids, html_url, user, timestamps), keeps comments
between requests so that an update can be told from a create, checks the token, and can refuse
chosen endpoints with GitHub's own 403 body to test missing permissions.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FORBIDDEN_BODY = {
    "message": "Resource not accessible by integration",
    "documentation_url": "https://docs.github.com/rest",
    "status": "403",
}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGitHub:
    token: str
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> comment
    check_runs: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    dispatches: list[dict[str, Any]] = field(default_factory=list)
    forbidden: set[str] = field(default_factory=set)  # "POST check-runs", "POST comments", ...
    unavailable: int = 0  # the next N dispatch requests get GitHub's 503 (an outage)
    _ids: Any = field(default_factory=lambda: itertools.count(1_000_001))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    # ------------------------------------------------------------------------- payloads

    @staticmethod
    def _now() -> str:
        return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _comment(self, repo: str, number: int, body: str) -> dict[str, Any]:
        comment_id = next(self._ids)
        return {
            "id": comment_id,
            "node_id": f"IC_{comment_id}",
            "url": f"{self.url}/repos/{repo}/issues/comments/{comment_id}",
            "html_url": f"https://github.com/{repo}/pull/{number}#issuecomment-{comment_id}",
            "issue_url": f"{self.url}/repos/{repo}/issues/{number}",
            "body": body,
            "user": {"login": "github-actions[bot]", "id": 41898282, "type": "Bot"},
            "author_association": "NONE",
            "created_at": self._now(),
            "updated_at": self._now(),
            "_number": number,
        }

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        route = path.split("?", 1)[0]
        if match := re.fullmatch(r"/repos/([^/]+/[^/]+)/issues/(\d+)/comments", route):
            repo, number = match.group(1), int(match.group(2))
            if method == "GET":
                found = [c for c in self.comments.values() if c["_number"] == number]
                return 200, [{k: v for k, v in c.items() if k != "_number"} for c in found]
            if "POST comments" in self.forbidden:
                return 403, FORBIDDEN_BODY
            comment = self._comment(repo, number, body["body"])
            self.comments[comment["id"]] = comment
            return 201, {k: v for k, v in comment.items() if k != "_number"}
        if match := re.fullmatch(r"/repos/([^/]+/[^/]+)/issues/comments/(\d+)", route):
            comment = self.comments.get(int(match.group(2)))
            if comment is None:
                return 404, {"message": "Not Found"}
            if "PATCH comments" in self.forbidden:
                return 403, FORBIDDEN_BODY
            comment.update(body=body["body"], updated_at=self._now())
            return 200, {k: v for k, v in comment.items() if k != "_number"}
        if match := re.fullmatch(r"/repos/([^/]+/[^/]+)/check-runs", route):
            if "POST check-runs" in self.forbidden:
                return 403, FORBIDDEN_BODY
            run_id = next(self._ids)
            run = {
                "id": run_id,
                "node_id": f"CR_{run_id}",
                "url": f"{self.url}/repos/{match.group(1)}/check-runs/{run_id}",
                "html_url": f"https://github.com/{match.group(1)}/runs/{run_id}",
                "started_at": self._now(),
                "completed_at": self._now(),
                "app": {"id": 15368, "slug": "github-actions", "name": "GitHub Actions"},
                **body,
            }
            self.check_runs.append(run)
            return 201, run
        if match := re.fullmatch(r"/repos/([^/]+/[^/]+)/statuses/([0-9a-f]{40})", route):
            if "POST statuses" in self.forbidden:
                return 403, FORBIDDEN_BODY
            status = {
                "id": next(self._ids),
                "url": f"{self.url}/repos/{match.group(1)}/statuses/{match.group(2)}",
                "created_at": self._now(),
                "updated_at": self._now(),
                "creator": {"login": "github-actions[bot]", "id": 41898282, "type": "Bot"},
                "sha": match.group(2),
                **body,
            }
            self.statuses.append(status)
            return 201, status
        if re.fullmatch(r"/repos/([^/]+/[^/]+)/dispatches", route) and method == "POST":
            return self._dispatch(body)
        return 404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}

    def _dispatch(self, body: Any) -> tuple[int, Any]:
        if "POST dispatches" in self.forbidden:
            return 403, FORBIDDEN_BODY
        if self.unavailable > 0:
            self.unavailable -= 1
            return 503, {"message": "Service Unavailable"}
        self.dispatches.append(body)
        return 204, None

    # ------------------------------------------------------------------------- server

    def serve(self) -> ThreadingHTTPServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _respond(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with fake._lock:
                    fake.requests.append(
                        Request(self.command, self.path, dict(self.headers.items()), body)
                    )
                    authorization = self.headers.get("Authorization", "")
                    if authorization not in (f"token {fake.token}", f"Bearer {fake.token}"):
                        status, payload = 401, {"message": "Bad credentials"}
                    else:
                        status, payload = fake.handle(self.command, self.path, body)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-RateLimit-Remaining", "4999")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _respond

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server
