"""`mlops-actions relay image`: build the relay's container image, smoke-test it, push it."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .. import gha
from ..errors import EXIT_OK, ConfigError
from .common import _value, _where, emit, registry_credentials
from .options import Option

IMAGE_OPTIONS = (
    Option("repository", "the image repository, e.g. ghcr.io/<owner>/mlops-relay", required=True),
    Option("tag", "the image tag (default: v<suite version>)"),
    Option(
        "base-image",
        "base image with Python 3.10+ and python3 -m venv (pin it by digest; "
        "default: python:3.11-slim)",
    ),
    Option("source", "the org.opencontainers.image.source label (default: the suite's origin)"),
    Option("extra-ca", "a CA bundle pip trusts during the build (a secret mount, not a layer)"),
    Option("registry-username", "registry user for the push (password: REGISTRY_PASSWORD)"),
)


def add_relay_image_verb(actions: Any, add_options: Any) -> None:
    parser = actions.add_parser(
        "image",
        help="build the relay's container image (relay serve), smoke-test it, optionally push",
        description="Builds `mlops-actions relay serve` into an image with build-push's "
        "builder (BuildKit), runs it restricted and checks /healthz and a refused unsigned "
        "delivery, then pushes it with --push. Registry password: REGISTRY_PASSWORD.",
    )
    add_options(parser, IMAGE_OPTIONS)
    parser.add_argument("--push", action="store_true", help="push the image after the smoke test")
    parser.set_defaults(handler=cmd_relay_image)


def cmd_relay_image(args: argparse.Namespace) -> int:
    import tempfile
    from datetime import datetime, timezone
    from pathlib import Path

    from .. import __version__, image, relay_image

    repository = _value(args, "repository")
    if not repository:
        raise ConfigError(
            "repository is not set", "pass --repository <registry>/<name>, e.g. ghcr.io/acme/relay"
        )
    image.check_repository(repository, _where(args, "repository"))
    tag = _value(args, "tag") or relay_image.default_tag()
    if not image.REFERENCE.fullmatch(f"{repository}:{tag}"):
        raise ConfigError(f"{_where(args, 'tag')} {tag!r} is not an image tag", "e.g. v1 or 0.1.0")
    base = _value(args, "base-image") or relay_image.DEFAULT_BASE_IMAGE
    image.check_reference(base, _where(args, "base-image"))
    extra_ca = _value(args, "extra-ca")
    if extra_ca and not Path(extra_ca).is_file():
        raise ConfigError(f"{_where(args, 'extra-ca')} {extra_ca!r} is not a file")
    username, password = registry_credentials(args) if args.push else ("", "")
    root = relay_image.project_root()
    engine = image.docker_client()
    if args.push and username:  # before building: bad credentials should not cost a build
        image.login(engine, image.registry_of(repository), username, password)
    revision, source = relay_image.suite_origin(root, os.environ)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    builder = image.find_builder(
        ["docker", "/usr/bin/docker"], relay_image.build_environment(os.environ)
    )
    with tempfile.TemporaryDirectory(prefix="mlops-relay-image-") as scratch:
        spec = image.BuildSpec(
            context=relay_image.write_context(
                Path(scratch) / "context", root / "requirements-relay.lock"
            ),
            base_image=base,
            tags=(f"{repository}:{tag}",),
            labels=relay_image.labels_for(
                __version__, revision, _value(args, "source") or source, created
            ),
            extra_ca=Path(extra_ca) if extra_ca else None,
        )
        with gha.group(f"docker build {repository}:{tag}"):
            image_id = image.build(builder, spec)
    with gha.group("smoke test"):
        smoke = relay_image.smoke_test(engine, image_id)
    print(f"smoke test passed: /healthz after {smoke.seconds_to_health:.1f} s, unsigned POST 400")
    digest = image.push(engine, repository, tag) if args.push else ""
    emit(
        {
            "image": f"{repository}@{digest}" if digest else f"{repository}:{tag}",
            "digest": digest,
            "image-id": image_id,
            "size-bytes": str(image.image_size(engine, image_id)),
        }
    )
    return EXIT_OK
