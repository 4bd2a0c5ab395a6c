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
from .common import _origin, _registry_client, _value, emit, load_config
from .monitoring import _observe
from .options import IMAGE_OPTIONS, MLFLOW_OPTIONS


def cmd_build_push(args: argparse.Namespace) -> int:
    """Build the serving image of a model, smoke-test it, push it, report the digest."""
    import tempfile
    from datetime import datetime, timezone

    from .. import context, image, registry, report, tracking
    from ..errors import ConfigError

    config = load_config(args, (*MLFLOW_OPTIONS, *IMAGE_OPTIONS))
    given = _value(args, "model-uri")
    if not given:
        raise ConfigError("the model-uri input is empty", "e.g. models:/<name>@champion")
    repository, push, username, password = _image_target(config, args)
    gha.mask(password)
    mlflow_client, uri = _registry_client(config)
    run_context = context.detect(os.environ, Path.cwd())
    engine = image.docker_client()
    registry_host = image.registry_of(repository)
    if push and username:  # before building: bad credentials should not cost a build
        image.login(engine, registry_host, username, password)
    with tempfile.TemporaryDirectory(prefix="mlops-image-") as scratch:
        with tracking.tracking_server(uri, f"resolving the model {given}"):
            resolved = registry.resolve_candidate(mlflow_client, given)
            model_dir = _download_model(resolved.model_uri, uri, config, Path(scratch))
        name = resolved.version.name if resolved.version else ""
        version = resolved.version.version if resolved.version else ""
        facts = image.read_model(model_dir, resolved.model_uri, name, version)
        alias = given.split("@", 1)[1] if "@" in given else ""
        tags = _image_tags(version, alias, run_context.commit, config.get("image.tags") or [])
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        source = f"https://github.com/{run_context.repository}" if run_context.repository else ""
        spec = image.BuildSpec(
            context=image.write_context(model_dir, facts, Path(scratch) / "context"),
            base_image=str(config.get("image.base_image") or _default_base(facts)),
            tags=tuple(f"{repository}:{tag}" for tag in tags),
            labels=image.labels_for(facts, run_context.commit, source, created),
            build_args={
                "MODEL_NAME": name,
                "MODEL_VERSION": version,
                **{str(k): str(v) for k, v in (config.get("image.build_args") or {}).items()},
            },
            platform=str(config.get("image.platform") or ""),
            extra_ca=Path(str(config.get("image.extra_ca")))
            if config.get("image.extra_ca")
            else None,
            dockerfile=Path(str(config.get("image.dockerfile")))
            if config.get("image.dockerfile")
            else None,
        )
        cli_names = (
            [str(config.get("image.docker_cli"))]
            if config.get("image.docker_cli")
            else [
                "docker",
                "/usr/bin/docker",
            ]
        )
        builder = image.find_builder(cli_names, os.environ)
        with gha.group(f"docker build {repository} ({', '.join(tags)})"):
            image_id = image.build(builder, spec)
    smoke = None
    if config.get("image.smoke_test"):
        with gha.group("smoke test"):
            smoke = image.smoke_test(engine, image_id, facts.example)
        print(f"smoke test passed: /ping after {smoke.seconds_to_ping:.1f} s")
    digest = ""
    if push:
        for tag in tags:
            digest = image.push(engine, repository, tag)
    outputs = {
        "image": f"{repository}@{digest}" if digest else f"{repository}:{tags[0]}",
        "digest": digest,
        "tags": "\n".join(f"{repository}:{tag}" for tag in tags),
        "image-id": image_id,
        "size-bytes": str(image.image_size(engine, image_id)),
        "model-version": version,
    }
    emit(outputs)
    _observe(monitor.image_samples(int(outputs["size-bytes"]), version))
    gha.add_summary(report.image_summary(outputs, facts, smoke, pushed=bool(digest)))
    return EXIT_OK


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
