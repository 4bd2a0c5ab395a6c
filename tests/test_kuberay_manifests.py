"""docs/workflows.md's Ray section: its KubeRay manifests pass a strict offline validation
against KubeRay's own CRD schemas (schema/kuberay/), the validator catches what kubectl's strict
validation would, and the workflow and mlops.yaml shown there are what the suite reads."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests import k8s_validate
from tests.conftest import ROOT

DOC = ROOT / "docs" / "workflows.md"
TEXT = DOC.read_text()
RAY_SECTION = TEXT.split("\n## Training on a Ray cluster\n", 1)[1].split("\n## ", 1)[0]


def doc_manifests() -> dict[str, dict[str, Any]]:
    found = [m for _, m in k8s_validate.manifests(TEXT) if m["apiVersion"] == "ray.io/v1"]
    kinds = [m["kind"] for m in found]
    assert sorted(kinds) == ["RayCluster", "RayJob"], kinds
    return {m["kind"]: m for m in found}


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_the_docs_manifests_are_valid(kind: str) -> None:
    assert k8s_validate.problems(doc_manifests()[kind]) == []


def test_the_rayjob_selects_the_documented_cluster() -> None:
    manifests = doc_manifests()
    cluster, job = manifests["RayCluster"], manifests["RayJob"]
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert job["metadata"]["namespace"] == cluster["metadata"]["namespace"]
    name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    assert f"http://{name}-head-svc.{namespace}.svc.cluster.local:8265" in RAY_SECTION
    # The image and rayVersion are the Ray of the suite's ray extra.
    lock = (ROOT / "requirements-ray.lock").read_text()
    pinned = re.search(r"^ray==([\d.]+)", lock, re.M)
    assert pinned
    assert cluster["spec"]["rayVersion"] == pinned[1]
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            assert container["image"].startswith(f"rayproject/ray:{pinned[1]}-")
            env = {e["name"]: e for e in container["env"]}
            assert env["MLFLOW_TRACKING_TOKEN"]["valueFrom"]["secretKeyRef"]["name"]


def problems_of(kind: str, change: Any) -> list[str]:
    manifest = copy.deepcopy(doc_manifests()[kind])
    change(manifest)
    return k8s_validate.problems(manifest)


def test_unknown_fields_are_errors_naming_their_path() -> None:
    def typo(manifest: dict[str, Any]) -> None:
        head = manifest["spec"]["headGroupSpec"]
        head["rayStartParam"] = head.pop("rayStartParams")

    assert problems_of("RayCluster", typo) == [
        "spec.headGroupSpec.rayStartParam: unknown field 'rayStartParam'"
    ]
    assert problems_of("RayJob", lambda m: m["spec"].update(entrypointt="python x.py")) == [
        "spec.entrypointt: unknown field 'entrypointt'"
    ]
    # Inside the pod template (KubeRay's CRD carries the PodSpec inline), and in metadata,
    # which the CRD leaves open.
    container = "spec.headGroupSpec.template.spec.containers[0]"
    assert problems_of(
        "RayCluster",
        lambda m: m["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(
            imagePullPolicyy="Always"
        ),
    ) == [f"{container}.imagePullPolicyy: unknown field 'imagePullPolicyy'"]
    assert problems_of("RayJob", lambda m: m["metadata"].update(lables={"a": "b"})) == [
        "metadata.lables: unknown field 'lables'"
    ]


def test_wrong_types_are_errors_naming_their_path() -> None:
    def replicas(manifest: dict[str, Any]) -> None:
        manifest["spec"]["workerGroupSpecs"][0]["replicas"] = "two"

    found = problems_of("RayCluster", replicas)
    assert found == ["spec.workerGroupSpecs[0].replicas: 'two' is not of type 'integer'"]

    # rayStartParams values are strings: num-cpus: 0 unquoted is a classic.
    def unquoted(manifest: dict[str, Any]) -> None:
        manifest["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0

    assert problems_of("RayCluster", unquoted) == [
        "spec.headGroupSpec.rayStartParams.num-cpus: 0 is not of type 'string'"
    ]

    # x-kubernetes-int-or-string: a quantity is an integer or a string, not a list.
    limits = "spec.headGroupSpec.template.spec.containers[0].resources.limits"

    def quantity(value: Any) -> Any:
        def change(manifest: dict[str, Any]) -> None:
            container = manifest["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
            container["resources"]["limits"]["cpu"] = value

        return change

    assert problems_of("RayCluster", quantity(2)) == []
    assert problems_of("RayCluster", quantity("500m")) == []
    assert problems_of("RayCluster", quantity([2])) == [
        f"{limits}.cpu: [2] is not of type 'integer', 'string'"
    ]
    # The top: the kind, a name, string labels.
    assert problems_of("RayJob", lambda m: m["metadata"].update(labels={"team": 7})) == [
        "metadata.labels.team: 7 is not of type 'string'"
    ]
    assert problems_of("RayJob", lambda m: m["metadata"].pop("name"))
    assert problems_of("RayJob", lambda m: m.update(kind="RayService")) == [
        "<top>: no schema for ray.io/v1 RayService (have: ray.io/v1 RayCluster, ray.io/v1 RayJob)"
    ]


def test_the_command_line_names_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = TEXT.replace("  entrypointNumCpus: 2\n", "  entrypointNumCpus: 2\n  entrypointt: x\n", 1)
    assert bad != TEXT
    page = tmp_path / "page.md"
    page.write_text(bad)
    assert k8s_validate.main([str(page)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert re.fullmatch(
        rf"{re.escape(str(page))}:\d+: RayJob iris-train-nightly: spec.entrypointt: unknown field "
        r"'entrypointt'",
        out[0],
    )
    assert k8s_validate.main([str(DOC)]) == 0


def test_a_duplicate_key_is_an_error() -> None:
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'replicas'"):
        k8s_validate.load_all("replicas: 1\nreplicas: 2\n")


def test_the_shipped_schemas_name_their_source() -> None:
    for path in sorted((ROOT / "schema" / "kuberay").glob("*.json")):
        schema = json.loads(path.read_text())
        comment = schema["$comment"]
        assert "kuberay v1.7.0 (commit 59d663aeec13760646da3db9c1cf8cfe883e30b7)" in comment
        assert "Apache-2.0" in comment
        [gvk] = schema["x-kubernetes-group-version-kind"]
        assert path.name == f"{gvk['group']}_{gvk['version']}_{gvk['kind'].lower()}.json"
        assert k8s_validate.SCHEMAS[(f"{gvk['group']}/{gvk['version']}", gvk["kind"])] == path
        # What the CRD has and the validation relies on is there.
        assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}


def test_the_documented_train_section_is_valid() -> None:
    schema = json.loads((ROOT / "schema" / "mlops.schema.json").read_text())
    block = next(
        body for _, body in k8s_validate.yaml_blocks(RAY_SECTION) if body.startswith("train:\n")
    )
    config = yaml.safe_load(block)
    assert config["train"]["backend"] == "ray"
    jsonschema.validate({"version": 1, **config}, schema)
    assert config["train"]["ray"]["address"].endswith(":8265")


def test_the_documented_workflow_gives_declared_inputs() -> None:
    block = next(
        body for _, body in k8s_validate.yaml_blocks(RAY_SECTION) if body.startswith("jobs:\n")
    )
    [job] = yaml.safe_load(block)["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    suite = [s for s in job["steps"] if s["uses"].startswith("your-org/mlops-actions")]
    assert [s["uses"] for s in suite] == [
        "your-org/mlops-actions@v1",
        "your-org/mlops-actions/actions/dvc-pull@v1",
        "your-org/mlops-actions/actions/train@v1",
        "your-org/mlops-actions/actions/evaluate@v1",
    ]
    for step in suite:
        path = step["uses"].removeprefix("your-org/mlops-actions").split("@")[0].lstrip("/")
        inputs = yaml.safe_load((ROOT / path / "action.yml").read_text())["inputs"]
        assert set(step.get("with", {})) <= set(inputs), step["uses"]
    assert suite[0]["with"] == {"extras": "ray"}
    assert suite[2]["with"]["backend"] == "ray"
    env = suite[2]["env"]
    # Every header the train section names comes from the step's environment.
    train = next(
        yaml.safe_load(body)["train"]
        for _, body in k8s_validate.yaml_blocks(RAY_SECTION)
        if body.startswith("train:\n")
    )
    assert set(train["ray"]["headers"].values()) <= set(env)
    assert "RAY_ADDRESS" in env
