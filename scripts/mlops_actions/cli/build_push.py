"""`mlops-actions build-push`: build a model's serving image, smoke-test it, push it."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import gha, monitor
from ..config import Config
from ..errors import EXIT_OK
from . import manifests_cmd
from .common import _origin, _registry_client, _value, emit, load_config
from .monitoring import _observe
from .options import IMAGE_OPTIONS, MLFLOW_OPTIONS


def cmd_build_push(args: argparse.Namespace) -> int:
    """Build the serving image of a model, smoke-test it, push it, report the digest."""
    import tempfile
    from datetime import datetime, timezone

    from .. import attestation, context, image, report, sbom
    from ..errors import ConfigError, MlopsError

    config = load_config(args, (*MLFLOW_OPTIONS, *IMAGE_OPTIONS))
    given = _value(args, "model-uri")
    if not given:
        raise ConfigError("the model-uri input is empty", "e.g. models:/<name>@champion")
    repository, push, username, password = _image_target(config, args)
    gha.mask(password)
    mlflow_client, uri = _registry_client(config)
    run_context = context.detect(os.environ, Path.cwd())
    engine = image.docker_client()
    if push and username:  # before building: bad credentials should not cost a build
        image.login(engine, image.registry_of(repository), username, password)
    started = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory(prefix="mlops-image-") as scratch:
        facts, model_dir, data_fingerprint = _fetch_model(
            mlflow_client, uri, given, config, Path(scratch)
        )
        model_digest = sbom.model_digest(model_dir)
        deploy = manifests_cmd.check_for_build(config, push, repository, facts)
        alias = given.split("@", 1)[1] if "@" in given else ""
        tags = _image_tags(facts.version, alias, run_context.commit, config.get("image.tags") or [])
        spec = _build_spec(config, facts, model_dir, Path(scratch), repository, tags, run_context)
        builder = image.find_builder(_docker_clis(config), os.environ)
        with gha.group(f"docker build {repository} ({', '.join(tags)})"):
            image_id = image.build(builder, spec)
        inputs = _build_inputs(spec, engine)
    smoke = _smoke_test(config, engine, image_id, facts)
    attest = push and bool(config.get("image.attestations"))  # the subject is the pushed digest
    inventory = sbom.read_inventory(engine, image_id) if attest else None
    digest = ""
    if push:
        for tag in tags:
            digest = image.push(engine, repository, tag)
    outputs = _outputs(engine, repository, digest, tags, image_id, facts.version)
    linked = None
    if inventory is not None:
        supply = attestation.Supply(
            inventory,
            facts,
            given,
            model_digest,
            data_fingerprint,
            inputs,
            tuple(tags),
            started,
            run_context,
        )
        try:
            linked = _attest_and_link(
                args, mlflow_client, uri, repository, digest, supply, username, password
            )
        except MlopsError as error:
            emit(outputs)  # the image is pushed: say where, then fail the step
            gha.add_summary(report.image_summary(outputs, facts, smoke, pushed=True))
            raise attestation.AttestationFailed.after(f"{repository}@{digest}", error) from None
        outputs.update(linked.outputs)
    emit(outputs | manifests_cmd.write_for_build(deploy, outputs["image"], facts))
    _observe(monitor.image_samples(int(outputs["size-bytes"]), facts.version))
    gha.add_summary(report.image_summary(outputs, facts, smoke, pushed=bool(digest), linked=linked))
    return EXIT_OK


def _smoke_test(config: Config, engine: Any, image_id: str, facts: Any) -> Any:
    from .. import image

    if not config.get("image.smoke_test"):
        return None
    with gha.group("smoke test"):
        smoke = image.smoke_test(engine, image_id, facts.example)
    print(f"smoke test passed: /ping after {smoke.seconds_to_ping:.1f} s")
    return smoke


def _fetch_model(
    mlflow_client: Any, uri: str, given: str, config: Config, scratch: Path
) -> tuple[Any, Path, str]:
    """The model's facts, its downloaded directory and the data fingerprint it was trained on."""
    from .. import image, registry, tracking

    with tracking.tracking_server(uri, f"resolving the model {given}"):
        resolved = registry.resolve_candidate(mlflow_client, given)
        model_dir = _download_model(resolved.model_uri, uri, config, scratch)
        data_fingerprint = _data_fingerprint(mlflow_client, resolved)
    name = resolved.version.name if resolved.version else ""
    version = resolved.version.version if resolved.version else ""
    return (
        image.read_model(model_dir, resolved.model_uri, name, version),
        model_dir,
        data_fingerprint,
    )


def _outputs(
    engine: Any, repository: str, digest: str, tags: Sequence[str], image_id: str, version: str
) -> dict[str, str]:
    from .. import image

    return {
        "image": f"{repository}@{digest}" if digest else f"{repository}:{tags[0]}",
        "digest": digest,
        "tags": "\n".join(f"{repository}:{tag}" for tag in tags),
        "image-id": image_id,
        "size-bytes": str(image.image_size(engine, image_id)),
        "model-version": version,
        # Filled in after the attestations are stored (empty without push or attestations).
        **dict.fromkeys(("sbom-file", "provenance-file", "sbom-digest", "provenance-digest"), ""),
        "manifests-dir": "",  # filled in after the push (and the attestations)
    }


def _build_spec(
    config: Config,
    facts: Any,
    model_dir: Path,
    scratch: Path,
    repository: str,
    tags: Sequence[str],
    run_context: Any,
) -> Any:
    from datetime import datetime, timezone

    from .. import image

    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    source = f"https://github.com/{run_context.repository}" if run_context.repository else ""
    return image.BuildSpec(
        context=image.write_context(model_dir, facts, scratch / "context"),
        base_image=str(config.get("image.base_image") or _default_base(facts)),
        tags=tuple(f"{repository}:{tag}" for tag in tags),
        labels=image.labels_for(facts, run_context.commit, source, created),
        build_args={
            "MODEL_NAME": facts.name,
            "MODEL_VERSION": facts.version,
            **{str(k): str(v) for k, v in (config.get("image.build_args") or {}).items()},
        },
        platform=str(config.get("image.platform") or ""),
        extra_ca=Path(str(config.get("image.extra_ca"))) if config.get("image.extra_ca") else None,
        dockerfile=Path(str(config.get("image.dockerfile")))
        if config.get("image.dockerfile")
        else None,
    )


def _docker_clis(config: Config) -> list[str]:
    chosen = config.get("image.docker_cli")
    return [str(chosen)] if chosen else ["docker", "/usr/bin/docker"]


def _image_target(config: Config, args: argparse.Namespace) -> tuple[str, bool, str, str]:
    """Repository, push on/off and registry credentials, checked before anything is built."""
    from .. import image
    from ..errors import ConfigError

    repository = str(config.get("image.repository") or "")
    push = bool(config.get("image.push"))
    if not repository:
        raise ConfigError(
            "image.repository is not set", "set the image input, e.g. ghcr.io/<owner>/<name>"
        )
    image.check_repository(repository, _origin(config, "image.repository"))
    manifests_cmd.deploy_settings(config)  # deploy: in mlops.yaml, checked before any work
    if config.get("image.base_image"):
        image.check_reference(
            str(config.get("image.base_image")), _origin(config, "image.base_image")
        )
    for key in ("image.extra_ca", "image.dockerfile"):
        path = str(config.get(key) or "")
        if path and not Path(path).is_file():
            raise ConfigError(
                f"{_origin(config, key)}: {path!r} is not a file",
                "give the path of the file, relative to the working directory",
            )
    username = _value(args, "registry-username") or os.environ.get("REGISTRY_USERNAME", "")
    password = _value(args, "registry-password") or os.environ.get("REGISTRY_PASSWORD", "")
    if push and username and not password:
        raise ConfigError(
            "registry-username is set but there is no password",
            "pass the password or token in the REGISTRY_PASSWORD environment variable",
        )
    return repository, push, username, password


def _download_model(model_uri: str, tracking_uri: str, config: Config, scratch: Path) -> Path:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(str(config.get("mlflow.registry_uri") or tracking_uri))
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=model_uri, dst_path=str(scratch / "model")
    )
    return Path(local)


def _image_tags(version: str, alias: str, commit: str, extra: Sequence[str]) -> list[str]:
    """v<version>, the alias, sha-<commit>, then the user's; each once, in that order."""
    tags = [f"v{version}" if version else "", alias, f"sha-{commit[:12]}" if commit else ""]
    tags += [str(tag) for tag in extra]
    unique = [tag for i, tag in enumerate(tags) if tag and tag not in tags[:i]]
    return unique or ["latest"]


def _default_base(facts: Any) -> str:
    major_minor = ".".join(facts.python_version.split(".")[:2]) or "3.11"
    return f"python:{major_minor}-slim"


def _data_fingerprint(mlflow_client: Any, resolved: Any) -> str:
    """The data the model was trained on: the version's tag (promote copies it), else the
    training run's (train sets it); '' when neither says."""
    if resolved.version is not None:
        version = mlflow_client.get_model_version(resolved.version.name, resolved.version.version)
        found = (version.tags or {}).get("mlops.data.fingerprint", "")
        if found:
            return str(found)
    if resolved.run_id:
        run = mlflow_client.get_run(resolved.run_id)
        return str(run.data.tags.get("mlops.data.fingerprint", ""))
    return ""


def _build_inputs(spec: Any, engine: Any) -> Any:
    """What provenance says went into the build besides the model (read while the build
    context still exists)."""
    from .. import attestation
    from ..provenance import sha256_hex

    dockerfile = spec.dockerfile or spec.context / "Dockerfile"
    base_digest, kind = _base_image_digest(engine, spec.base_image)
    return attestation.BuildInputs(
        base_image=spec.base_image,
        base_image_digest=base_digest,
        base_image_digest_kind=kind,
        requirements_sha256=sha256_hex((spec.context / "requirements.txt").read_bytes()),
        dockerfile=str(spec.dockerfile) if spec.dockerfile else "generated",
        dockerfile_sha256=sha256_hex(Path(dockerfile).read_bytes()),
        platform=spec.platform,
        build_arg_names=tuple(sorted(spec.build_args)),
    )


def _base_image_digest(engine: Any, reference: str) -> tuple[str, str]:
    """The base image by digest: the one in its reference, else the registry digest the
    engine recorded when it pulled it, else the local image id (an image made here, say by
    `docker import`, has no registry digest)."""
    if "@" in reference:
        return reference.rsplit("@", 1)[1], "repository-digest"
    try:
        attrs = engine.images.get(reference).attrs
    except Exception:  # BuildKit pulled it into its own store: the engine does not know it
        try:
            return str(engine.images.get_registry_data(reference).id), "repository-digest"
        except Exception:
            return "", ""
    repository = reference.rsplit(":", 1)[0] if ":" in reference.rsplit("/", 1)[-1] else reference
    for repo_digest in attrs.get("RepoDigests") or []:
        name, _, digest = str(repo_digest).partition("@")
        if name == repository or name.endswith("/" + repository):
            return digest, "repository-digest"
    return str(attrs.get("Id", "")), "image-id"


def _attestation_dir() -> Path:
    """SBOM and provenance files: in RUNNER_TEMP on a runner, else in ./mlops-attestations."""
    return Path(os.environ.get("RUNNER_TEMP") or Path.cwd()) / "mlops-attestations"


def _attest_and_link(
    args: argparse.Namespace,
    mlflow_client: Any,
    tracking_uri: str,
    repository: str,
    digest: str,
    supply: Any,
    username: str,
    password: str,
) -> Any:
    """Attach the SBOM and provenance to the pushed digest, then tag the model version and
    the history entry of the promotion that led here; only in that order."""
    from .. import __version__, attestation, image, oci, tracking

    image_ref = f"{repository}@{digest}"
    sbom_bytes, statement = attestation.documents(
        supply, repository, digest, __version__, os.environ
    )
    client = oci.OciRegistry(image.registry_of(repository), username, password)
    attached = attestation.attach(
        client, repository, digest, sbom_bytes, statement, _attestation_dir()
    )
    print(
        f"attached to {image_ref}: SBOM {attached.sbom_digest}, "
        f"provenance {attached.provenance_digest}"
    )
    name, version = supply.model.name, supply.model.version
    if not (name and version):
        return attestation.Linked(image_ref, attached, False, "")
    alias = supply.model_given.split("@", 1)[1] if "@" in supply.model_given else ""
    promotion_id = _value(args, "promotion-id")
    with tracking.tracking_server(tracking_uri, f"tagging {name} version {version}"):
        attestation.link_model_version(
            mlflow_client, name, version, attestation.version_tags(image_ref, attached)
        )
        move = attestation.record_in_history(
            mlflow_client, name, version, image_ref, alias, promotion_id
        )
    entry = f"{move.alias} #{move.seq}" if move is not None else ""
    print(
        f"model {name} version {version} tagged with the image"
        + (f"; history entry {entry} records it" if entry else "")
    )
    return attestation.Linked(image_ref, attached, True, entry)
