"""`mlops-actions relay image`: the relay's container image. The rendered Dockerfile and build
context (pure); then a real BuildKit build, the restricted smoke test and a push to a registry
on loopback, and the pushed image, run by digest, relaying one signed delivery to the GitHub
fake."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlops_actions import __version__, relay, relay_image
from tests.conftest import GITHUB_TEST_TOKEN, ROOT, clean_env, free_port, run_cli
from tests.github_fake import FakeGitHub
from tests.test_relay import MODEL, REPOSITORY, SECRET, alias_moved, settle, signed, wait_for

CA_BUNDLE = os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().cafile or ""
LOCK = ROOT / "requirements-relay.lock"
# What the relay must run without: the suite's heavy dependencies for other verbs.
HEAVY = ("dvc", "docker", "numpy", "pandas", "sqlalchemy", "alembic", "cyclonedx", "oras", "ray")


def locked(text: str) -> dict[str, list[str]]:
    """Name -> the versions a lock file pins (one per environment marker)."""
    pins: dict[str, list[str]] = {}
    for match in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", text, re.M):
        pins.setdefault(match.group(1).lower(), []).append(match.group(2))
    return pins


def test_the_dockerfile_runs_serve_unprivileged_with_the_state_in_a_volume() -> None:
    dockerfile = relay_image.render_dockerfile()
    assert "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}" in dockerfile
    assert "pip install --require-hashes --no-deps -r /opt/relay/requirements.txt" in dockerfile
    assert "--mount=type=secret,id=extra_ca" in dockerfile
    assert "\nUSER 10001\n" in dockerfile
    assert "\nVOLUME /var/lib/mlops-relay\n" in dockerfile
    assert "\nEXPOSE 8787\n" in dockerfile
    assert not re.search(r"^HEALTHCHECK", dockerfile, re.M)  # Kubernetes probes /healthz
    entrypoint = dockerfile.split("ENTRYPOINT ", 1)[1]
    for word in ("relay", "serve", "--host", "0.0.0.0", "--state-dir", "/var/lib/mlops-relay"):
        assert f'"{word}"' in entrypoint
    # Dependencies before the suite's code: a new suite version rebuilds only the last layers.
    assert dockerfile.index("COPY requirements.txt") < dockerfile.index("COPY app/")


def test_the_context_holds_the_lock_the_suite_and_a_launcher(tmp_path: Path) -> None:
    context = relay_image.write_context(tmp_path / "context", LOCK)
    assert (context / "requirements.txt").read_text() == LOCK.read_text()
    package = context / "app" / "mlops_actions"
    for module in ("__init__.py", "cli/__init__.py", "cli/relay_cmds.py", "relay_app.py"):
        assert (package / module).is_file(), module
    assert not list(package.rglob("__pycache__"))
    launcher = context / "mlops-actions"
    assert os.access(launcher, os.X_OK)
    assert launcher.read_text().startswith("#!/opt/venv/bin/python\n")
    assert (context / "Dockerfile").read_text() == relay_image.render_dockerfile()


def test_the_relay_lock_is_hashed_small_and_follows_the_main_lock() -> None:
    text = LOCK.read_text()
    pins = locked(text)
    wanted = [
        re.split(r"[<>=!~;\s\[]", line, maxsplit=1)[0].lower()
        for line in (ROOT / "requirements-relay.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert set(wanted) <= set(pins), "recompile requirements-relay.lock (its header says how)"
    for heavy in HEAVY:
        assert not any(name == heavy or name.startswith(f"{heavy}-") for name in pins), heavy
    # Every pin carries hashes (pip --require-hashes would refuse the file otherwise).
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2]):
        assert "--hash=sha256:" in block, block.splitlines()[0]
    main = locked((ROOT / "requirements.lock").read_text())
    for name, versions in pins.items():
        if name in main:
            assert set(versions) <= set(main[name]), (name, versions, main[name])


def test_relay_serve_imports_nothing_heavy() -> None:
    """`relay serve --help` and the modules serve imports, with the heavy packages made
    unimportable, as they are in the image."""
    script = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {HEAVY!r}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import mlops_actions.relay_app, mlops_actions.github_report, mlops_actions.promote
from mlops_actions.cli import main
sys.exit(main(['relay', 'serve', '--help']))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--include-suite-moves" in done.stdout


def test_labels_and_the_suites_origin() -> None:
    labels = relay_image.labels_for("0.1.0", "a" * 40, "https://github.com/acme/mlops", "now")
    assert labels["org.opencontainers.image.title"] == "mlops-actions relay"
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.revision"] == "a" * 40
    assert labels["org.opencontainers.image.source"] == "https://github.com/acme/mlops"
    assert "org.opencontainers.image.source" not in relay_image.labels_for("1", "", "", "now")
    assert relay_image.https_url("git@github.com:acme/mlops.git") == "https://github.com/acme/mlops"
    assert (
        relay_image.https_url("https://x-access-token:ghs_abc@github.com/acme/mlops.git")
        == "https://github.com/acme/mlops"
    )
    assert relay_image.https_url("file:///srv/mlops") == ""
    revision, _ = relay_image.suite_origin(ROOT, {})
    assert re.fullmatch(r"[0-9a-f]{40}", revision)
    _, source = relay_image.suite_origin(
        Path("/"), {"GITHUB_ACTION_REPOSITORY": "acme/mlops-actions"}
    )
    assert source == "https://github.com/acme/mlops-actions"


def test_bad_arguments_are_named_before_anything_is_built(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    upper = run_cli(["relay", "image", "--repository", "Localhost:5000/Relay"], tmp_path, env)
    assert upper.returncode == 2
    assert "upper-case" in upper.output
    no_repo = run_cli(["relay", "image"], tmp_path, env)
    assert no_repo.returncode == 2
    assert "repository is not set" in no_repo.output
    tag = run_cli(["relay", "image", "--repository", "r.io/a/b", "--tag", "a b"], tmp_path, env)
    assert tag.returncode == 2
    assert "'a b' is not an image tag" in tag.output
    push = ["relay", "image", "--repository", "r.io/a/b", "--push"]
    no_password = run_cli([*push, "--registry-username", "bot"], tmp_path, env)
    assert no_password.returncode == 2
    assert "registry-username is set but there is no password" in no_password.output
    assert "REGISTRY_PASSWORD" in no_password.output


@dataclass
class Pushed:
    outputs: dict[str, str]
    output: str
    seconds: float


@pytest.fixture(scope="module")
def pushed(
    docker_client: Any, base_image: str, registry: str, tmp_path_factory: pytest.TempPathFactory
) -> Pushed:
    """`relay image --push` once for the module: built, smoke-tested, pushed."""
    workdir = tmp_path_factory.mktemp("relay-image")
    argv = ["relay", "image", "--repository", f"{registry}/acme/mlops-relay", "--tag", "t1"]
    argv += ["--base-image", base_image, "--push"]
    argv += ["--extra-ca", CA_BUNDLE] if CA_BUNDLE else []
    started = time.monotonic()
    built = run_cli(argv, workdir, clean_env(workdir), timeout=900)
    assert built.returncode == 0, built.output[-4000:]
    return Pushed(built.outputs(), built.output, time.monotonic() - started)


def run_relay(
    docker_client: Any, reference: str, github: FakeGitHub, *arguments: str
) -> tuple[Any, str]:
    """The image by digest as a restricted pod runs it (non-root, read-only root, no
    capabilities, tmpfs for /tmp and the state), on the host's network to reach the GitHub
    fake (and MLflow) on loopback; the container and its URL once /healthz answers."""
    port = free_port()
    listen = ["--host", "127.0.0.1", "--port", str(port)]
    container = docker_client.containers.run(
        reference,
        ["--repository", REPOSITORY, "--model", "*", *arguments, *listen],
        detach=True,
        network_mode="host",
        user="10001:10001",
        read_only=True,
        tmpfs={
            "/tmp": "rw,nosuid,nodev,size=64m",
            relay_image.STATE_DIR: "rw,nosuid,nodev,size=16m,uid=10001,gid=10001",
        },
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        environment={
            "MLOPS_RELAY_SECRET": SECRET,
            "GITHUB_TOKEN": GITHUB_TEST_TOKEN,
            "GITHUB_API_URL": github.url,
        },
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url, container), timeout=60, what="the relay's /healthz")
    except BaseException:
        container.remove(force=True, v=True)
        raise
    return container, url


def post(url: str, headers: dict[str, str], body: bytes) -> int:
    request = urllib.request.Request(f"{url}/webhook", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return int(answer.status)


def assert_no_secret_logged(container: Any) -> None:
    logs = container.logs().decode(errors="replace")
    assert SECRET not in logs
    assert GITHUB_TEST_TOKEN not in logs


@pytest.mark.docker
def test_build_smoke_push_then_the_pushed_image_relays_one_delivery(
    docker_client: Any, pushed: Pushed, registry: str, github: FakeGitHub
) -> None:
    outputs, repository = pushed.outputs, f"{registry}/acme/mlops-relay"
    digest = outputs["digest"]
    assert digest.startswith("sha256:")
    assert outputs["image"] == f"{repository}@{digest}"
    assert "smoke test passed" in pushed.output
    assert "MLOPS_RELAY_SECRET=" not in pushed.output
    assert "GITHUB_TOKEN=" not in pushed.output

    config = docker_client.images.get(outputs["image-id"]).attrs["Config"]
    assert config["User"] == "10001"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "mlops-actions relay"
    assert labels["org.opencontainers.image.version"] == __version__
    assert re.fullmatch(r"[0-9a-f]{40}", labels["org.opencontainers.image.revision"])
    size = int(outputs["size-bytes"])
    print(
        f"relay image: {size / 1e6:.0f} MB; built, smoke-tested, pushed in {pushed.seconds:.0f} s"
    )

    # Pulled by digest from the registry, it is the image that was built.
    docker_client.images.remove(f"{repository}:t1", force=True)
    pulled = docker_client.images.pull(outputs["image"])
    assert pulled.id == outputs["image-id"]

    # Run by digest, one signed delivery makes exactly one dispatch.
    container, url = run_relay(docker_client, outputs["image"], github, "--include-suite-moves")
    try:
        headers, body = signed(alias_moved("1"))
        assert post(url, headers, body) == 202
        (dispatch,) = settle(github, 1)
        assert dispatch["event_type"] == relay.EVENT_TYPE
        assert dispatch["client_payload"]["model"] == MODEL
        assert dispatch["client_payload"]["version"] == "1"
        assert dispatch["client_payload"]["delivery_id"] == headers["X-MLflow-Delivery-Id"]
        assert github.calls("POST", f"^/repos/{REPOSITORY}/dispatches$")
        assert_no_secret_logged(container)
    finally:
        container.remove(force=True, v=True)


@pytest.mark.docker
def test_the_image_reads_the_registry_to_skip_suite_moves_with_mlflow_skinny_only(
    docker_client: Any, pushed: Pushed, github: FakeGitHub, mlflow_server: str
) -> None:
    """Without --include-suite-moves the relay checks the registry at start and reads promote's
    history for each delivery: mlflow-skinny, no server extras. A person's move is relayed."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    name = f"relay-image-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment(name))
    client.set_terminated(run.info.run_id)
    client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    container, url = run_relay(
        docker_client, pushed.outputs["image"], github, "--tracking-uri", mlflow_server
    )
    try:
        headers, body = signed(alias_moved("1", model=name))
        assert post(url, headers, body) == 202
        (dispatch,) = settle(github, 1, quiet=1)
        assert dispatch["client_payload"]["model"] == name
        assert_no_secret_logged(container)
    finally:
        container.remove(force=True, v=True)


def _healthy(url: str, container: Any) -> bool:
    container.reload()
    assert container.status != "exited", container.logs(tail=30).decode(errors="replace")
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False
