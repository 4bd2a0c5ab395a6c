"""Shared fixtures: real services on loopback, the example project, CLI helpers.

A test that needs a service that cannot be started here is skipped, unless
MLOPS_ACTIONS_REQUIRE_SERVICES=1 (set by CI), where it fails instead.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.github_fake import FakeGitHub

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "iris"
HOUSING = ROOT / "tests" / "projects" / "housing"  # a regressor, with a committed CSV
BIN = Path(sys.executable).parent
REQUIRE_SERVICES = os.environ.get("MLOPS_ACTIONS_REQUIRE_SERVICES") == "1"

# Never let botocore probe the EC2 metadata address from a test machine.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# No MLflow telemetry thread in the test process either (see scripts/mlops_actions/telemetry.py):
# set before anything imports mlflow.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"


def service_unavailable(what: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {what}")
    pytest.skip(f"service unavailable: {what}")


# ----------------------------------------------------------------------------- parallel runs
# ./dev test runs the suite on pytest-xdist workers (gw0, gw1, ...). What they share (the Docker
# engine, the machine's ports) is kept apart here: each worker picks ports from a range of its
# own, the base image is built under a lock, and pytest_collection_modifyitems keeps the tests
# that share an expensive fixture on one worker.

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...; "" without xdist
# Below the kernel's ephemeral range (32768-60999 on Linux: bind(0), outgoing connections and
# docker's published ports take theirs there) and above Ray's worker ports (10002-19999).
PORT_RANGE_START, PORT_RANGE_END = 20000, 32000
PORTS_PER_WORKER = 1500
_next_port: list[int] = []


def free_port() -> int:
    """A loopback port that nothing listens on, for a server a test starts.

    Without xdist, one the kernel picks (as before). On worker gwN, the next free one in a range
    of its own, in turn: no other worker of the run can pick it between this check and the
    server's bind, and this worker does not hand it out again before it has used the others.
    """
    if not WORKER:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    slots = (PORT_RANGE_END - PORT_RANGE_START) // PORTS_PER_WORKER
    first = PORT_RANGE_START + (int(WORKER.removeprefix("gw")) % slots) * PORTS_PER_WORKER
    if not _next_port:
        _next_port.append(random.randrange(PORTS_PER_WORKER))
    for _ in range(PORTS_PER_WORKER):
        port = first + _next_port[0] % PORTS_PER_WORKER
        _next_port[0] += 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken (another run on this machine)
            return port
    raise RuntimeError(f"no free port in {first}-{first + PORTS_PER_WORKER - 1}")


def unique_name(prefix: str) -> str:
    """A Docker image name no other test, worker or concurrent run on this engine uses."""
    return f"{prefix}-{WORKER or 'main'}-{uuid.uuid4().hex[:12]}"


# Session fixtures that are too heavy to start once per worker: the tests that use one run
# on the same worker (an xdist_group of that name).
SHARED_SESSION_FIXTURES = {"ray_cluster": "ray"}
HEAVIER_SCOPES = ("package", "module", "class")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "xdist_group(name): run on the same pytest-xdist worker as the other tests of that group "
        "(./dev test uses --dist loadgroup); set by conftest for modules with module-scoped "
        "fixtures and for the users of ray_cluster",
    )


def _on_worker(config: pytest.Config) -> bool:
    """This process is an xdist worker (not the controller, not a pytest a test started)."""
    return hasattr(config, "workerinput")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """A test marked `serial` runs while no other worker of the run runs a test.

    A readers-writer lock over the run's workers: every test holds it shared, a serial one
    exclusively; a gate in front lets a waiting serial test go before the next shared holders,
    so the other workers cannot keep it waiting for ever. Without xdist it is not needed.
    """
    if not _on_worker(item.config):
        return (yield)
    import fcntl

    # The run's temp root (each worker's basetemp is popen-gwN in it): pytest removes it with
    # the run's other temp directories.
    factory: pytest.TempPathFactory = item.config._tmp_path_factory  # type: ignore[attr-defined]
    base = factory.getbasetemp().parent / "serial"
    serial = item.get_closest_marker("serial") is not None
    with open(f"{base}.gate", "a") as gate, open(f"{base}.lock", "a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX if serial else fcntl.LOCK_SH)
        fcntl.flock(lock, fcntl.LOCK_EX if serial else fcntl.LOCK_SH)
        fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            return (yield)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group the tests for --dist loadgroup, and on a worker put the longest units first.

    A module whose tests share a module- (or class-) scoped fixture is one group, so that the
    fixture is built once, on one worker; the tests that use ray_cluster are one group (one head
    node in the run, not one per worker); every other test is scheduled on its own. Before
    xdist adds a group to the node ids (its own hook runs after this one).
    """
    modules: dict[Path, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.path, []).append(item)

    def fixture_scopes(item: pytest.Item) -> set[str]:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            return set()
        return {d[-1].scope for d in info.name2fixturedefs.values() if d}

    groups: dict[pytest.Item, str] = {}
    for path, members in modules.items():
        shared = {
            SHARED_SESSION_FIXTURES[name]
            for item in members
            for name in getattr(item, "fixturenames", ())
            if name in SHARED_SESSION_FIXTURES
        }
        module_wide = any(set(HEAVIER_SCOPES) & fixture_scopes(item) for item in members)
        for item in members:
            if item.get_closest_marker("xdist_group") is not None:
                continue
            mine = {
                SHARED_SESSION_FIXTURES[name]
                for name in getattr(item, "fixturenames", ())
                if name in SHARED_SESSION_FIXTURES
            }
            if module_wide:
                # One group for the whole module; a module that also uses a shared session
                # fixture joins that fixture's group.
                group = min(shared) if shared else str(path.relative_to(ROOT))
            elif mine:
                group = min(mine)
            else:
                continue
            groups[item] = group
            item.add_marker(pytest.mark.xdist_group(group))
    if not _on_worker(config):
        return  # a run without xdist keeps the collection order

    # The scheduler hands out units in this order: the groups (whole modules) first, then the
    # end-to-end tests, then Docker's, then the rest, so that no long unit starts last.
    def rank(item: pytest.Item) -> int:
        if item in groups or item.get_closest_marker("xdist_group") is not None:
            return 0
        if item.get_closest_marker("e2e") is not None:
            return 1
        if item.get_closest_marker("docker") is not None:
            return 2
        return 3

    items.sort(key=rank)


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up in {timeout} s:\n{log.read_text()[-3000:]}")


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    workdir: Path


def start_service(
    argv: list[str],
    health: str,
    workdir: Path,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> Service:
    log = workdir / "service.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, cwd=workdir, stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    try:
        wait_http(health, process, timeout, log)
    except RuntimeError:
        process.kill()
        raise
    return Service(health.rsplit("/", 1)[0], process, workdir)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` with a SQLite store, serving artifacts itself."""
    workdir = tmp_path_factory.mktemp("mlflow-server")
    service = start_mlflow_server(f"sqlite:///{workdir / 'store.db'}", workdir)
    yield service.url
    stop(service.process)


def _postgres_binaries() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root; run it as the Debian package's `postgres` user."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (Debian's postgresql) on a loopback port."""
    binaries = _postgres_binaries()
    if binaries is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        service_unavailable("PostgreSQL (apt-get install postgresql)")
    assert binaries is not None
    # Not under pytest's tmp root: that is private to root, and the server runs as `postgres`.
    workdir = Path(tempfile.mkdtemp(prefix="mlops-actions-postgres-"))
    data = workdir / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        shutil.chown(data, "postgres")
    user = _as_postgres_user()
    subprocess.run(
        [
            *user,
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            "mlflow",
            "--auth=trust",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    subprocess.run(
        [
            *user,
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(data / "server.log"),
            "-o",
            f"-h 127.0.0.1 -p {port} -k {data}",
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [
                *user,
                str(binaries / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "mlflow",
                "mlflow",
            ],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(
            [*user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(workdir, ignore_errors=True)


def start_mlflow_server(
    store_uri: str, workdir: Path, port: int | None = None, env: dict[str, str] | None = None
) -> Service:
    mlflow = BIN / "mlflow"
    if not mlflow.exists():
        service_unavailable("mlflow server (install the dev dependencies)")
    port = port or free_port()
    return start_service(
        [
            str(mlflow),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            store_uri,
            "--artifacts-destination",
            str(workdir / "artifacts"),
            "--workers",
            "1",
        ],
        f"http://127.0.0.1:{port}/health",
        workdir,
        timeout=180,
        env=env,
    )


@pytest.fixture(scope="session")
def postgres_mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str
) -> Iterator[str]:
    """A real `mlflow server` whose store is PostgreSQL."""
    service = start_mlflow_server(postgres_url, tmp_path_factory.mktemp("mlflow-postgres"))
    yield service.url
    stop(service.process)


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str

    def credentials(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """An S3-compatible server (moto) on loopback."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        service_unavailable("S3-compatible server (moto[server])")
    workdir = tmp_path_factory.mktemp("s3-server")
    port = free_port()
    service = start_service(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        f"http://127.0.0.1:{port}/moto-api/",
        workdir,
        timeout=60,
    )
    # Made-up keys: moto accepts any; a distinctive secret lets tests search logs for it.
    yield S3Server(f"http://127.0.0.1:{port}", "AKIAMLOPSACTIONSTEST", "s3cr3t-Zq81-never-print-me")
    stop(service.process)


GITHUB_TEST_TOKEN = "ghs_FakeToken4Tests_never_print_me_0001"


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    """The local stand-in for GitHub's API, accepting GITHUB_TEST_TOKEN."""
    fake = FakeGitHub(token=GITHUB_TEST_TOKEN)
    server = fake.serve()
    yield fake
    server.shutdown()


def save_iris_model(path: Path, c: float = 1.0, example_rows: int = 2) -> Path:
    """A real scikit-learn Iris model saved in MLflow format, with a serving input example."""
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(C=c, max_iter=300).fit(features, target)
    mlflow.sklearn.save_model(model, str(path), input_example=features.head(example_rows))
    return path


def copy_example(destination: Path) -> Path:
    """A fresh copy of the example project in its own git repository, data not pulled."""
    return copy_project(EXAMPLE, destination)


def copy_housing(destination: Path) -> Path:
    """A fresh copy of the housing regression test project, in its own git repository."""
    return copy_project(HOUSING, destination)


def copy_project(source: Path, destination: Path) -> Path:
    project = destination / source.name
    shutil.copytree(
        source,
        project,
        ignore=shutil.ignore_patterns(
            "mlflow.db", "mlruns", "mlartifacts", "cache", "tmp", "iris.csv", "__pycache__"
        ),
    )
    git = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=project, check=True)
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "example"], cwd=project, check=True)
    return project


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return copy_example(tmp_path)


@pytest.fixture
def housing(tmp_path: Path) -> Path:
    return copy_housing(tmp_path)


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A runner-like environment: no GitHub variables from the outside, no stray secrets."""
    keep = (
        "PATH",
        "LANG",
        "LC_ALL",
        "TZ",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "UV_CACHE_DIR",
        "PYENV_ROOT",
        "PYENV_VERSION",
    )
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        {
            "HOME": str(home),
            "AWS_EC2_METADATA_DISABLED": "true",
            "DVC_NO_ANALYTICS": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PYTHONUNBUFFERED": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
        }
    )
    env.update(extra)
    return env


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def outputs(self) -> dict[str, str]:
        """The `name: value` lines the CLI prints for its outputs."""
        pairs = {}
        for line in self.stdout.splitlines():
            name, sep, value = line.partition(": ")
            if sep and name and " " not in name:
                pairs[name] = value
        return pairs


def run_cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> CliResult:
    done = subprocess.run(
        [str(BIN / "mlops-actions"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(result: CliResult, *needles: str) -> str:
    """Exactly one error line that names what it must, and no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith(("::error", "error:"))]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


# ----------------------------------------------------------------------------- Docker

BASE_IMAGE = "mlops-actions-test/python-base:bookworm"


@pytest.fixture(scope="session")
def docker_client() -> Any:
    """docker-py on a running Docker engine (Debian's docker.io; ./dev setup starts it)."""
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as error:
        service_unavailable(f"Docker engine (start dockerd, or run ./dev setup): {error}")
    return client


@pytest.fixture(scope="session")
def base_image(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Debian Python base image made from Debian packages (no Docker Hub): mmdebstrap, then
    docker import. Kept between runs under a fixed tag; built by one worker (or test run on
    this machine) at a time, under a lock that the others wait for, then find the image."""
    from filelock import FileLock

    # The tag is the engine's, so the lock is the machine's, not this run's.
    with FileLock(Path(tempfile.gettempdir()) / "mlops-actions-test-base-image.lock", timeout=1800):
        return _base_image(docker_client, tmp_path_factory)


def _base_image(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    import docker.errors

    try:
        docker_client.images.get(BASE_IMAGE)
        return BASE_IMAGE
    except docker.errors.ImageNotFound:
        pass
    if shutil.which("mmdebstrap") is None:
        service_unavailable("mmdebstrap (apt-get install mmdebstrap), to build the base image")
    tarball = tmp_path_factory.mktemp("base") / "base.tar"
    subprocess.run(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "--format=tar",
            "bookworm",
            str(tarball),
        ],
        check=True,
        capture_output=True,
    )
    repository, tag = BASE_IMAGE.split(":")
    docker_client.api.import_image(
        src=str(tarball),
        repository=repository,
        tag=tag,
        changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    )
    tarball.unlink()
    return BASE_IMAGE


REGISTRY_USER = "ci-pusher"
REGISTRY_PASSWORD = "Reg1stry-pw-never-print-me-7731"


def _start_registry(workdir: Path, htpasswd: str = "") -> tuple[str, Service]:
    binary = shutil.which("docker-registry")
    if binary is None:
        service_unavailable("docker-registry (apt-get install docker-registry)")
    assert binary is not None
    port = free_port()
    settings: dict[str, Any] = {
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    if htpasswd:
        (workdir / "htpasswd").write_text(htpasswd)
        settings["auth"] = {"htpasswd": {"realm": "tests", "path": str(workdir / "htpasswd")}}
    config = workdir / "config.yml"
    config.write_text(json.dumps(settings))  # JSON is YAML
    # "/" answers 200 with or without authentication (/v2/ would answer 401).
    service = start_service([binary, "serve", str(config)], f"http://127.0.0.1:{port}/", workdir)
    return f"127.0.0.1:{port}", service


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real registry (Debian's docker-registry) on loopback, open: host:port."""
    address, service = _start_registry(tmp_path_factory.mktemp("registry"))
    yield address
    stop(service.process)


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same with basic authentication (REGISTRY_USER / REGISTRY_PASSWORD)."""
    import bcrypt

    hashed = bcrypt.hashpw(REGISTRY_PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    address, service = _start_registry(
        tmp_path_factory.mktemp("auth-registry"), f"{REGISTRY_USER}:{hashed}\n"
    )
    yield address
    stop(service.process)
