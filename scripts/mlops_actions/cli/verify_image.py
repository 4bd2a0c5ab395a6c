"""`mlops-actions verify-image <repository@digest>`: the image's SBOM and provenance are in
the registry, parse, name this digest and the model version the image serves."""

from __future__ import annotations

import argparse
from typing import Any

from .. import gha
from ..errors import EXIT_OK, ConfigError
from .common import _registry_client, _value, load_config, oci_registry
from .options import MLFLOW_OPTIONS, Option

VERIFY_OPTIONS = (
    *MLFLOW_OPTIONS,
    Option(
        "model-uri",
        "the model the image must serve: models:/<name>/<version>, or models:/<name>@<alias> "
        "(read from the MLflow registry)",
    ),
    Option("registry-username", "registry user (the password comes from REGISTRY_PASSWORD)"),
)


def cmd_verify_image(args: argparse.Namespace) -> int:
    """Exit 0 when every check passes, 1 (naming the failed checks) when one does not."""
    from .. import attestation

    config = load_config(args, VERIFY_OPTIONS)
    repository, digest = split_digest_reference(str(args.image or ""))
    client = oci_registry(args, repository)  # credentials checked before MLflow is asked
    wanted = _value(args, "model-uri")
    expected = _expected_model(config, wanted) if wanted else None
    result = attestation.verify(client, repository, digest, expected)
    if args.json:
        print(attestation.dumps(result))
    else:
        print(gha.log_safe(attestation.verification_table(result)))
    failed = [check for check in result.checks if not check.passed]
    if failed:
        raise attestation.VerificationFailed(
            f"{result.image}: " + "; ".join(f"{c.name}: {c.detail}" for c in failed),
            "build and push it again with build-push (attestations on), or deploy another digest",
        )
    return EXIT_OK


def split_digest_reference(text: str) -> tuple[str, str]:
    """`repository@sha256:<64 hex>` → (repository, digest); a tag alone is refused, since a tag
    can move between the check and the deploy."""
    from .. import image

    repository, _, digest = text.strip().partition("@")
    if repository and ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]  # repository:tag@digest: the digest decides
    if not digest:
        raise ConfigError(
            f"verify-image: {text!r} has no digest",
            "pass the image by digest, <repository>@sha256:<hex> (build-push's image output): "
            "a tag can move after the check",
        )
    if not (digest.startswith("sha256:") and len(digest) == 71):
        raise ConfigError(
            f"verify-image: {digest!r} is not a sha256 digest", "e.g. @sha256:<64 hex digits>"
        )
    image.check_repository(repository, "verify-image")
    return repository, digest


def _expected_model(config: Any, given: str) -> Any:
    """A function from the image's (name, version) to the (name, version) wanted; an alias is
    read from the registry once, when the image says which model it serves."""
    from .. import registry, tracking

    name_version = _parse_models_uri(given)
    if name_version is None:
        raise ConfigError(
            f"model-uri {given!r} is not models:/<name>/<version> or models:/<name>@<alias>",
            "verify against a registered model version",
        )
    name, version, alias = name_version
    if not alias:
        return lambda _name, _version: (name, version)

    def from_registry(_name: str, _version: str) -> tuple[str, str]:
        mlflow_client, uri = _registry_client(config)
        with tracking.tracking_server(uri, f"reading {given}"):
            found = registry.resolve_candidate(mlflow_client, given)
        if found.version is None:
            raise ConfigError(f"{given} names no registered model version")
        return found.version.name, found.version.version

    return from_registry


def _parse_models_uri(text: str) -> tuple[str, str, str] | None:
    """models:/<name>/<version> → (name, version, ""); models:/<name>@<alias> → (name, "",
    alias); anything else None."""
    body = text.strip().removeprefix("models:/")
    if body == text.strip() or not body:
        return None
    if "@" in body:
        name, _, alias = body.rpartition("@")
        return (name, "", alias) if name and alias else None
    name, _, version = body.rpartition("/")
    return (name, version, "") if name and version.isdigit() else None
