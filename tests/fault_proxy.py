"""An HTTP proxy in front of a real server that injects faults: 5xx answers for chosen requests,
a hook that runs before a chosen request is forwarded (to kill and restart the server, or the
client), a lost answer (forwarded, then the connection closed), and a slow answer (the real
server's, sent one byte at a time, like a gateway on a congested link). It can also stand for
an authenticating reverse proxy: with `require_authorization`, a request without that exact
Authorization header is answered 401 and not forwarded."""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Fault:
    pattern: str  # regex over "METHOD /path"
    status: int = 503
    times: int = 1  # how many matching requests get the fault; -1: all
    before: Callable[[], None] | None = None  # run once, before forwarding, instead of a status
    trickle_seconds: float = 0.0  # instead of a status: forward, answer a byte every so often
    skip: int = 0  # let this many matching requests through first
    drop: bool = False  # instead of a status: forward, then close without an answer (lost reply)


@dataclass
class FaultProxy:
    upstream: str
    url: str = ""
    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, int]] = field(default_factory=list)  # ("METHOD /path", status)
    require_authorization: str = ""  # e.g. "Bearer <token>"
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, pattern: str) -> int:
        return sum(1 for request, _ in self.seen if re.search(pattern, request))

    def _fault_for(self, request: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times != 0 and re.search(fault.pattern, request):
                    if fault.skip > 0:
                        fault.skip -= 1
                        continue
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        target = urlsplit(self.upstream)
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        except OSError:
            return 502, [("Content-Type", "text/plain")], b"upstream unreachable"
        finally:
            connection.close()

    def serve(self) -> ThreadingHTTPServer:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self._body()
                request = f"{self.command} {self.path}"
                fault = proxy._fault_for(request)
                if fault is not None and fault.before is not None:
                    fault.before()
                    fault = None
                trickle = fault.trickle_seconds if fault is not None else 0.0
                drop = fault is not None and fault.drop
                if trickle or drop:
                    fault = None
                refused = bool(proxy.require_authorization) and (
                    self.headers.get("Authorization") != proxy.require_authorization
                )
                if refused:
                    scheme = proxy.require_authorization.split(" ", 1)[0]
                    status, headers, data = 401, [("WWW-Authenticate", scheme)], b""
                elif fault is not None:
                    status, headers, data = fault.status, [], b'{"error_code": "INJECTED"}'
                else:
                    forwarded = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() not in {"host", "connection", "transfer-encoding"}
                    }
                    status, headers, data = proxy._forward(self.command, self.path, forwarded, body)
                with proxy._lock:
                    proxy.seen.append((request, 0 if drop else status))
                if drop:
                    self.close_connection = True  # the server did the work; the reply is lost
                    return
                if trickle:
                    self.wfile = _Trickling(self.wfile, trickle)  # type: ignore[assignment]
                    self.close_connection = True
                try:
                    self._reply(status, headers, data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up: so do we

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                head = self.command == "HEAD"  # the upstream's length, and no body
                skip = {"transfer-encoding", "connection"} | (set() if head else {"content-length"})
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in skip:
                        # Upload locations point back here, so that the uploads come through too.
                        self.send_header(key, value.replace(proxy.upstream, proxy.url))
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            def _body(self) -> bytes:
                """The request body, sent with a length or in chunks (Docker's uploads)."""
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    length = int(self.headers.get("Content-Length") or 0)
                    return self.rfile.read(length) if length else b""
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline().strip():  # trailers, then the blank line
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()  # the CRLF after each chunk

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


class _Trickling:
    """A response stream that sends one byte every `seconds`."""

    def __init__(self, raw: Any, seconds: float) -> None:
        self._raw = raw
        self._seconds = seconds

    def write(self, data: bytes) -> int:
        for index in range(len(data)):
            time.sleep(self._seconds)
            self._raw.write(data[index : index + 1])
        return len(data)

    def __getattr__(self, name: str) -> Any:  # flush, close, closed: the real stream's
        return getattr(self._raw, name)
