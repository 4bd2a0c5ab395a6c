"""The MLflow model registry as the gate and promotion see it: who holds an alias, and what a
candidate string (a run id or a model URI) points at."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError
from .tracking import logged_models

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))?/?$")
RUNS_URI = re.compile(r"^runs:/(?P<run_id>[0-9a-f]{32})(?:/.*)?$")


@dataclass(frozen=True)
class VersionRef:
    """One registered model version."""

    name: str
    version: str
    run_id: str
    model_id: str
    aliases: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        """Pinned to the version, not the alias, so a later alias move cannot change it."""
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class Candidate:
    """What a candidate string resolved to."""

    given: str
    run_id: str
    model_uri: str  # '' when the run logged no model
    version: VersionRef | None = None  # when the candidate is a registered version


def version_ref(found: ModelVersion) -> VersionRef:
    return VersionRef(
        name=found.name,
        version=str(found.version),
        run_id=found.run_id or "",
        model_id=getattr(found, "model_id", None) or "",
        aliases=tuple(found.aliases or ()),
    )


def _not_found(error: Exception) -> bool:
    return getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def alias_holder(client: MlflowClient, name: str, alias: str) -> VersionRef | None:
    """The version that holds `alias`, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        if _not_found(error):
            return None
        raise
    version = dict(model.aliases or {}).get(alias)
    if version is None:
        return None
    return version_ref(client.get_model_version(name, str(version)))


def recent_versions(client: MlflowClient, name: str, limit: int) -> list[VersionRef]:
    """Up to `limit` newest versions of a registered model, oldest first."""
    from mlflow.exceptions import MlflowException

    if limit <= 0:
        return []
    try:
        found = client.search_model_versions(
            f"name = '{name}'", max_results=limit, order_by=["version_number DESC"]
        )
    except MlflowException as error:
        if _not_found(error):
            return []
        raise
    refs = sorted((version_ref(v) for v in found), key=lambda ref: int(ref.version))
    return refs[-limit:]


def resolve_candidate(client: MlflowClient, given: str) -> Candidate:
    """A run id, `runs:/<id>/…`, `models:/m-…`, `models:/<name>/<version>` or `…@<alias>`."""
    text = given.strip()
    if not text:
        raise ConfigError(
            "no candidate given",
            "pass the train step's run-id or model-uri output as the `candidate` input",
        )
    if RUN_ID.match(text) or (runs := RUNS_URI.match(text)):
        run_id = text if RUN_ID.match(text) else runs.group("run_id")  # type: ignore[union-attr]
        run = client.get_run(run_id)
        models = logged_models(client, run.info.experiment_id, run_id)
        return Candidate(text, run_id, models[0].uri if models else "")
    match = MODEL_URI.match(text)
    if not match:
        raise ConfigError(
            f"candidate {text!r} is neither a run id nor a model URI",
            "use a 32-character run id, runs:/<run-id>/<path>, models:/m-<id>, "
            "models:/<name>/<version> or models:/<name>@<alias>",
        )
    name, version, alias = match.group("name", "version", "alias")
    if name.startswith("m-") and not version and not alias:
        logged = client.get_logged_model(name)
        return Candidate(text, logged.source_run_id or "", f"models:/{logged.model_id}")
    if alias:
        ref = alias_holder(client, name, alias)
        if ref is None:
            raise ConfigError(
                f"candidate {text}: no version of '{name}' holds the alias '{alias}'",
                "check the model name and alias in the registry",
            )
    elif version:
        ref = version_ref(client.get_model_version(name, version))
    else:
        raise ConfigError(
            f"candidate {text} names a registered model but no version",
            f"add a version or an alias: models:/{name}/<version> or models:/{name}@<alias>",
        )
    return Candidate(text, ref.run_id, ref.uri, ref)
