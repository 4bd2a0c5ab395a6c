"""The pure parts of the supply chain: the provenance statement, the history entry a build is
recorded in, and the image references verify-image takes."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from mlops_actions import attestation, promote, provenance
from mlops_actions.cli.registry_cmds import short_image
from mlops_actions.cli.verify_image import _parse_models_uri, split_digest_reference
from mlops_actions.errors import ConfigError

DIGEST = "sha256:" + "ab" * 32


def facts(**changes: object) -> provenance.BuildFacts:
    base = provenance.BuildFacts(
        image_repository="ghcr.io/acme/iris-serving",
        image_digest=DIGEST,
        tags=("v3", "champion"),
        model_given="models:/iris@champion",
        model_uri="models:/iris/3",
        model_name="iris",
        model_version="3",
        model_digest="sha256:" + "cd" * 32,
        run_id="0123456789abcdef0123456789abcdef",
        flavor="sklearn",
        mlflow_version="3.17.2",
        data_fingerprint="ef" * 32,
        requirements_sha256="01" * 32,
        lock="scikit-learn==1.7.2 --hash=sha256:" + "23" * 32 + "\n",
        base_image="python:3.11-slim",
        base_image_digest="sha256:" + "45" * 32,
        base_image_digest_kind="repository-digest",
        dockerfile="generated",
        dockerfile_sha256="67" * 32,
        platform="",
        build_arg_names=("PIP_INDEX_URL",),
        suite_version="0.1.0",
        started=datetime(2026, 12, 5, 8, 0, 0, tzinfo=timezone.utc),
        finished=datetime(2026, 12, 5, 8, 1, 30, tzinfo=timezone.utc),
        source_repository="acme/iris",
        commit="89" * 20,
        workflow_ref="acme/iris/.github/workflows/mlops-main.yml@refs/heads/main",
        run_id_github="4242",
        run_attempt="2",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_statement_names_the_digest_and_reads_back() -> None:
    document = provenance.statement(facts())
    assert document["subject"] == [
        {"name": "ghcr.io/acme/iris-serving", "digest": {"sha256": "ab" * 32}}
    ]
    parsed = provenance.parse(provenance.to_bytes(document))
    assert parsed.subject_digests == (DIGEST,)
    assert (parsed.model_name, parsed.model_version) == ("iris", "3")
    assert parsed.model_uri == "models:/iris/3"
    assert parsed.model_digest == "sha256:" + "cd" * 32
    metadata = document["predicate"]["runDetails"]["metadata"]
    assert metadata == {
        "startedOn": "2026-12-05T08:00:00Z",
        "finishedOn": "2026-12-05T08:01:30Z",
        "invocationId": "https://github.com/acme/iris/actions/runs/4242/attempts/2",
    }
    external = document["predicate"]["buildDefinition"]["externalParameters"]
    assert external["buildArgs"] == ["PIP_INDEX_URL"]  # names only, never values
    assert external["workflow"] == {
        "repository": "https://github.com/acme/iris",
        "path": ".github/workflows/mlops-main.yml",
        "ref": "refs/heads/main",
    }


def test_outside_github_the_builder_is_the_cli_and_no_source_is_claimed() -> None:
    document = provenance.statement(
        facts(source_repository="", commit="", workflow_ref="", run_id_github="")
    )
    predicate = document["predicate"]
    assert predicate["runDetails"]["builder"]["id"] == provenance.LOCAL_BUILDER
    assert "invocationId" not in predicate["runDetails"]["metadata"]
    names = [d["name"] for d in predicate["buildDefinition"]["resolvedDependencies"]]
    assert "source" not in names
    assert "workflow" not in predicate["buildDefinition"]["externalParameters"]


def test_dependencies_without_a_value_are_left_out() -> None:
    document = provenance.statement(
        facts(data_fingerprint="", base_image_digest="", base_image_digest_kind="")
    )
    found = {d["name"]: d for d in document["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert "data" not in found
    assert found["base-image"] == {"name": "base-image", "uri": "pkg:docker/python@3.11-slim"}


@pytest.mark.parametrize(
    ("reference", "purl"),
    [
        ("python:3.11-slim", "pkg:docker/python@3.11-slim"),
        ("localhost:5000/a/b:1", "pkg:docker/a/b@1?repository_url=localhost:5000"),
        (
            "ghcr.io/x/y@sha256:" + "a" * 64,
            "pkg:docker/x/y@sha256:" + "a" * 64 + "?repository_url=ghcr.io",
        ),
        ("debian", "pkg:docker/debian"),
    ],
)
def test_base_images_are_named_as_buildkit_names_them(reference: str, purl: str) -> None:
    assert provenance.docker_purl(reference) == purl


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.update(subject=[]), "subject"),
        (lambda d: d["subject"][0].update(digest={}), "digest"),
        (lambda d: d["predicate"]["runDetails"].update(colour="blue"), "colour"),
        (lambda d: d.update(predicateType="https://example.com/other"), "predicate type"),
    ],
)
def test_a_statement_that_breaks_the_specification_is_refused(mutate: object, needle: str) -> None:
    document = json.loads(provenance.to_bytes(provenance.statement(facts())))
    mutate(document)  # type: ignore[operator]
    with pytest.raises(ValueError, match=needle):
        provenance.parse(json.dumps(document).encode())


def test_not_json_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        provenance.parse(b"\x00{")


# ----------------------------------------------------------------------------- history


def move(seq: int, to: str, alias: str = "champion", id_: str = "") -> promote.Move:
    return promote.Move(seq, alias, None, to, "promote", f"2026-12-0{seq}T00:00:00", id=id_)


def tags_of(*moves: promote.Move) -> dict[str, str]:
    return {m.key(): m.to_json() for m in moves}


def test_the_build_is_recorded_in_the_promotion_that_led_to_it() -> None:
    tags = tags_of(move(1, "1", id_="p1"), move(2, "2", id_="p2"), move(3, "1", id_="p3"))
    aliases = {"champion": "1"}
    # By promotion id: that move, even if it is not the newest.
    found = attestation.find_move(tags, aliases, "2", "", "p2")
    assert found is not None
    assert found.seq == 2
    # An id whose move went to another version is not the one.
    assert attestation.find_move(tags, aliases, "1", "", "p2") is None
    # By alias: the newest move of that alias to the version.
    found = attestation.find_move(tags, aliases, "1", "champion", "")
    assert found is not None
    assert found.seq == 3
    # Neither: a version built by number records nothing.
    assert attestation.find_move(tags, aliases, "1", "", "") is None


def test_history_entries_keep_the_image_through_a_round_trip() -> None:
    recorded = replace(move(4, "2"), image=f"ghcr.io/acme/iris@{DIGEST}")
    parsed = promote.parse_history({recorded.key(): recorded.to_json()}, "champion")
    assert parsed[0].image == f"ghcr.io/acme/iris@{DIGEST}"
    assert short_image(parsed[0].image) == f"ghcr.io/acme/iris@{DIGEST[:19]}"
    assert short_image("") == "-"


# ----------------------------------------------------------------------------- verify-image input


def test_verify_image_takes_a_digest_reference_only() -> None:
    assert split_digest_reference(f"ghcr.io/acme/iris@{DIGEST}") == ("ghcr.io/acme/iris", DIGEST)
    assert split_digest_reference(f"127.0.0.1:5000/a:v1@{DIGEST}") == ("127.0.0.1:5000/a", DIGEST)
    with pytest.raises(ConfigError, match="has no digest"):
        split_digest_reference("ghcr.io/acme/iris:v1")
    with pytest.raises(ConfigError, match="not a sha256 digest"):
        split_digest_reference("ghcr.io/acme/iris@sha256:abc")
    with pytest.raises(ConfigError, match="upper-case"):
        split_digest_reference(f"ghcr.io/Acme/iris@{DIGEST}")


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("models:/iris/3", ("iris", "3", "")),
        ("models:/iris@champion", ("iris", "", "champion")),
        ("models:/my 'odd' model/12", ("my 'odd' model", "12", "")),
        ("models:/m-0123", None),
        ("runs:/abc/model", None),
        ("iris/3", None),
    ],
)
def test_model_uris_verify_image_understands(given: str, parsed: object) -> None:
    assert _parse_models_uri(given) == parsed
