"""Serving images against a real Docker engine and a real registry on loopback: build with
BuildKit, smoke test, push, pull by digest, predict; and a new model version that rebuilds
only the model layer."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from mlops_actions import image
from tests.conftest import save_iris_model, unique_name

pytestmark = pytest.mark.docker

CA_BUNDLE = os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().cafile or ""


def build_model_image(
    model_dir: Path, version: str, tag: str, base_image: str, workdir: Path
) -> tuple[str, image.ModelFacts]:
    facts = image.read_model(model_dir, f"models:/iris/{version}", "iris", version)
    context = image.write_context(model_dir, facts, workdir / f"context-{version}")
    cli = image.find_builder(["docker", "/usr/bin/docker"], os.environ)
    spec = image.BuildSpec(
        context=context,
        base_image=base_image,
        tags=(tag,),
        labels=image.labels_for(facts, "0" * 40, "https://github.com/acme/iris", "2026-11-26"),
        build_args={"MODEL_NAME": "iris", "MODEL_VERSION": version},
        extra_ca=Path(CA_BUNDLE) if CA_BUNDLE else None,
    )
    return image.build(cli, spec), facts


def layers(client: Any, image_id: str) -> list[str]:
    return list(client.images.get(image_id).attrs["RootFS"]["Layers"])


def test_build_smoke_push_pull_by_digest(
    docker_client: Any, base_image: str, registry: str, tmp_path: Path
) -> None:
    repository = f"{registry}/acme/iris-serving"
    first_id, first = build_model_image(
        save_iris_model(tmp_path / "v1", 1.0), "1", f"{repository}:1", base_image, tmp_path
    )
    config = docker_client.images.get(first_id).attrs["Config"]
    assert config["Labels"]["io.mlops-actions.model.version"] == "1"
    assert config["User"] == "10001"
    assert "MLSERVING_MODEL_VERSION=1" in config["Env"]

    smoke = image.smoke_test(docker_client, first_id, first.example)
    assert json.loads(smoke.prediction)["predictions"] == [0, 0]
    assert smoke.metrics_lines > 20

    digest = image.push(docker_client, repository, "1")
    assert digest.startswith("sha256:")
    docker_client.images.remove(f"{repository}:1", force=True)
    pulled = docker_client.images.pull(f"{repository}@{digest}")
    assert pulled.id == first_id
    again = image.smoke_test(docker_client, f"{repository}@{digest}", first.example)
    assert again.prediction == smoke.prediction
    assert_serves_restricted(f"{repository}@{digest}", first.example or b"")

    # A new model version with the same requirements: every layer but the model's is reused.
    second_id, _ = build_model_image(
        save_iris_model(tmp_path / "v2", 0.5), "2", f"{repository}:2", base_image, tmp_path
    )
    before, after = layers(docker_client, first_id), layers(docker_client, second_id)
    assert len(before) == len(after)
    assert before[:-1] == after[:-1]
    assert before[-1] != after[-1]


def assert_serves_restricted(reference: str, example: bytes) -> None:
    """`docker run` as the Kubernetes manifests run the image (non-root, read-only root, no
    capabilities, an emptyDir-like /tmp, two workers): the probes answer, and V2 infer answers
    as /invocations does."""
    started = subprocess.run(
        ["docker", "run", "--detach", "--read-only", "--user", "10001:10001",
         "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
         "--env", "MLSERVING_WORKERS=2", "--publish", "127.0.0.1::8080", reference],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    container = started.stdout.strip()
    try:
        port = (
            subprocess.run(
                ["docker", "port", container, "8080/tcp"],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.split(":")[-1]
            .strip()
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while image._get(url + "/v2/health/ready") != 200:
            assert time.monotonic() < deadline, docker_logs(container)
            time.sleep(0.2)
        assert image._get(url + "/v2/health/live") == 200
        assert image._get(url + "/v2/models/iris/versions/1/ready") == 200
        status, answer = image._post(url + "/invocations", example)
        assert status == 200, answer
        frame = json.loads(example)["dataframe_split"]
        columns = [list(column) for column in zip(*frame["data"], strict=True)]
        request = {
            "inputs": [
                {"name": name, "datatype": "FP64", "shape": [len(values)], "data": values}
                for name, values in zip(frame["columns"], columns, strict=True)
            ]
        }
        status, text = image._post(url + "/v2/models/iris/infer", json.dumps(request).encode())
        assert status == 200, text
        assert json.loads(text)["outputs"][0]["data"] == json.loads(answer)["predictions"]
        assert "mlserving_model_info" in image._request(url + "/metrics")[1]
        logs = docker_logs(container)
        assert "Read-only file system" not in logs, logs
        assert "Booting worker" in logs  # two workers: the multiprocess metrics live in /tmp
    finally:
        subprocess.run(["docker", "rm", "--force", container], check=False, capture_output=True)


def docker_logs(container: str) -> str:
    result = subprocess.run(
        ["docker", "logs", container], check=False, capture_output=True, text=True
    )
    return result.stdout + result.stderr


def test_unreachable_registry_fails_without_a_digest(
    docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    from tests.conftest import free_port

    tag = f"127.0.0.1:{free_port()}/acme/nowhere"
    docker_client.images.get(base_image).tag(tag, "x")
    try:
        with pytest.raises(image.ServiceError, match=r"push of 127\.0\.0\.1:"):
            image.push(docker_client, tag, "x", attempts=1)
    finally:
        docker_client.images.remove(f"{tag}:x", force=True)


def test_a_bad_requirement_fails_the_build_with_its_reason(
    docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    model = save_iris_model(tmp_path / "model", 1.0)
    requirements = model / "requirements.txt"
    requirements.write_text(requirements.read_text() + "\nno-such-package-mlops-actions==0.0.1\n")
    with pytest.raises(image.BuildFailed) as error:
        build_model_image(model, "9", f"{unique_name('iris-broken')}:9", base_image, tmp_path)
    assert "no-such-package-mlops-actions" in error.value.message
    assert shutil.which("docker") is not None


def test_build_push_action_serves_the_champion(
    docker_client: Any, base_image: str, registry: str, mlflow_server: str, tmp_path: Path
) -> None:
    from tests.composite import run_action
    from tests.conftest import ROOT, clean_env
    from tests.test_evaluate import client, unique
    from tests.test_promote import logged_model_run

    model, experiment = unique("served"), unique("exp")
    run = logged_model_run(mlflow_server, experiment, infer_requirements=True)
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server, GITHUB_SHA="ab" * 20)
    promoted = run_action(
        ROOT / "actions" / "promote",
        {"candidate": run, "model-name": model},
        workspace=tmp_path,
        env=env,
    )
    assert promoted.outcome == "success", promoted.log
    repository = f"{registry}/acme/{model}"
    built = run_action(
        ROOT / "actions" / "build-push",
        {
            "model-uri": f"models:/{model}@champion",
            "image": repository,
            "base-image": base_image,
            "extra-ca": CA_BUNDLE,
        },
        workspace=tmp_path,
        env=env,
    )
    assert built.outcome == "success", built.log[-3000:]
    outputs = built.outputs
    assert outputs["digest"].startswith("sha256:")
    assert outputs["image"] == f"{repository}@{outputs['digest']}"
    assert outputs["tags"].splitlines() == [
        f"{repository}:v1",
        f"{repository}:champion",
        f"{repository}:sha-{'ab' * 6}",
    ]
    assert outputs["model-version"] == "1"
    assert int(outputs["size-bytes"]) > 0
    assert "### 🐳 build-push" in built.summary
    # What the registry holds is the image that was smoke-tested.
    docker_client.images.remove(f"{repository}:v1", force=True)
    pulled = docker_client.images.pull(outputs["image"])
    assert pulled.id == outputs["image-id"]
    labels = pulled.attrs["Config"]["Labels"]
    assert labels["io.mlops-actions.model.run-id"] == run
    assert labels["org.opencontainers.image.revision"] == "ab" * 20
    version = client(mlflow_server).get_model_version(model, "1")
    assert version.run_id == run


def test_a_missing_model_fails_before_building(
    docker_client: Any, registry: str, mlflow_server: str, tmp_path: Path
) -> None:
    from tests.conftest import assert_one_line_error, clean_env, run_cli

    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    repository = f"{registry}/acme/missing"
    done = run_cli(
        ["build-push", "--model-uri", "models:/no-such-model@champion", "--image", repository],
        tmp_path,
        env,
    )
    assert done.returncode == 2, done.output
    assert_one_line_error(done, "no-such-model")
    assert not docker_client.images.list(name=repository), "nothing was built or pushed"


def test_wrong_registry_credentials_fail_early_and_stay_secret(
    docker_client: Any, auth_registry: str, mlflow_server: str, tmp_path: Path
) -> None:
    from tests.conftest import (
        REGISTRY_PASSWORD,
        REGISTRY_USER,
        assert_one_line_error,
        clean_env,
        run_cli,
    )

    wrong = REGISTRY_PASSWORD[::-1]
    summary = tmp_path / "summary"
    summary.write_text("")
    env = clean_env(
        tmp_path,
        MLFLOW_TRACKING_URI=mlflow_server,
        REGISTRY_PASSWORD=wrong,
        GITHUB_ACTIONS="true",
        GITHUB_STEP_SUMMARY=str(summary),
    )
    repository = f"{auth_registry}/acme/secret"
    args = ["build-push", "--model-uri", "models:/any@champion", "--image", repository]
    done = run_cli([*args, "--registry-username", REGISTRY_USER], tmp_path, env)
    assert done.returncode == 2, done.output
    assert_one_line_error(done, f"registry {auth_registry} rejected the credentials")
    shown = [line for line in done.output.splitlines() if not line.startswith("::add-mask::")]
    assert not [line for line in shown if wrong in line], "the password reached the log"
    assert wrong not in summary.read_text()
    assert not docker_client.images.list(name=repository)
    # A user name without any password is caught before anything runs.
    env.pop("REGISTRY_PASSWORD")
    no_password = run_cli([*args, "--registry-username", REGISTRY_USER], tmp_path, env)
    assert no_password.returncode == 2
    assert_one_line_error(no_password, "REGISTRY_PASSWORD")
