"""The gate's registry reads do not grow with the registry (issue 14): against a real MLflow
server, through a counting proxy, the gate sends the same requests for a model with 300 versions
as for one with 3. benchmarks/gate_registry_size.py measures the time at 10,000 versions."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.fault_proxy import FaultProxy
from tests.test_evaluate import RULES, client, log_run, unique

SMALL, LARGE = 3, 300
BY_ALIAS = r"^GET /api/2\.0/mlflow/registered-models/alias\?"
MODEL_READ = r"^GET /api/2\.0/mlflow/registered-models/get\?"
MODEL_SEARCH = r"^GET /api/2\.0/mlflow/registered-models/search\?"


def endpoints(requests: list[str]) -> Counter[str]:
    """What was asked, without of whom (model names and versions are in the query)."""
    return Counter(request.split("?", 1)[0] for request in requests)


@pytest.fixture
def proxy(mlflow_server: str) -> Any:
    counting = FaultProxy(mlflow_server)
    server = counting.serve()
    yield counting
    server.shutdown()


def registered(tracking_uri: str, name: str, filler: int, runs: list[str]) -> list[str]:
    """`filler` placeholder versions (no run), then one version per run: the runs' versions."""
    mlflow_client = client(tracking_uri)
    mlflow_client.create_registered_model(name)
    for _ in range(filler):
        mlflow_client.create_model_version(name, f"s3://filler/{uuid.uuid4().hex}")  # never read
    return [
        str(mlflow_client.create_model_version(name, f"runs:/{run}/model", run_id=run).version)
        for run in runs
    ]


def promoted(tracking_uri: str, name: str, runs: list[str], moves: int) -> str:
    """`moves` promotions by the suite's core, the runs in turn: the alias history."""
    from mlops_actions import promote
    from mlops_actions.registry import resolve_candidate

    mlflow_client = client(tracking_uri)
    expected = promote.NONE
    for index in range(moves):
        result = promote.promote(
            mlflow_client,
            model_name=name,
            alias="champion",
            candidate=resolve_candidate(mlflow_client, runs[index % len(runs)]),
            expected=expected,
            provenance=promote.Provenance(actor="test"),
        )
        expected = result.version
    return expected


def gate(proxy: FaultProxy, name: str, candidate: str, history: int) -> tuple[Any, list[str]]:
    """The gate's core (assessment and decision, logged mode) through the proxy: its requests."""
    from mlops_actions import evaluation
    from mlops_actions import gate as gate_core

    mark = len(proxy.seen)
    assessed = evaluation.assess(
        client(proxy.url),
        tracking_uri=proxy.url,
        model_name=name,
        alias="champion",
        candidate=candidate,
        spec=None,
        environ={},
        cwd=Path.cwd(),
        history_limit=history,
        history_metric="accuracy",
    )
    decision = gate_core.decide(
        gate_core.parse_rules(RULES), assessed.metrics.candidate, assessed.metrics.champion
    )
    assert decision.passed, decision
    seen = proxy.seen[mark:]
    assert all(status == 200 for _, status in seen), seen
    return assessed, [request for request, _ in seen]


def test_the_gate_sends_the_same_requests_for_300_versions_as_for_3(
    mlflow_server: str, proxy: FaultProxy
) -> None:
    experiment = unique("gate-scale")
    runs = [
        log_run(mlflow_server, experiment, {"accuracy": 0.86 + i / 100, "latency_ms": 100.0})
        for i in range(SMALL)
    ]
    candidate = log_run(mlflow_server, experiment, {"accuracy": 0.95, "latency_ms": 100.0})
    names = {size: unique(f"gate-scale-{size}") for size in (SMALL, LARGE)}
    versions = {size: registered(mlflow_server, names[size], size - SMALL, runs) for size in names}
    assert versions[LARGE][-1] == str(LARGE)
    holders = {size: promoted(mlflow_server, names[size], runs, 2 * SMALL) for size in names}

    requests = {}
    for size, name in names.items():
        assessed, requests[size] = gate(proxy, name, candidate, history=10)
        assert assessed.champion.version == holders[size] == versions[size][-1]
        assert [label for label, _ in assessed.history] == [f"v{v}" for v in versions[size]]
    assert endpoints(requests[SMALL]) == endpoints(requests[LARGE])
    assert len(requests[SMALL]) == len(requests[LARGE])
    assert not [r for r in requests[LARGE] if "model-versions/search" in r], requests[LARGE]
    # The champion by alias, one lookup: never the whole registered model for that.
    assert sum(1 for r in requests[LARGE] if re.search(BY_ALIAS, r)) == 1

    # Without a recorded history (an alias set by hand), the gate shows the champion and the
    # versions registered before it: one bounded search, not a page through every version.
    from mlops_actions.promote import HISTORY_PREFIX

    mlflow_client = client(mlflow_server)
    for name in names.values():
        for key in mlflow_client.get_registered_model(name).tags:
            if key.startswith(HISTORY_PREFIX):
                mlflow_client.delete_registered_model_tag(name, key)
    for size, name in names.items():
        assessed, requests[size] = gate(proxy, name, candidate, history=2)
        assert [label for label, _ in assessed.history] == [f"v{v}" for v in versions[size][-2:]]
    assert endpoints(requests[SMALL]) == endpoints(requests[LARGE])
    searches = [r for r in requests[LARGE] if "model-versions/search" in r]
    assert len(searches) == 1, requests[LARGE]


def test_alias_holder_asks_by_alias_and_still_tells_absence_apart(
    mlflow_server: str, proxy: FaultProxy
) -> None:
    from mlops_actions.registry import alias_holder

    run = log_run(mlflow_server, unique("alias-holder"), {"accuracy": 0.9})
    name = unique("alias-holder")
    registered(mlflow_server, name, 2, [run])
    client(mlflow_server).set_registered_model_alias(name, "champion", "3")
    through = client(proxy.url)

    mark = len(proxy.seen)
    holder = alias_holder(through, name, "champion")
    assert holder is not None
    assert (holder.name, holder.version, holder.run_id) == (name, "3", run)
    assert "champion" in holder.aliases
    asked = [request for request, _ in proxy.seen[mark:]]
    assert len(asked) == 1, asked
    assert re.search(BY_ALIAS, asked[0]), asked

    # A free alias, a missing model: None, as before (the model is read to tell them apart).
    assert alias_holder(through, name, "challenger") is None
    assert alias_holder(through, unique("no-such-model"), "champion") is None
    # MLflow answers `latest` with the newest version whether or not an alias has that name.
    assert alias_holder(through, name, "latest") is None
    # Read by a search on the exact name (GetRegisteredModel reads every version); only the
    # missing model, which no search finds, is asked for directly, for MLflow's not-found.
    assert proxy.count(MODEL_SEARCH) == 3
    assert proxy.count(MODEL_READ) == 1
