"""Prometheus and the Pushgateway (Debian's `prometheus`, `prometheus-pushgateway`) on loopback.

Load them as a plugin in a test module (ruff stays quiet, asserts here are rewritten):

    pytest_plugins = ["tests.prom_services"]

or import the fixtures you need by name (pytest finds fixtures by name in the module; ruff
then wants `# noqa: F401` on the import and F811 on every test that uses one):

    from tests.prom_services import pushgateway, prometheus_factory  # noqa: F401

Fixtures (each test gets fresh servers; only the processes they start are stopped):

- `pushgateway` -> `Pushgateway`: a real Pushgateway on a free 127.0.0.1 port with a persistence
  file in a temporary directory (so `stop()` then `start()` keeps the pushed groups, like a real
  restart) and the admin API on. `.url`; `.samples(name=None)` -> list of `Sample(name, labels,
  value)` from its /metrics (`labels` include job and the grouping key); `.value(name, **labels)`
  -> the one matching value or None; `.groups()` -> /api/v1/metrics; `.wipe()`; `.stop()`,
  `.start()`, `.running`.
- `auth_pushgateway` -> `Pushgateway` with basic authentication through its own
  `--web.config.file` (bcrypt): `.username` / `.password` (PUSHGATEWAY_USER,
  PUSHGATEWAY_PASSWORD). The object reads its metrics with those credentials.
- `bearer_pushgateway` -> `Pushgateway` reached through a small reverse proxy that accepts only
  `Authorization: Bearer <.token>` (PUSHGATEWAY_TOKEN; the Pushgateway has no bearer tokens of
  its own, in production a proxy such as nginx does this). `.url` is the proxy's,
  `.direct_url` the Pushgateway's own.
- `prometheus_factory(scrape_configs=(), rule_files=(), pushgateway=None, config=None)` ->
  `Prometheus`: starts a real Prometheus on a free port with `scrape_interval` and
  `evaluation_interval` 1s and its storage in a temporary directory. `pushgateway=<url>` adds a
  `job_name: pushgateway` scrape job with `honor_labels: true`; `config` (a mapping) is merged
  over the generated configuration's top level. `.url`; `.query(expr)` -> the `result` list of
  an instant query; `.wait_for(expr, timeout=30)` polls until the result is non-empty (and
  fails the test with the last answer if it stays empty); `.api(path, **params)` -> `data` of
  any GET API call (e.g. `api("/api/v1/rules")`); `.reload()` (lifecycle API is on).

A missing binary skips the test locally and fails it in CI (MLOPS_ACTIONS_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, service_unavailable, stop, wait_http
from tests.fault_proxy import FaultProxy

PUSHGATEWAY_BINARY = "/usr/bin/prometheus-pushgateway"
PROMETHEUS_BINARY = "/usr/bin/prometheus"
# Distinctive values, so tests can search every log for them.
PUSHGATEWAY_USER = "pgw-pusher"
PUSHGATEWAY_PASSWORD = "Pgw-basic-pw-never-print-me-5521"
PUSHGATEWAY_TOKEN = "pgw-bearer-token-never-print-me-9093"


def _binary(path: str, package: str) -> str:
    found = path if Path(path).is_file() else shutil.which(Path(path).name)
    if found is None:
        service_unavailable(f"{Path(path).name} (apt-get install {package})")
    assert found is not None
    return found


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Pushgateway:
    """A Pushgateway process this test started; `url` is where clients push."""

    workdir: Path
    port: int
    web_config: Path | None = None
    headers: dict[str, str] = field(default_factory=dict)  # for reading it back
    url: str = ""
    username: str = ""  # what a client must send, when authentication is on
    password: str = ""
    token: str = ""
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.url = self.url or f"http://127.0.0.1:{self.port}"

    @property
    def direct_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        argv = [
            _binary(PUSHGATEWAY_BINARY, "prometheus-pushgateway"),
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--persistence.file={self.workdir / 'pushgateway.data'}",
            "--web.enable-admin-api",
        ]
        if self.web_config is not None:
            argv.append(f"--web.config.file={self.web_config}")
        log = self.workdir / "pushgateway.log"
        with log.open("ab") as sink:
            self.process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
        _wait_ready(f"{self.direct_url}/-/ready", self.process, log, self.headers)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop(self.process)  # SIGTERM: the Pushgateway writes its persistence file

    def _get(self, path: str, method: str = "GET") -> bytes:
        request = urllib.request.Request(
            self.direct_url + path, headers=self.headers, method=method
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body: bytes = response.read()
            return body

    def samples(self, name: str | None = None) -> list[Sample]:
        """What Prometheus would scrape from the Pushgateway, optionally one metric only."""
        from prometheus_client.parser import text_string_to_metric_families

        found = []
        for family in text_string_to_metric_families(self._get("/metrics").decode()):
            for sample in family.samples:
                if name is None or sample.name == name:
                    found.append(Sample(sample.name, dict(sample.labels), float(sample.value)))
        return found

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one series of `name` whose labels include `labels`, else None."""
        matches = [
            s for s in self.samples(name) if all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(matches) <= 1, f"{name}{labels} matches several series: {matches}"
        return matches[0].value if matches else None

    def groups(self) -> list[dict[str, Any]]:
        """The Pushgateway's own view: one entry per group, with push_time_seconds and so on."""
        data: list[dict[str, Any]] = json.loads(self._get("/api/v1/metrics"))["data"]
        return data

    def wipe(self) -> None:
        self._get("/api/v1/admin/wipe", method="PUT")


def _wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, headers: Mapping[str, str]
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=dict(headers)), timeout=2
            ):
                return
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{url} did not come up in 30 s:\n{log.read_text()[-3000:]}")


def _new_pushgateway(workdir: Path, web_config: Path | None = None, **kwargs: Any) -> Pushgateway:
    workdir.mkdir(parents=True, exist_ok=True)
    gateway = Pushgateway(workdir=workdir, port=free_port(), web_config=web_config, **kwargs)
    gateway.start()
    return gateway


@pytest.fixture
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    """A real, open Pushgateway on loopback."""
    gateway = _new_pushgateway(tmp_path_factory.mktemp("pushgateway"))
    yield gateway
    gateway.stop()


@pytest.fixture
def auth_pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    """A real Pushgateway that requires basic authentication (its own web config, bcrypt)."""
    import bcrypt

    workdir = tmp_path_factory.mktemp("auth-pushgateway")
    hashed = bcrypt.hashpw(PUSHGATEWAY_PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    web_config = workdir / "web.yml"
    web_config.write_text(json.dumps({"basic_auth_users": {PUSHGATEWAY_USER: hashed}}))
    credentials = base64.b64encode(f"{PUSHGATEWAY_USER}:{PUSHGATEWAY_PASSWORD}".encode()).decode()
    gateway = _new_pushgateway(
        workdir,
        web_config,
        headers={"Authorization": f"Basic {credentials}"},
        username=PUSHGATEWAY_USER,
        password=PUSHGATEWAY_PASSWORD,
    )
    yield gateway
    gateway.stop()


@pytest.fixture
def bearer_pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    """A real Pushgateway behind a reverse proxy that wants a bearer token."""
    gateway = _new_pushgateway(
        tmp_path_factory.mktemp("bearer-pushgateway"), token=PUSHGATEWAY_TOKEN
    )
    proxy = FaultProxy(gateway.direct_url, require_authorization=f"Bearer {PUSHGATEWAY_TOKEN}")
    server = proxy.serve()
    gateway.url = proxy.url
    yield gateway
    server.shutdown()
    server.server_close()
    gateway.stop()


# ----------------------------------------------------------------------------- Prometheus


@dataclass
class Prometheus:
    """A Prometheus process this test started."""

    url: str
    process: subprocess.Popen[bytes]
    workdir: Path

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            answer = json.load(response)
        assert answer.get("status") == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result: [{"metric": {...}, "value": [time, "value"]}, ...]."""
        result: list[dict[str, Any]] = self.api("/api/v1/query", query=expr)["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Poll until `expr` returns at least one series (scrapes run every second)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert result, f"{expr} returned nothing within {timeout} s; targets: " + json.dumps(
            self.api("/api/v1/targets")["activeTargets"]
        )
        return result

    def reload(self) -> None:
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


def pushgateway_job(url: str) -> dict[str, Any]:
    """The scrape job for a Pushgateway: honor_labels keeps the pushed job/instance labels."""
    address = urllib.parse.urlsplit(url).netloc
    return {
        "job_name": "pushgateway",
        "honor_labels": True,
        "static_configs": [{"targets": [address]}],
    }


@pytest.fixture
def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Prometheus]]:
    """Start Prometheus servers with the given scrape jobs and rule files; all stop at teardown."""
    binary = _binary(PROMETHEUS_BINARY, "prometheus")
    started: list[Prometheus] = []

    def start(
        scrape_configs: Sequence[Mapping[str, Any]] = (),
        rule_files: Sequence[Path | str] = (),
        pushgateway: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> Prometheus:
        workdir = tmp_path_factory.mktemp("prometheus")
        jobs = [dict(job) for job in scrape_configs]
        if pushgateway:
            jobs.append(pushgateway_job(pushgateway))
        settings: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(Path(path).resolve()) for path in rule_files],
            "scrape_configs": jobs,
            **(config or {}),
        }
        config_file = workdir / "prometheus.yml"
        config_file.write_text(json.dumps(settings, indent=2))  # JSON is YAML
        port = free_port()
        log = workdir / "prometheus.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_file}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    "--web.enable-lifecycle",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        server = Prometheus(f"http://127.0.0.1:{port}", process, workdir)
        started.append(server)
        wait_http(f"{server.url}/-/ready", process, 60, log)
        return server

    yield start
    for server in started:
        stop(server.process)
