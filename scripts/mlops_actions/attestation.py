"""What a pushed serving image is and where it came from, stored where tools look for it and
linked both ways to the model registry.

After the image push, build-push attaches two OCI artifacts to the image digest (oci.py: the
referrers API, or the referrers tag schema on registries without it): the CycloneDX SBOM
(sbom.py) and the in-toto statement with SLSA provenance (provenance.py). Only when both are
stored does the model version get tags naming the image digest and the two artifact digests,
so a version never points at an image whose attestations are missing.

`verify-image` reads them back by digest and checks what a deploy job should know before
anything reaches a cluster: both exist, parse, name this digest, and agree with the model
version the image says it serves.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import provenance
from .errors import EXIT_REJECTED, MlopsError

SBOM_ARTIFACT_TYPE = "application/vnd.cyclonedx+json"
PROVENANCE_ARTIFACT_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE_ANNOTATION = "in-toto.io/predicate-type"  # as BuildKit and cosign annotate

# The model version's tags after a push with attestations (`registry history` shows the image).
IMAGE_TAG = "mlops.image"
IMAGE_DIGEST_TAG = "mlops.image.digest"
SBOM_DIGEST_TAG = "mlops.image.sbom_digest"
PROVENANCE_DIGEST_TAG = "mlops.image.provenance_digest"

# The labels build-push puts on every image (image.labels_for): the model it serves.
MODEL_NAME_LABEL = "io.mlops-actions.model.name"
MODEL_VERSION_LABEL = "io.mlops-actions.model.version"
MODEL_URI_LABEL = "io.mlops-actions.model.uri"


class AttestationFailed(MlopsError):
    """The image is pushed, but its SBOM or provenance could not be stored, or the model
    version could not be tagged with it. Exits as its cause (2 credentials, 3 a service)."""

    title = "image pushed, attestations not stored"

    @classmethod
    def after(cls, image_ref: str, cause: MlopsError) -> AttestationFailed:
        error = cls(
            f"{image_ref} is pushed, but {cause.message}",
            (cause.hint + "; " if cause.hint else "")
            + "the model version was not tagged with this digest; a re-run pushes the same "
            "image again and attaches what is missing",
        )
        error.exit_code = cause.exit_code
        return error


class VerificationFailed(MlopsError):
    exit_code = EXIT_REJECTED
    title = "image verification failed"


@dataclass(frozen=True)
class BuildInputs:
    """What went into the build besides the model, as provenance names it."""

    base_image: str
    base_image_digest: str  # sha256:<hex>, or "" when it could not be resolved
    base_image_digest_kind: str  # repository-digest | image-id | ""
    requirements_sha256: str
    dockerfile: str  # "generated" or the user's path
    dockerfile_sha256: str
    platform: str
    build_arg_names: tuple[str, ...]


@dataclass(frozen=True)
class Supply:
    """Everything build-push knows about one image before it is pushed."""

    inventory: Any  # sbom.ImageInventory
    model: Any  # image.ModelFacts
    model_given: str
    model_digest: str
    data_fingerprint: str
    inputs: BuildInputs
    tags: tuple[str, ...]
    started: datetime
    context: Any  # context.RunContext


def documents(
    supply: Supply,
    repository: str,
    digest: str,
    suite_version: str,
    environ: Mapping[str, str],
    finished: datetime | None = None,
) -> tuple[bytes, bytes]:
    """The SBOM and the provenance statement of the pushed image `repository@digest`."""
    from . import sbom

    model = supply.model
    sbom_bytes = sbom.cyclonedx_sbom(
        supply.inventory,
        sbom.ModelComponentFacts.of(model, supply.model_digest),
        repository,
        digest,
        suite_version,
    )
    inputs, context = supply.inputs, supply.context
    on_runner = environ if environ.get("GITHUB_ACTIONS") == "true" else {}
    facts = provenance.BuildFacts(
        image_repository=repository,
        image_digest=digest,
        tags=supply.tags,
        model_given=supply.model_given,
        model_uri=model.uri,
        model_name=model.name,
        model_version=model.version,
        model_digest=supply.model_digest,
        run_id=model.run_id,
        flavor=model.flavor,
        mlflow_version=model.mlflow_version,
        data_fingerprint=supply.data_fingerprint,
        requirements_sha256=inputs.requirements_sha256,
        lock=sbom.requirements_lock(supply.inventory),
        base_image=inputs.base_image,
        base_image_digest=inputs.base_image_digest,
        base_image_digest_kind=inputs.base_image_digest_kind,
        dockerfile=inputs.dockerfile,
        dockerfile_sha256=inputs.dockerfile_sha256,
        platform=inputs.platform,
        build_arg_names=inputs.build_arg_names,
        suite_version=suite_version,
        started=supply.started,
        finished=finished or datetime.now(timezone.utc),
        source_repository=context.repository,
        commit=context.commit,
        server_url=(environ.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/"),
        # Only a runner's own variables name a workflow run: locally the builder is the CLI.
        workflow_ref=on_runner.get("GITHUB_WORKFLOW_REF", ""),
        run_id_github=on_runner.get("GITHUB_RUN_ID", ""),
        run_attempt=on_runner.get("GITHUB_RUN_ATTEMPT", ""),
    )
    return sbom_bytes, provenance.to_bytes(provenance.statement(facts))


@dataclass(frozen=True)
class Attached:
    sbom_file: Path
    provenance_file: Path
    sbom_digest: str
    provenance_digest: str


def write_files(
    directory: Path, image_digest: str, sbom: bytes, statement: bytes
) -> tuple[Path, Path]:
    """The two documents as files, named after the image digest (outputs sbom-file and
    provenance-file; actions/attest reads the SBOM from there)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = image_digest.replace(":", "-")
    sbom_file = directory / f"{stem}.cdx.json"
    provenance_file = directory / f"{stem}.provenance.json"
    sbom_file.write_bytes(sbom)
    provenance_file.write_bytes(statement)
    return sbom_file, provenance_file


def attach(
    registry: Any,
    repository: str,
    image_digest: str,
    sbom: bytes,
    statement: bytes,
    directory: Path,
) -> Attached:
    """Store both documents as artifacts that refer to the image; their manifest digests."""
    sbom_file, provenance_file = write_files(directory, image_digest, sbom, statement)
    subject = registry.manifest_descriptor(repository, image_digest)
    sbom_artifact = registry.attach(
        repository,
        subject,
        SBOM_ARTIFACT_TYPE,
        sbom,
        SBOM_ARTIFACT_TYPE,
        {"org.opencontainers.image.description": "CycloneDX SBOM of the image"},
    )
    provenance_artifact = registry.attach(
        repository,
        subject,
        PROVENANCE_ARTIFACT_TYPE,
        statement,
        PROVENANCE_ARTIFACT_TYPE,
        {PREDICATE_TYPE_ANNOTATION: provenance.SLSA_PROVENANCE},
    )
    return Attached(sbom_file, provenance_file, sbom_artifact.digest, provenance_artifact.digest)


# ----------------------------------------------------------------------------- the registry link


@dataclass(frozen=True)
class Linked:
    """The result of a push with attestations: outputs and what the registry now records."""

    image_ref: str
    attached: Attached
    version_tagged: bool  # False for a model that is no registered version (runs:/…)
    history_entry: str  # e.g. "champion #7", or "" when no promotion led to the build

    @property
    def outputs(self) -> dict[str, str]:
        return {
            "sbom-file": str(self.attached.sbom_file),
            "provenance-file": str(self.attached.provenance_file),
            "sbom-digest": self.attached.sbom_digest,
            "provenance-digest": self.attached.provenance_digest,
        }


def version_tags(image_ref: str, attached: Attached) -> dict[str, str]:
    digest = image_ref.partition("@")[2]
    return {
        IMAGE_TAG: image_ref,
        IMAGE_DIGEST_TAG: digest,
        SBOM_DIGEST_TAG: attached.sbom_digest,
        PROVENANCE_DIGEST_TAG: attached.provenance_digest,
    }


def link_model_version(client: Any, name: str, version: str, tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def record_in_history(
    client: Any, name: str, version: str, image_ref: str, alias: str = "", promotion_id: str = ""
) -> Any:
    """Write the image into the history entry of the promotion that led to this build: the
    one with `promotion_id`, else the newest settled move of `alias` to `version`. The entry
    it changed, or None when there is none (a version built by number, a hand-moved alias)."""
    from . import promote, registry

    model = registry.registered_model(client, name)
    tags, aliases = dict(model.tags or {}), dict(model.aliases or {})
    move = find_move(tags, aliases, version, alias, promotion_id)
    if move is None:
        return None
    updated = replace(move, image=image_ref)
    client.set_registered_model_tag(
        name, promote.history_key(move.alias, move.seq), updated.to_json()
    )
    return updated


def find_move(
    tags: Mapping[str, str], aliases: Mapping[str, Any], version: str, alias: str, promotion_id: str
) -> Any:
    from . import promote

    if promotion_id:
        for key in tags:
            if key.startswith(promote.HISTORY_PREFIX):
                moved_alias = key[len(promote.HISTORY_PREFIX) :].rsplit(".", 1)[0]
                for move in promote.parse_history(dict(tags), moved_alias):
                    if move.id == promotion_id and move.to_version == version:
                        return move
        return None
    if not alias:
        return None
    moves = promote.history_from(dict(tags), dict(aliases), alias)
    return next((m for m in reversed(moves) if m.to_version == version), None)


# ----------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Verification:
    image: str
    checks: tuple[Check, ...]
    model_name: str = ""
    model_version: str = ""

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def as_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "passed": self.passed,
            "model": {"name": self.model_name, "version": self.model_version},
            "checks": [check.__dict__ for check in self.checks],
        }


def _newest(descriptors: list[Any]) -> Any:
    """Of several artifacts of one type (a re-run attached again), the newest."""
    return max(
        descriptors,
        key=lambda d: (d.annotations or {}).get("org.opencontainers.image.created", ""),
    )


def verify(
    registry: Any,
    repository: str,
    digest: str,
    expected: Callable[[str, str], tuple[str, str] | None] | None = None,
) -> Verification:
    """Every check, in order; a check that cannot run because an earlier one failed is left
    out. `expected(name, version)` gives the model version the caller wants (--model-uri),
    or None when it does not care."""
    from . import sbom

    image = f"{repository}@{digest}"
    checks: list[Check] = []

    def check(name: str, passed: bool, detail: str) -> bool:
        checks.append(Check(name, passed, detail))
        return passed

    config = registry.image_config(repository, digest)
    labels = ((config.get("config") or {}).get("Labels")) or {}
    name, version = labels.get(MODEL_NAME_LABEL, ""), labels.get(MODEL_VERSION_LABEL, "")
    check(
        "labels",
        bool(name and version),
        f"serves {name} version {version} ({labels.get(MODEL_URI_LABEL, '')})"
        if name and version
        else f"no {MODEL_NAME_LABEL} / {MODEL_VERSION_LABEL} labels: not an mlops-actions image",
    )
    found = registry.referrers(repository, digest)
    documents: dict[str, bytes] = {}
    for kind, artifact_type in (
        ("sbom", SBOM_ARTIFACT_TYPE),
        ("provenance", PROVENANCE_ARTIFACT_TYPE),
    ):
        mine = [d for d in found if d.artifact_type == artifact_type]
        if check(
            f"{kind} attached",
            bool(mine),
            f"{len(mine)} artifact(s) of type {artifact_type}"
            if mine
            else f"no artifact of type {artifact_type} refers to {digest}",
        ):
            documents[kind] = registry.fetch(repository, _newest(mine))[1]
    parsed_sbom = parsed_provenance = None
    if "sbom" in documents:
        try:
            parsed_sbom = sbom.parse_sbom(documents["sbom"])
            check("sbom parses", True, f"CycloneDX, {parsed_sbom.components} components")
        except ValueError as error:
            check("sbom parses", False, str(error))
    if "provenance" in documents:
        try:
            parsed_provenance = provenance.parse(documents["provenance"])
            check("provenance parses", True, f"SLSA v1, builder {parsed_provenance.builder_id}")
        except ValueError as error:
            check("provenance parses", False, str(error))
    if parsed_sbom is not None:
        check(
            "sbom names the digest",
            parsed_sbom.image_digest == digest,
            f"names {parsed_sbom.image_digest or 'no digest'}",
        )
        check(
            "sbom names the model",
            (parsed_sbom.model_name, parsed_sbom.model_version) == (name, version),
            f"model component {parsed_sbom.model_name} version {parsed_sbom.model_version}",
        )
    if parsed_provenance is not None:
        check(
            "provenance subject is the digest",
            digest in parsed_provenance.subject_digests,
            "subject " + (", ".join(parsed_provenance.subject_digests) or "without a digest"),
        )
        check(
            "provenance names the model",
            (parsed_provenance.model_name, parsed_provenance.model_version) == (name, version),
            f"built from {parsed_provenance.model_uri}",
        )
    if parsed_sbom is not None and parsed_provenance is not None:
        check(
            "model digests agree",
            bool(parsed_sbom.model_digest)
            and parsed_sbom.model_digest == parsed_provenance.model_digest,
            f"{parsed_sbom.model_digest or '-'} (sbom), {parsed_provenance.model_digest or '-'} "
            "(provenance)",
        )
    if expected is not None and name and version:
        wanted = expected(name, version)
        if wanted is not None:
            check(
                "model is the one asked for",
                wanted == (name, version),
                f"asked for {wanted[0]} version {wanted[1]}, the image serves {name} "
                f"version {version}",
            )
    return Verification(image, tuple(checks), name, version)


def verification_table(result: Verification) -> str:
    width = max((len(c.name) for c in result.checks), default=0)
    lines = [
        f"{'ok  ' if c.passed else 'FAIL'}  {c.name.ljust(width)}  {c.detail}"
        for c in result.checks
    ]
    return "\n".join([f"verify-image {result.image}", *lines])


def dumps(result: Verification) -> str:
    """The checks as JSON for the log: labels and documents come from the image, so no legacy
    '##[' workflow command may reach the runner through them (JSON keeps every string on one
    line, so no line can start with '::')."""
    return json.dumps(result.as_json(), indent=2).replace("##[", "\\u0023#[")
