"""Supply chain end to end, against a real MLflow server, Docker engine and registries: build-push
attaches an SBOM and SLSA provenance to the pushed digest, links the model version and its
promotion's history entry to it, and `verify-image` reads them back and fails, naming the
reason, when anything does not hold."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlops_actions import attestation, oci, provenance, sbom
from tests.conftest import (
    REGISTRY_PASSWORD,
    REGISTRY_USER,
    assert_one_line_error,
    clean_env,
    free_port,
    run_cli,
)
from tests.fault_proxy import Fault, FaultProxy
from tests.test_evaluate import client, unique
from tests.test_image import CA_BUNDLE
from tests.test_promote import logged_model_run

pytestmark = pytest.mark.docker

WORKFLOW_ENV = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_REPOSITORY": "acme/iris",
    "GITHUB_SHA": "cd" * 20,
    "GITHUB_RUN_ID": "4242",
    "GITHUB_RUN_ATTEMPT": "2",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_WORKFLOW_REF": "acme/iris/.github/workflows/mlops-main.yml@refs/heads/main",
}


@dataclass
class Built:
    model: str
    repository: str
    digest: str
    outputs: dict[str, str]
    env: dict[str, str]
    workdir: Path


def build_push(
    workdir: Path,
    env: dict[str, str],
    model_uri: str,
    repository: str,
    base_image: str,
    *extra: str,
) -> Any:
    return run_cli(
        [
            "build-push",
            "--model-uri",
            model_uri,
            "--image",
            repository,
            "--base-image",
            base_image,
            "--extra-ca",
            CA_BUNDLE,
            *extra,
        ],
        workdir,
        env,
    )


@pytest.fixture(scope="module")
def built(
    docker_client: Any,
    base_image: str,
    auth_registry: str,
    mlflow_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Built:
    """The champion of a fresh model, promoted with history, built and pushed with its
    attestations to the registry that needs credentials."""
    workdir = tmp_path_factory.mktemp("attested")
    model = unique("attested")
    run = logged_model_run(mlflow_server, unique("exp"), infer_requirements=True)
    env = clean_env(
        workdir,
        MLFLOW_TRACKING_URI=mlflow_server,
        REGISTRY_PASSWORD=REGISTRY_PASSWORD,
        **WORKFLOW_ENV,
    )
    promoted = run_cli(["promote", "--candidate", run, "--model-name", model], workdir, env)
    assert promoted.returncode == 0, promoted.output
    repository = f"{auth_registry}/acme/{model}"
    done = build_push(
        workdir,
        env,
        f"models:/{model}@champion",
        repository,
        base_image,
        "--registry-username",
        REGISTRY_USER,
    )
    assert done.returncode == 0, done.output[-4000:]
    outputs = done.outputs()
    shown = [line for line in done.output.splitlines() if not line.startswith("::add-mask::")]
    assert not [line for line in shown if REGISTRY_PASSWORD in line], "the password was logged"
    return Built(model, repository, outputs["digest"], outputs, env, workdir)


def stdout_of(result: Any) -> str:
    """Standard output without the runner's workflow commands (the secrets' masks)."""
    return "\n".join(line for line in result.stdout.splitlines() if not line.startswith("::"))


def registry_client(address: str, authenticated: bool = True) -> oci.OciRegistry:
    if authenticated:
        return oci.OciRegistry(address, REGISTRY_USER, REGISTRY_PASSWORD)
    return oci.OciRegistry(address)


def attached_documents(built: Built) -> dict[str, bytes]:
    host = built.repository.split("/", 1)[0]
    client = registry_client(host)
    found = client.referrers(built.repository, built.digest)
    documents = {}
    for descriptor in found:
        documents[descriptor.artifact_type] = client.fetch(built.repository, descriptor)[1]
    return documents


# ----------------------------------------------------------------------------- build-push


def test_outputs_name_the_files_and_the_artifacts_in_the_registry(built: Built) -> None:
    outputs = built.outputs
    assert outputs["image"] == f"{built.repository}@{built.digest}"
    sbom_file, provenance_file = Path(outputs["sbom-file"]), Path(outputs["provenance-file"])
    assert sbom_file.is_file()
    assert provenance_file.is_file()
    documents = attached_documents(built)
    # What the registry holds by the image digest is what the step wrote.
    assert documents[attestation.SBOM_ARTIFACT_TYPE] == sbom_file.read_bytes()
    assert documents[attestation.PROVENANCE_ARTIFACT_TYPE] == provenance_file.read_bytes()
    host = built.repository.split("/", 1)[0]
    digests = {
        d.artifact_type: d.digest
        for d in registry_client(host).referrers(built.repository, built.digest)
    }
    assert digests[attestation.SBOM_ARTIFACT_TYPE] == outputs["sbom-digest"]
    assert digests[attestation.PROVENANCE_ARTIFACT_TYPE] == outputs["provenance-digest"]


def test_manifests_dir_holds_valid_manifests_of_the_digest(built: Built) -> None:
    from mlops_actions import kube_schema

    directory = Path(built.outputs["manifests-dir"])
    found = sorted(directory.rglob("*.yaml"))
    assert len(found) == 6, found
    for path in found:
        [manifest] = kube_schema.load_all(path.read_text())
        assert kube_schema.problems(manifest) == [], path
        annotations = manifest["metadata"]["annotations"]
        assert annotations["mlops-actions.io/image"] == built.outputs["image"]


def test_the_sbom_lists_the_images_packages_and_the_model(
    built: Built, docker_client: Any, mlflow_server: str
) -> None:
    document = json.loads(Path(built.outputs["sbom-file"]).read_text())
    parsed = sbom.parse_sbom(Path(built.outputs["sbom-file"]).read_bytes())
    assert parsed.image_digest == built.digest
    assert (parsed.model_name, parsed.model_version) == (built.model, "1")
    # The Python distributions are exactly what pip lists inside the image (pip itself is not
    # in the image: the host's runs from a read-only mount).
    pip_dir = Path(__import__("pip").__file__).parent
    listed = docker_client.containers.run(
        built.outputs["image"],
        ["-m", "pip", "list", "--format", "json"],
        entrypoint="/opt/venv/bin/python",
        environment={"PYTHONPATH": "/mnt/pip"},
        volumes={str(pip_dir): {"bind": "/mnt/pip/pip", "mode": "ro"}},
        network_disabled=True,
        remove=True,
    )
    pip_list = {(p["name"].lower().replace("_", "-"), p["version"]) for p in json.loads(listed)}
    pypi = {
        (c["name"].lower().replace("_", "-"), c["version"])
        for c in document["components"]
        if c.get("purl", "").startswith("pkg:pypi/")
    }
    assert pypi == pip_list
    assert "scikit-learn" in {name for name, _ in pypi}
    assert "mlflow-skinny" in dict(pypi)
    model = next(c for c in document["components"] if c["type"] == "machine-learning-model")
    assert model["name"] == built.model
    assert model["version"] == "1"
    # The model's digest is the one of the model directory the registry serves.
    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    local = mlflow.artifacts.download_artifacts(
        f"models:/{built.model}/1", dst_path=str(built.workdir / "model-check")
    )
    assert parsed.model_digest == sbom.model_digest(Path(local))


def test_the_provenance_names_the_digest_and_what_went_in(built: Built) -> None:
    statement = json.loads(Path(built.outputs["provenance-file"]).read_text())
    assert statement["_type"] == provenance.STATEMENT_TYPE
    assert statement["predicateType"] == provenance.SLSA_PROVENANCE
    assert statement["subject"] == [
        {"name": built.repository, "digest": {"sha256": built.digest.removeprefix("sha256:")}}
    ]
    definition = statement["predicate"]["buildDefinition"]
    dependencies = {d["name"]: d for d in definition["resolvedDependencies"]}
    assert dependencies["model"]["uri"] == f"models:/{built.model}/1"
    assert dependencies["base-image"]["digest"]["sha256"]
    assert dependencies["requirements.lock"]["digest"]["sha256"]
    assert dependencies["source"]["digest"] == {"gitCommit": "cd" * 20}
    assert definition["externalParameters"]["model"] == f"models:/{built.model}@champion"
    details = statement["predicate"]["runDetails"]
    assert details["builder"]["id"] == "https://github.com/" + WORKFLOW_ENV["GITHUB_WORKFLOW_REF"]
    assert details["metadata"]["invocationId"].endswith("/actions/runs/4242/attempts/2")
    assert REGISTRY_PASSWORD not in json.dumps(statement)


def test_the_model_version_and_its_promotion_record_the_image(
    built: Built, mlflow_server: str
) -> None:
    tags = client(mlflow_server).get_model_version(built.model, "1").tags
    assert tags[attestation.IMAGE_TAG] == built.outputs["image"]
    assert tags[attestation.IMAGE_DIGEST_TAG] == built.digest
    assert tags[attestation.SBOM_DIGEST_TAG] == built.outputs["sbom-digest"]
    assert tags[attestation.PROVENANCE_DIGEST_TAG] == built.outputs["provenance-digest"]
    history = run_cli(
        ["registry", "history", "--model-name", built.model, "--json"], built.workdir, built.env
    )
    assert history.returncode == 0, history.output
    moves = json.loads(stdout_of(history))
    assert moves[-1]["to_version"] == "1"
    assert moves[-1]["image"] == built.outputs["image"]
    table = run_cli(["registry", "history", "--model-name", built.model], built.workdir, built.env)
    assert built.digest[:19] in table.stdout


# ----------------------------------------------------------------------------- verify-image


def verify(built: Built, image: str, *extra: str) -> Any:
    return run_cli(
        ["verify-image", image, "--registry-username", REGISTRY_USER, *extra],
        built.workdir,
        built.env,
    )


def test_verify_image_passes_on_the_built_digest(built: Built) -> None:
    done = verify(built, built.outputs["image"], "--model-uri", f"models:/{built.model}@champion")
    assert done.returncode == 0, done.output
    assert "FAIL" not in done.stdout
    as_json = verify(built, built.outputs["image"], "--json")
    assert as_json.returncode == 0
    result = json.loads(stdout_of(as_json))
    assert result["passed"]
    assert result["model"] == {"name": built.model, "version": "1"}


def test_verify_image_names_a_mismatching_model(built: Built) -> None:
    done = verify(built, built.outputs["image"], "--model-uri", f"models:/{built.model}/7")
    assert done.returncode == 1, done.output
    assert_one_line_error(done, "model is the one asked for", "version 7")


def test_verify_image_refuses_a_tag_and_names_an_unreachable_registry(built: Built) -> None:
    tagged = verify(built, f"{built.repository}:v1")
    assert tagged.returncode == 2
    assert_one_line_error(tagged, "has no digest")
    nowhere = f"127.0.0.1:{free_port()}/acme/x@{built.digest}"
    unreachable = verify(built, nowhere)
    assert unreachable.returncode == 3, unreachable.output
    assert_one_line_error(unreachable, "127.0.0.1:")


@pytest.fixture(scope="module")
def relabelled(built: Built, docker_client: Any) -> Iterator[str]:
    """Another image of the same model (one more label): same labels, different digest."""
    import io

    dockerfile = f"FROM {built.outputs['image']}\nLABEL org.example.copy=yes\n"
    image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), rm=True)
    tag = f"{built.repository}:relabelled"
    image.tag(tag)
    from mlops_actions import image as images

    host = built.repository.split("/", 1)[0]
    images.login(docker_client, host, REGISTRY_USER, REGISTRY_PASSWORD)
    digest = images.push(docker_client, built.repository, "relabelled")
    yield f"{built.repository}@{digest}"
    docker_client.images.remove(tag, force=True)


def test_verify_image_fails_on_an_image_without_attestations(built: Built, relabelled: str) -> None:
    done = verify(built, relabelled)
    assert done.returncode == 1, done.output
    error = assert_one_line_error(done, "sbom attached", "provenance attached")
    assert "no artifact of type" in error


def test_verify_image_fails_on_attestations_of_another_digest(
    built: Built, relabelled: str
) -> None:
    """The built image's SBOM and provenance, attached to another image's digest."""
    host = built.repository.split("/", 1)[0]
    client = registry_client(host)
    digest = relabelled.split("@", 1)[1]
    subject = client.manifest_descriptor(built.repository, digest)
    for kind, document in attached_documents(built).items():
        annotations = (
            {attestation.PREDICATE_TYPE_ANNOTATION: provenance.SLSA_PROVENANCE}
            if kind == attestation.PROVENANCE_ARTIFACT_TYPE
            else {}
        )
        client.attach(built.repository, subject, kind, document, kind, annotations)
    done = verify(built, relabelled)
    assert done.returncode == 1, done.output
    assert_one_line_error(done, "provenance subject is the digest", built.digest)


# ----------------------------------------------------------------------------- failures


def test_a_registry_that_refuses_artifacts_fails_after_the_push_and_tags_nothing(
    built: Built, base_image: str, auth_registry: str, mlflow_server: str
) -> None:
    """A second version of the model, pushed through a proxy in front of the same registry
    (its layers are there already: only the model layer moves) that refuses the artifact
    manifests, which go by digest (docker pushes the image's by tag). The step fails saying the
    image is pushed, reports its digest, and leaves the version without image tags."""
    run = logged_model_run(mlflow_server, unique("exp"), infer_requirements=True)
    promoted = run_cli(
        ["promote", "--candidate", run, "--model-name", built.model, "--alias", "challenger"],
        built.workdir,
        built.env,
    )
    assert promoted.returncode == 0, promoted.output
    proxy = FaultProxy(f"http://{auth_registry}")
    proxy.faults.append(Fault(r"^PUT /v2/.*/manifests/sha256:", status=400, times=-1))
    server = proxy.serve()
    repository = f"{proxy.url.removeprefix('http://')}/acme/{built.model}"
    try:
        done = build_push(
            built.workdir,
            built.env,
            f"models:/{built.model}@challenger",
            repository,
            base_image,
            "--registry-username",
            REGISTRY_USER,
            "--smoke-test",
            "false",
        )
    finally:
        server.shutdown()
    assert done.returncode == 3, done.output[-3000:]
    error = assert_one_line_error(done, "is pushed, but", "400")
    assert "not tagged" in error
    outputs = done.outputs()
    assert outputs["digest"].startswith("sha256:")
    assert outputs["digest"] != built.digest
    assert outputs["sbom-digest"] == ""
    assert proxy.count(r"^PUT /v2/.*/manifests/v2$") == 1  # the image itself went through
    tags = client(mlflow_server).get_model_version(built.model, "2").tags
    assert not [key for key in tags if key.startswith("mlops.image")]


def test_provenance_is_checked_against_the_specification() -> None:
    """A statement with a field SLSA does not define is refused when read back."""
    document = {
        "_type": provenance.STATEMENT_TYPE,
        "subject": [{"name": "x", "digest": {"sha256": "a" * 64}}],
        "predicateType": provenance.SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {"buildType": provenance.BUILD_TYPE, "externalParameters": {}},
            "runDetails": {"builder": {"id": "x"}, "colour": "blue"},
        },
    }
    with pytest.raises(ValueError, match="colour"):
        provenance.parse(json.dumps(document).encode())
