"""OCI artifacts that refer to an image, against real registries (Debian's docker-registry,
distribution 2.8: no referrers API, so the referrers tag schema): attach, list, fetch, the
tag's index, authentication, an unreachable registry, corruption, a refused manifest, and the
config of an image `docker push` pushed."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from mlops_actions import oci
from mlops_actions.errors import EXIT_SERVICE, ConfigError, ServiceError
from tests.conftest import (
    REGISTRY_PASSWORD,
    REGISTRY_USER,
    _start_registry,
    free_port,
    stop,
)

# Debian's docker-registry is started by the `registry` fixtures, which the suite counts as
# Docker's (tests/test_dev.py): the whole module is left out of ./dev test-fast.
pytestmark = [pytest.mark.services, pytest.mark.docker]

SBOM = "application/vnd.cyclonedx+json"
STATEMENT = "application/vnd.in-toto+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


@pytest.fixture(autouse=True)
def no_docker_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials from this machine's ~/.docker/config.json."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def push_tiny_image(client: oci.OciRegistry, repository: str, label: str = "") -> oci.Descriptor:
    """An OCI image of one small layer, tagged v1, pushed with the client itself."""
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"test.label": label or repository}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    config_blob = client.push_blob(repository, json.dumps(config).encode(), IMAGE_CONFIG)
    layer = client.push_blob(repository, repository.encode(), LAYER)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": config_blob.as_json(),
        "layers": [layer.as_json()],
    }
    return client.push_manifest(repository, oci.canonical_json(manifest), oci.OCI_MANIFEST, "v1")


def raw_manifest(address: str, path: str, reference: str) -> tuple[str, dict[str, Any]]:
    """A manifest read without the client: its Content-Type and JSON."""
    request = urllib.request.Request(
        f"http://{address}/v2/{path}/manifests/{reference}",
        headers={"Accept": f"{oci.OCI_INDEX}, {oci.OCI_MANIFEST}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], json.loads(response.read())


# ----------------------------------------------------------------------------- pure parts


def test_loopback_registries_default_to_plain_http() -> None:
    for host in ("localhost", "localhost:5000", "127.0.0.1", "127.0.0.1:5000", "[::1]:5000"):
        assert oci.default_insecure(host), host
    for host in ("ghcr.io", "registry.example.com:5000", "10.0.0.1:5000", "[2001:db8::1]:443"):
        assert not oci.default_insecure(host), host


def test_referrers_tag_and_index_merge() -> None:
    digest = "sha256:" + "ab" * 32
    assert oci.referrers_tag(digest) == "sha256-" + "ab" * 32
    one = oci.Descriptor(oci.OCI_MANIFEST, "sha256:" + "1" * 64, 10, SBOM, {"k": "v"})
    two = oci.Descriptor(oci.OCI_MANIFEST, "sha256:" + "2" * 64, 20, STATEMENT)
    index = oci.merge_index(None, one)
    assert index == {
        "schemaVersion": 2,
        "mediaType": oci.OCI_INDEX,
        "manifests": [one.as_json()],
    }
    assert index["manifests"][0]["artifactType"] == SBOM
    assert oci.merge_index(index, one) is None
    both = oci.merge_index({**index, "annotations": {"keep": "me"}}, two)
    assert both is not None
    assert [m["digest"] for m in both["manifests"]] == [one.digest, two.digest]
    assert both["annotations"] == {"keep": "me"}


def test_verify_digest_detects_other_bytes_and_sizes() -> None:
    data = b"payload"
    oci.verify_digest(data, oci.digest_of(data), len(data), "x")
    with pytest.raises(oci.DigestMismatch, match="not sha256:") as caught:
        oci.verify_digest(b"other", oci.digest_of(data), None, "payload of x")
    assert caught.value.exit_code == 1
    with pytest.raises(oci.DigestMismatch, match="8 bytes, its descriptor says 7"):
        oci.verify_digest(data + b"!", oci.digest_of(data), len(data), "payload of x")


def test_artifact_refused_exits_like_a_service_error() -> None:
    assert oci.ArtifactRefused("x").exit_code == EXIT_SERVICE
    assert oci.ArtifactRefused.title == "registry refused the artifact"


# ----------------------------------------------------------------------------- open registry


def test_attach_list_and_fetch_two_artifacts(
    registry: str, capfd: pytest.CaptureFixture[str]
) -> None:
    client = oci.OciRegistry(registry)
    repository = f"{registry}/acme/{unique('iris-serving')}"
    subject = push_tiny_image(client, repository)
    assert client.manifest_descriptor(repository, "v1") == subject
    sbom, statement = b'{"bomFormat":"CycloneDX"}', b'{"_type":"https://in-toto.io/Statement/v1"}'

    sbom_artifact = client.attach(repository, subject, SBOM, sbom, SBOM, {"what": "sbom"})
    statement_artifact = client.attach(repository, subject, STATEMENT, statement, STATEMENT, {})

    assert sbom_artifact.artifact_type == SBOM
    assert sbom_artifact.annotations["what"] == "sbom"
    assert oci.CREATED in statement_artifact.annotations
    found = client.referrers(repository, subject.digest)
    assert {d.digest for d in found} == {sbom_artifact.digest, statement_artifact.digest}
    assert client.referrers(repository, subject.digest, SBOM) == [sbom_artifact]
    assert client.referrers(repository, subject.digest, STATEMENT) == [statement_artifact]
    assert client.referrers(repository, subject.digest, "application/vnd.other") == []

    manifest, payload = client.fetch(repository, sbom_artifact)
    assert payload == sbom
    assert manifest["artifactType"] == SBOM
    assert manifest["subject"] == {
        "mediaType": subject.media_type,
        "digest": subject.digest,
        "size": subject.size,
    }
    assert manifest["config"] == oci.EMPTY_DESCRIPTOR.as_json()
    assert manifest["layers"][0]["mediaType"] == SBOM
    assert client.fetch(repository, statement_artifact)[1] == statement
    assert capfd.readouterr().out == ""


def test_attaching_again_adds_no_entry_and_keeps_the_others(registry: str) -> None:
    client = oci.OciRegistry(registry)
    path = f"acme/{unique('again')}"
    repository = f"{registry}/{path}"
    subject = push_tiny_image(client, repository)
    first = client.attach(repository, subject, SBOM, b"sbom v1", SBOM, {"n": "1"})
    statement = client.attach(repository, subject, STATEMENT, b"statement", STATEMENT, {})

    # The same payload and annotations (a later creation time aside): the same artifact.
    assert client.attach(repository, subject, SBOM, b"sbom v1", SBOM, {"n": "1"}) == first
    # An explicit creation time, pushed twice: one manifest, one index entry.
    pinned = {oci.CREATED: "2026-01-02T03:04:05Z"}
    second = client.attach(repository, subject, SBOM, b"sbom v2", SBOM, pinned)
    assert client.attach(repository, subject, SBOM, b"sbom v2", SBOM, pinned) == second

    content_type, index = raw_manifest(registry, path, oci.referrers_tag(subject.digest))
    digests = [entry["digest"] for entry in index["manifests"]]
    assert digests == [first.digest, statement.digest, second.digest]
    assert content_type == oci.OCI_INDEX


def test_the_referrers_tag_holds_a_valid_oci_index(registry: str) -> None:
    client = oci.OciRegistry(registry)
    path = f"acme/{unique('index')}"
    repository = f"{registry}/{path}"
    subject = push_tiny_image(client, repository)
    artifact = client.attach(repository, subject, SBOM, b"{}", SBOM, {"a": "b"})

    tag = oci.referrers_tag(subject.digest)
    assert tag == "sha256-" + subject.digest.split(":")[1]
    content_type, index = raw_manifest(registry, path, tag)
    assert content_type == oci.OCI_INDEX
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == oci.OCI_INDEX
    assert index["manifests"] == [artifact.as_json()]
    entry = index["manifests"][0]
    assert set(entry) == {"mediaType", "digest", "size", "artifactType", "annotations"}
    assert entry["mediaType"] == oci.OCI_MANIFEST
    assert entry["annotations"]["a"] == "b"
    assert oci.CREATED in entry["annotations"]
    # Each entry names a manifest the registry has, of that size.
    _, manifest = raw_manifest(registry, path, entry["digest"])
    assert len(oci.canonical_json(manifest)) == entry["size"]
    assert client.manifest_descriptor(repository, tag).media_type == oci.OCI_INDEX


def test_a_digest_without_referrers_has_none(registry: str) -> None:
    client = oci.OciRegistry(registry)
    repository = f"{registry}/acme/{unique('none')}"
    subject = push_tiny_image(client, repository)
    assert client.referrers(repository, subject.digest) == []
    assert client.referrers(repository, "sha256:" + "0" * 64, SBOM) == []


def test_a_manifest_the_registry_refuses_is_artifact_refused(registry: str) -> None:
    """Distribution checks that a manifest's blobs exist: a layer never uploaded is a 400."""
    client = oci.OciRegistry(registry)
    repository = f"{registry}/acme/{unique('refused')}"
    subject = push_tiny_image(client, repository)
    missing = oci.Descriptor(SBOM, oci.digest_of(b"never uploaded"), 14)
    client.push_blob(repository, oci.EMPTY_JSON, oci.EMPTY_MEDIA_TYPE)
    manifest = oci.artifact_manifest(subject, SBOM, missing, {})
    with pytest.raises(oci.ArtifactRefused) as caught:
        client.push_manifest(repository, oci.canonical_json(manifest), oci.OCI_MANIFEST)
    message = str(caught.value)
    assert registry in message
    assert "HTTP 400" in message
    assert "MANIFEST_BLOB_UNKNOWN" in message


def test_a_repository_of_another_registry_is_a_config_error(registry: str) -> None:
    client = oci.OciRegistry(registry)
    with pytest.raises(ConfigError, match=f"ghcr.io, not {registry}"):
        client.referrers("ghcr.io/acme/iris", "sha256:" + "0" * 64)
    with pytest.raises(ConfigError, match="not a digest"):
        client.referrers(f"{registry}/acme/iris", "latest")


# ----------------------------------------------------------------------------- corruption


@pytest.fixture(scope="module")
def disk_registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A registry of our own, whose storage a test may corrupt: (address, storage root)."""
    workdir = tmp_path_factory.mktemp("corruptible-registry")
    address, service = _start_registry(workdir)
    yield address, workdir / "data" / "docker" / "registry" / "v2"
    stop(service.process)


def test_bytes_changed_in_the_registry_are_a_digest_mismatch(disk_registry: Any) -> None:
    address, storage = disk_registry
    client = oci.OciRegistry(address)
    repository = f"{address}/acme/{unique('corrupt')}"
    subject = push_tiny_image(client, repository)
    artifact = client.attach(repository, subject, SBOM, b"the real SBOM", SBOM, {})
    layer = oci.Descriptor(SBOM, oci.digest_of(b"the real SBOM"), 13)
    hexdigest = layer.digest.split(":")[1]
    blob = storage / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"
    blob.write_bytes(b"the fake SBOM")  # same size, other bytes: served as they are

    with pytest.raises(oci.DigestMismatch, match=f"not {layer.digest}"):
        client.fetch(repository, artifact)
    # A descriptor that lies about the manifest's size is caught too.
    with pytest.raises(oci.DigestMismatch, match="its descriptor says"):
        client.fetch(repository, oci.Descriptor(artifact.media_type, artifact.digest, 1))


# ----------------------------------------------------------------------------- authentication


def test_the_auth_registry_with_credentials(
    auth_registry: str, capfd: pytest.CaptureFixture[str]
) -> None:
    client = oci.OciRegistry(auth_registry, REGISTRY_USER, REGISTRY_PASSWORD)
    repository = f"{auth_registry}/acme/{unique('private')}"
    subject = push_tiny_image(client, repository)
    artifact = client.attach(repository, subject, STATEMENT, b"statement", STATEMENT, {})
    assert client.referrers(repository, subject.digest) == [artifact]
    assert client.fetch(repository, artifact)[1] == b"statement"
    captured = capfd.readouterr()
    assert REGISTRY_PASSWORD not in captured.out + captured.err
    assert captured.out == ""


def test_the_auth_registry_with_the_credentials_of_docker_login(
    auth_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded = base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
    config = tmp_path / "logged-in"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"auths": {auth_registry: {"auth": encoded}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    client = oci.OciRegistry(auth_registry)
    repository = f"{auth_registry}/acme/{unique('docker-login')}"
    subject = push_tiny_image(client, repository)
    assert client.referrers(repository, subject.digest) == []


def test_the_auth_registry_without_credentials_is_a_config_error(
    auth_registry: str, capfd: pytest.CaptureFixture[str]
) -> None:
    client = oci.OciRegistry(auth_registry)
    with pytest.raises(ConfigError) as caught:
        client.referrers(f"{auth_registry}/acme/x", "sha256:" + "0" * 64)
    text = str(caught.value)
    assert auth_registry in text
    assert "REGISTRY_USERNAME" in text
    assert "docker login" in text
    assert caught.value.exit_code == 2
    assert capfd.readouterr().out == ""


def test_a_wrong_password_is_a_config_error_without_the_password(
    auth_registry: str, capfd: pytest.CaptureFixture[str]
) -> None:
    wrong = REGISTRY_PASSWORD + "-but-wrong"
    client = oci.OciRegistry(auth_registry, REGISTRY_USER, wrong)
    with pytest.raises(ConfigError) as caught:
        push_tiny_image(client, f"{auth_registry}/acme/{unique('wrong')}")
    text = str(caught.value) + caught.value.title
    assert auth_registry in text
    assert "refused the credentials" in text
    assert "REGISTRY_PASSWORD" in text
    assert wrong not in text
    assert REGISTRY_PASSWORD not in text
    assert base64.b64encode(f"{REGISTRY_USER}:{wrong}".encode()).decode() not in text
    captured = capfd.readouterr()
    assert wrong not in captured.out + captured.err
    assert captured.out == ""


def test_a_username_without_password_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="but no password"):
        oci.OciRegistry("ghcr.io", "someone", "")


# ----------------------------------------------------------------------------- unreachable


def test_an_unreachable_registry_is_a_service_error(capfd: pytest.CaptureFixture[str]) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    client = oci.OciRegistry(host)
    with pytest.raises(ServiceError) as caught:
        client.referrers(f"{host}/acme/iris", "sha256:" + "0" * 64)
    assert host in str(caught.value)
    assert "reachable" in str(caught.value)
    assert caught.value.exit_code == EXIT_SERVICE
    assert capfd.readouterr().out == ""


# ----------------------------------------------------------------------------- docker push


def test_image_config_of_a_docker_pushed_image(docker_client: Any, registry: str) -> None:
    """A one-file image made by `docker import` with a label, pushed by the Docker engine:
    its manifest descriptor, its labels, and an artifact attached to it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = b"hello\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    name = unique("docker-pushed")
    repository = f"{registry}/acme/{name}"
    docker_client.api.import_image_from_data(
        buffer.getvalue(),
        repository=repository,
        tag="v1",
        changes=["LABEL org.mlops-actions.model.name=iris"],
    )
    try:
        errors = [
            chunk
            for chunk in docker_client.images.push(repository, "v1", stream=True, decode=True)
            if "error" in chunk or "errorDetail" in chunk
        ]
        assert not errors, errors
        pushed = docker_client.images.get_registry_data(f"{repository}:v1").id
    finally:
        docker_client.images.remove(f"{repository}:v1", force=True)

    client = oci.OciRegistry(registry)
    subject = client.manifest_descriptor(repository, "v1")
    assert subject.digest == pushed
    assert subject.media_type in (oci.DOCKER_MANIFEST, oci.OCI_MANIFEST, oci.OCI_INDEX)
    assert client.manifest_descriptor(repository, subject.digest) == subject
    config = client.image_config(repository, subject.digest)
    assert config["config"]["Labels"] == {"org.mlops-actions.model.name": "iris"}
    artifact = client.attach(repository, subject, SBOM, b"sbom", SBOM, {})
    assert client.referrers(repository, subject.digest, SBOM) == [artifact]
