"""Several workers: gunicorn loads the app (and so the model) once, then forks uvicorn workers.

Forked after the load, the workers share the imported libraries and the model copy-on-write,
so N workers cost far less than N times one (uvicorn's own `--workers` starts each worker
from scratch). gunicorn also restarts a worker that dies and stops them all gracefully.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, ClassVar

from gunicorn.app.base import BaseApplication
from uvicorn_worker import UvicornWorker


class Worker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "auto",
        "http": "auto",
        "server_header": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = self.cfg.graceful_timeout

    def init_process(self) -> None:
        for listener in self.sockets:
            listener.sock = with_tcp_protocol(listener.sock)
        super().init_process()


def with_tcp_protocol(sock: socket.socket) -> socket.socket:
    """uvicorn#3149: a TCP listener made with proto 0 hands out sockets that asyncio leaves with
    Nagle on, so every keep-alive answer waits ~40 ms for a delayed ACK. Re-wrapped by file
    descriptor, the socket reports IPPROTO_TCP, and asyncio sets TCP_NODELAY on connections."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto != socket.IPPROTO_TCP:
        return socket.socket(fileno=sock.detach())
    return sock


# Settings newer than the oldest gunicorn the image may install (gunicorn>=23).
OPTIONAL_SETTINGS = frozenset({"control_socket_disable"})


class PreforkServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, load_app: Callable[[], Any], options: dict[str, Any]) -> None:
        self.load_app = load_app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in OPTIONAL_SETTINGS and key not in self.cfg.settings:
                continue  # an older gunicorn without it
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.load_app()


def _forget_worker_metrics(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def run(
    load_app: Callable[[], Any],
    *,
    host: str,
    port: int,
    workers: int,
    graceful_seconds: int,
    log_level: str,
) -> None:
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    PreforkServer(
        load_app,
        {
            "bind": bind,
            "workers": workers,
            "worker_class": f"{__name__}.Worker",
            "preload_app": True,
            "graceful_timeout": graceful_seconds,
            "keepalive": 5,  # uvicorn's default, as with one worker
            "loglevel": log_level,
            "child_exit": _forget_worker_metrics,
            # gunicorn 27's control socket (gunicornc) would be made in $HOME, which does not
            # exist and, on a read-only root filesystem, cannot; nothing here uses it.
            "control_socket_disable": True,
        },
    ).run()
