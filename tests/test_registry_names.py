"""Registered model names with quotes, backslashes and non-ASCII letters: the filter strings
the suite builds parse back to the name (MLflow's own parser), and the gate's champion history
finds the versions of such a model on a real server, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import pytest

from mlops_actions.registry import filter_literal, recent_versions
from tests.test_evaluate import client, evaluate, log_run, register, runner_env, write_config

CURATED = [
    "",
    "plain",
    "b'm",
    'b"m',
    "mödel \"x\" 'y'",
    "it's",
    'say "hi"',
    "x''y",
    'x""y',
    "'",
    '"',
    "''",
    '""',
    "'lead",
    "trail'",
    '"lead',
    'trail"',
    "a\\b",
    "a\\'b",
    'a\\"b',
    "\\'",
    "a\\",
    "a\\\\",
    "\\",
    " spaced out ",
    "tab\there",
    "new\nline",
    "-- comment",
    "/* c */",
    "a;b",
    "a.b",
    "`tick`",
    "%_",
    "a' AND name = 'b",
    'a" OR name = "b',
    "AND",
    "=",
    "(x)",
    "é\u2028x",
    "模型 '一'",
    "emoji 🚀 'x'",
]
ALPHABET = "ab '\"\\`%_.;-=()é模🚀\t\n "


def generated(count: int, seed: int = 13) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12))) for _ in range(count)]


def parsers() -> list[tuple[Any, str]]:
    from mlflow.utils.search_utils import (
        SearchLoggedModelsUtils,
        SearchModelUtils,
        SearchModelVersionUtils,
        SearchUtils,
    )

    return [
        (SearchModelVersionUtils, "name"),  # search_model_versions
        (SearchModelUtils, "name"),  # search_registered_models
        (SearchLoggedModelsUtils, "source_run_id"),  # search_logged_models
        (SearchUtils, "attributes.run_name"),  # search_runs
    ]


def expected_literal(value: str) -> bool:
    """When a literal exists: not both kinds of quote, no backslash before the closing one."""
    return not ("'" in value and '"' in value) and not value.endswith("\\")


@pytest.mark.parametrize("value", CURATED + generated(400), ids=repr)
def test_filter_literal_round_trips_through_mlflows_parser(value: str) -> None:
    from mlflow.prompt.registry_utils import add_prompt_filter_string

    literal = filter_literal(value)
    assert (literal is not None) == expected_literal(value)
    if literal is None:
        return
    for parser, key in parsers():
        alone = f"{key} = {literal}"
        # MLflow appends its own prompt clause to registry searches: a literal must end where
        # it should with more quoted text after it.
        for text, clauses in (
            (alone, 1),
            (add_prompt_filter_string(alone), 2),
            (f"{alone} AND tags.k = 'v'", 2),
            (f"tags.k = 'v' AND {alone}", 2),
        ):
            parsed = parser.parse_search_filter(text)
            assert len(parsed) == clauses, (parser.__name__, text, parsed)
            mine = next(c for c in parsed if c["key"] == key.split(".")[-1])
            assert mine["value"] == value, (parser.__name__, text, parsed)
            assert mine["comparator"] == "="


def test_the_naive_filter_is_what_broke() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.search_utils import SearchModelVersionUtils

    with pytest.raises(MlflowException, match="Invalid clause"):
        SearchModelVersionUtils.parse_search_filter("name = 'b'm'")
    literal = filter_literal("b'm")
    assert literal == '"b\'m"'
    parsed = SearchModelVersionUtils.parse_search_filter(f"name = {literal}")
    assert parsed[0]["value"] == "b'm"


# ----------------------------------------------------------------------------- a real registry

NAMES = {
    "single-quote": "b'm",
    "double-quote": 'b"m',
    "both-quotes-unicode": "mödel \"x\" 'y'",
    "both-quotes-backslash": "back\\slash \"x\" 'y' \\",
}


@pytest.mark.parametrize("server", ["mlflow_server", "postgres_mlflow_server"])
@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_gate_and_history_find_the_versions_of_any_name(
    tmp_path: Path, server: str, name: str, request: pytest.FixtureRequest
) -> None:
    tracking_uri = request.getfixturevalue(server)
    tag = uuid.uuid4().hex[:8]
    model, experiment = f"{tag} {name}", f"names-{tag}"
    # A model whose name differs only where a quote or backslash is, with newer versions: a
    # search by pattern matches it too, and only the exact name may be kept.
    decoy = "".join("-" if c in "'\"\\" else c for c in model)

    def version(of: str, accuracy: float, alias: str = "") -> str:
        run = log_run(tracking_uri, experiment, {"accuracy": accuracy, "latency_ms": 100.0})
        return register(tracking_uri, of, run, alias)

    assert version(model, 0.86) == "1"
    assert version(model, 0.88, alias="champion") == "2"
    assert version(model, 0.99) == "3"  # newer than the champion: not in its history
    for accuracy in (0.1, 0.2, 0.3, 0.4):
        version(decoy, accuracy)

    mlflow_client = client(tracking_uri)
    assert [v.version for v in recent_versions(mlflow_client, model, 10)] == ["1", "2", "3"]
    assert [v.version for v in recent_versions(mlflow_client, model, 2)] == ["2", "3"]
    assert {v.name for v in recent_versions(mlflow_client, model, 10)} == {model}
    assert recent_versions(mlflow_client, f"{model} missing", 5) == []

    write_config(tmp_path, model)
    candidate = log_run(tracking_uri, experiment, {"accuracy": 0.90, "latency_ms": 101.0})
    result = evaluate(tmp_path, runner_env(tmp_path, tracking_uri, None), "--candidate", candidate)
    assert result.returncode == 0, result.output
    outputs = result.outputs()
    assert outputs["passed"] == "true"
    assert outputs["champion-version"] == "2"
    decision = json.loads(Path(outputs["decision-file"]).read_text(encoding="utf-8"))
    assert decision["model"] == model
    summary = (tmp_path / "summary").read_text(encoding="utf-8")
    assert 'x-axis ["v1", "v2", "candidate"]' in summary, summary  # no v3, no decoy
    tags = mlflow_client.get_run(candidate).data.tags
    assert tags["mlops.gate.model"] == model
    assert tags["mlops.gate.verdict"] == "passed"
