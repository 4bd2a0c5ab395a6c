"""`mlops-actions manifests --image <repository@digest>`: the Kubernetes and KServe manifests
that deploy a pushed serving image, validated offline; and build-push's `manifests-dir`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .. import gha
from ..config import Config
from ..errors import EXIT_OK, ConfigError
from .common import _value, _where, emit, load_config, oci_registry
from .options import Option

TARGETS = ("all", "kubernetes", "kserve")
DEFAULT_DIR = "mlops-manifests"
MANIFEST_OPTIONS = (
    Option(
        "image",
        "the image by digest, <repository>@sha256:<hex> (build-push's image output)",
        required=True,
    ),
    Option(
        "output-dir",
        f"directory to write kubernetes/ and kserve/ into (default: ./{DEFAULT_DIR})",
    ),
    Option("target", "which manifests: all (default), kubernetes or kserve"),
    Option(
        "model-name",
        "the model's name (default: the image's io.mlops-actions.model.name label); with "
        "--model-version, the registry is not read",
    ),
    Option(
        "model-version", "the model's version (default: the io.mlops-actions.model.version label)"
    ),
    Option(
        "namespace", "namespace of every object (default: deploy.namespace)", "deploy.namespace"
    ),
    Option("registry-username", "registry user (the password comes from REGISTRY_PASSWORD)"),
)
# What the image's labels say (image.labels_for).
NAME_LABEL = "io.mlops-actions.model.name"
VERSION_LABEL = "io.mlops-actions.model.version"
URI_LABEL = "io.mlops-actions.model.uri"


def cmd_manifests(args: argparse.Namespace) -> int:
    """Write (or print) the manifests of a pushed image; exit 2 on a bad input, 3 when the
    registry cannot be read."""
    from .. import manifests

    config = load_config(args, MANIFEST_OPTIONS)
    given = _value(args, "image")
    if not given:
        raise ConfigError(
            "the image input is empty", "pass --image <repository>@sha256:<hex> (by digest)"
        )
    image_ref = manifests.digest_reference(given, _where(args, "image"))
    settings = deploy_settings(config)
    target = _value(args, "target") or "all"
    if target not in TARGETS:
        raise ConfigError(
            f"{_where(args, 'target')} must be one of {', '.join(TARGETS)}, got {target!r}",
            "kubernetes: Deployment, Service, HPA, PodMonitor; kserve: InferenceService",
        )
    if args.stdout and target == "all":
        raise ConfigError(
            "--stdout needs --target kubernetes or --target kserve",
            "a cluster runs the model one way: pipe one set to kubectl apply -f -",
        )
    model = _model(args, image_ref)
    files = manifests.render(image_ref, model, settings)
    chosen = manifests.select(files, manifests.TARGETS if target == "all" else (target,))
    if args.stdout:
        sys.stdout.write(manifests.documents(chosen, target))
        sys.stdout.flush()
        return EXIT_OK
    directory = Path(_value(args, "output-dir") or DEFAULT_DIR)
    written = manifests.write(chosen, directory)
    print(
        "manifests for "
        + gha.log_safe(f"{json.dumps(model.name)} version {json.dumps(model.version)}")
        + f", validated offline: {len(written)} file(s)"
    )
    for path in written:
        print(gha.log_safe(f"  {path}"))
    emit({"manifests-dir": str(directory)})
    gha.add_summary(
        f"### Kubernetes manifests\n\n`{image_ref}` in `{directory}`: "
        + ", ".join(f"`{p.relative_to(directory)}`" for p in written)
        + "\n"
    )
    return EXIT_OK


def deploy_settings(config: Config) -> Any:
    """`deploy:` of the effective config, checked across its fields."""
    from .. import manifests

    return manifests.DeploySettings.from_config(config.get("deploy"))


def _model(args: argparse.Namespace, image_ref: str) -> Any:
    """The model the image serves: the options, else the image's labels in its registry."""
    from .. import manifests

    name, version = _value(args, "model-name"), _value(args, "model-version")
    if name and version:
        return manifests.Model(name, version)
    repository, _, digest = image_ref.partition("@")
    client = oci_registry(args, repository)
    labels = (client.image_config(repository, digest).get("config") or {}).get("Labels") or {}
    return manifests.Model(
        name or str(labels.get(NAME_LABEL) or ""),
        version or str(labels.get(VERSION_LABEL) or ""),
        str(labels.get(URI_LABEL) or ""),
    )


# ----------------------------------------------------------------------------- build-push


def manifests_dir() -> Path:
    """build-push's manifests: in RUNNER_TEMP on a runner, else in ./mlops-manifests."""
    return Path(os.environ.get("RUNNER_TEMP") or Path.cwd()) / DEFAULT_DIR


def check_for_build(config: Config, push: bool, repository: str, facts: Any) -> Any:
    """Before the build: the deploy: settings, with the manifests rendered for a stand-in
    digest, so that a value the cluster would refuse fails the step before anything is built
    or pushed. None (saying why) without push, or when the manifests could have no name: an
    unregistered model and no deploy.name."""
    from .. import manifests

    if not push:
        print("no Kubernetes manifests: the image is not pushed, and they deploy it by digest")
        return None
    settings = deploy_settings(config)
    if not (settings.name or facts.name):
        gha.annotate(
            "warning",
            "no Kubernetes manifests: the model is not a registered version and deploy.name "
            "is not set (set it in mlops.yaml to get them)",
            title="build-push",
        )
        return None
    stand_in = f"{repository}@sha256:{'0' * 64}"
    manifests.render(stand_in, _facts_model(facts), settings)
    return settings


def write_for_build(settings: Any, image_ref: str, facts: Any) -> dict[str, str]:
    """After the push: the manifests of the pushed digest, written; the output that names
    them (none when check_for_build said there are none)."""
    from .. import manifests

    if settings is None:
        return {}
    directory = manifests_dir()
    files = manifests.render(image_ref, _facts_model(facts), settings)
    written = manifests.write(files, directory)
    print(f"Kubernetes and KServe manifests for {image_ref}: {len(written)} file(s) in {directory}")
    return {"manifests-dir": str(directory)}


def _facts_model(facts: Any) -> Any:
    from .. import manifests

    return manifests.Model(facts.name, facts.version, facts.uri)
