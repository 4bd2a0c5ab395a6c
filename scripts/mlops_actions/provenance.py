"""Build provenance of a serving image: an in-toto Statement (v1) whose subject is the pushed
image digest, with a SLSA Provenance v1 predicate that names what went into the image: the
model version and its artifact digest, the run that logged it, the data fingerprint, the
serving requirements (as asked, and as resolved and installed), the base image by digest and
the suite's version.

The documents are built and read back through in-toto-attestation's protobuf messages, so a
field the specification does not know is an error here rather than in a verifier later.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
# What this build is and how to read its parameters (docs/supply-chain.md). URNs: the suite
# has no web address of its own, and a fork must not change what a verifier's policy names.
BUILD_TYPE = "urn:mlops-actions:build-push:v1"
LOCAL_BUILDER = "urn:mlops-actions:cli"  # outside GitHub Actions: a developer's machine
MEDIA_TYPE = "application/vnd.in-toto+json"


@dataclass(frozen=True)
class Dependency:
    """One resolved input of the build (a SLSA ResourceDescriptor)."""

    name: str
    uri: str = ""
    digest: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"name": self.name}
        if self.uri:
            found["uri"] = self.uri
        if self.digest:
            found["digest"] = dict(self.digest)
        annotations = {k: v for k, v in self.annotations.items() if v}
        if annotations:
            found["annotations"] = annotations
        return found


@dataclass(frozen=True)
class BuildFacts:
    """Everything the statement says, gathered by build-push."""

    image_repository: str
    image_digest: str  # sha256:<hex>, as the registry reported it
    tags: Sequence[str]
    model_given: str  # as the user named it, e.g. models:/iris@champion
    model_uri: str  # the version it resolved to, e.g. models:/iris/3
    model_name: str
    model_version: str
    model_digest: str  # sha256:<hex> of the model directory (sbom.model_digest)
    run_id: str
    flavor: str
    mlflow_version: str
    data_fingerprint: str
    requirements_sha256: str  # requirements.txt of the build context: what was asked for
    lock: str  # name==version --hash lines of what was installed: what was resolved
    base_image: str
    base_image_digest: str  # sha256:<hex>: the registry digest, else the local image id
    base_image_digest_kind: str  # "repository-digest" | "image-id"
    dockerfile: str  # "generated" or the user's path
    dockerfile_sha256: str
    platform: str
    build_arg_names: Sequence[str]
    suite_version: str
    started: datetime
    finished: datetime
    source_repository: str = ""  # owner/name on GitHub
    commit: str = ""
    server_url: str = "https://github.com"
    workflow_ref: str = ""  # GITHUB_WORKFLOW_REF: owner/name/.github/workflows/x.yml@ref
    run_id_github: str = ""
    run_attempt: str = ""


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _digest_map(digest: str) -> dict[str, str]:
    """'sha256:<hex>' → {'sha256': '<hex>'}; a bare hex digest is taken as sha256."""
    algorithm, _, value = digest.partition(":")
    return {algorithm: value} if value else ({"sha256": digest} if digest else {})


def docker_purl(reference: str) -> str:
    """`python:3.11-slim` → pkg:docker/python@3.11-slim, as BuildKit's provenance names bases;
    a registry other than Docker Hub goes in the repository_url qualifier."""
    from packageurl import PackageURL

    name, _, digest = reference.partition("@")
    last = name.rsplit("/", 1)[-1]
    repository, tag = name.rsplit(":", 1) if ":" in last else (name, "")
    first, _, rest = repository.partition("/")
    registry = first if rest and ("." in first or ":" in first or first == "localhost") else ""
    path = rest if registry else repository
    namespace, _, short = path.rpartition("/")
    return PackageURL(
        "docker",
        namespace or None,
        short,
        digest or tag or None,
        {"repository_url": registry} if registry else None,
    ).to_string()


def dependencies(facts: BuildFacts) -> list[Dependency]:
    """The resolved inputs, the model first; one without uri and digest is left out."""
    found = [
        Dependency(
            "model",
            facts.model_uri,
            _digest_map(facts.model_digest),
            {
                "name": facts.model_name,
                "version": facts.model_version,
                "flavor": facts.flavor,
                "mlflowVersion": facts.mlflow_version,
            },
        ),
        Dependency("mlflow-run", f"runs:/{facts.run_id}" if facts.run_id else ""),
        Dependency(
            "data",
            "",
            {"sha256": facts.data_fingerprint} if facts.data_fingerprint else {},
            {"kind": "dvc-fingerprint"},
        ),
        Dependency(
            "requirements.txt",
            "",
            {"sha256": facts.requirements_sha256} if facts.requirements_sha256 else {},
        ),
        Dependency(
            "requirements.lock", "", {"sha256": sha256_hex(facts.lock)} if facts.lock else {}
        ),
        Dependency(
            "base-image",
            docker_purl(facts.base_image),
            _digest_map(facts.base_image_digest),
            {"digestKind": facts.base_image_digest_kind},
        ),
        Dependency(
            "Dockerfile",
            "" if facts.dockerfile == "generated" else facts.dockerfile,
            {"sha256": facts.dockerfile_sha256},
            {"origin": "generated" if facts.dockerfile == "generated" else "user"},
        ),
        Dependency("mlops-actions", f"pkg:pypi/mlops-actions@{facts.suite_version}"),
    ]
    if facts.source_repository and facts.commit:
        found.append(
            Dependency(
                "source",
                f"git+{facts.server_url}/{facts.source_repository}",
                {"gitCommit": facts.commit},
            )
        )
    return [d for d in found if d.uri or d.digest]


def statement(facts: BuildFacts) -> dict[str, Any]:
    """The in-toto Statement, checked against the in-toto and SLSA protobuf definitions."""
    external: dict[str, Any] = {
        "model": facts.model_given,
        "image": facts.image_repository,
        "tags": list(facts.tags),
        "baseImage": facts.base_image,
        "dockerfile": facts.dockerfile,
    }
    if facts.platform:
        external["platform"] = facts.platform
    if facts.build_arg_names:  # names only: values may be anything, and stay in the log
        external["buildArgs"] = sorted(facts.build_arg_names)
    if facts.workflow_ref:
        repository, _, ref = facts.workflow_ref.partition("@")
        external["workflow"] = {
            "repository": f"{facts.server_url}/{facts.source_repository}",
            "path": repository.split("/", 2)[-1] if repository.count("/") >= 2 else repository,
            "ref": ref,
        }
    builder_id = f"{facts.server_url}/{facts.workflow_ref}" if facts.workflow_ref else LOCAL_BUILDER
    metadata: dict[str, Any] = {
        "startedOn": _timestamp(facts.started),
        "finishedOn": _timestamp(facts.finished),
    }
    if facts.run_id_github and facts.source_repository:
        metadata["invocationId"] = (
            f"{facts.server_url}/{facts.source_repository}/actions/runs/{facts.run_id_github}"
            f"/attempts/{facts.run_attempt or '1'}"
        )
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": external,
            "internalParameters": {"suiteVersion": facts.suite_version},
            "resolvedDependencies": [d.as_json() for d in dependencies(facts)],
        },
        "runDetails": {
            "builder": {"id": builder_id, "version": {"mlops-actions": facts.suite_version}},
            "metadata": metadata,
        },
    }
    document = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": facts.image_repository, "digest": _digest_map(facts.image_digest)}],
        "predicateType": SLSA_PROVENANCE,
        "predicate": predicate,
    }
    _check(document)
    return document


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_bytes(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"


def _check(document: Mapping[str, Any]) -> None:
    """Parse the statement and predicate into their protobuf messages and run the library's
    own validation: unknown fields, missing subjects or digests, bad timestamps all raise."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    try:
        message = json_format.ParseDict(dict(document), statement_pb2.Statement())
        json_format.ParseDict(dict(document["predicate"]), provenance_pb2.Provenance())
        Statement.copy_from_pb(message).validate()
    except (json_format.ParseError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"not an in-toto SLSA provenance statement: {error}") from None


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ParsedProvenance:
    subject_digests: tuple[str, ...]  # sha256:<hex>
    model_uri: str
    model_name: str
    model_version: str
    model_digest: str
    builder_id: str


def parse(data: bytes) -> ParsedProvenance:
    """A provenance statement read back (verify-image); ValueError says what is wrong."""
    try:
        document = json.loads(data)
    except ValueError as error:
        raise ValueError(f"the provenance is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ValueError("the provenance is not a JSON object")
    if document.get("predicateType") != SLSA_PROVENANCE:
        raise ValueError(
            f"the provenance's predicate type is {document.get('predicateType')!r}, "
            f"not {SLSA_PROVENANCE}"
        )
    _check(document)
    subjects = tuple(
        f"sha256:{s['digest']['sha256']}"
        for s in document["subject"]
        if isinstance(s.get("digest"), dict) and "sha256" in s["digest"]
    )
    definition = document["predicate"].get("buildDefinition") or {}
    model = next(
        (d for d in definition.get("resolvedDependencies") or [] if d.get("name") == "model"),
        None,
    )
    if model is None:
        raise ValueError("the provenance names no model among its resolved dependencies")
    annotations = model.get("annotations") or {}
    digest = (model.get("digest") or {}).get("sha256", "")
    return ParsedProvenance(
        subject_digests=subjects,
        model_uri=str(model.get("uri", "")),
        model_name=str(annotations.get("name", "")),
        model_version=str(annotations.get("version", "")),
        model_digest=f"sha256:{digest}" if digest else "",
        builder_id=str(
            ((document["predicate"].get("runDetails") or {}).get("builder") or {}).get("id", "")
        ),
    )
