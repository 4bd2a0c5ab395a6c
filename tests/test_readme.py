"""The README's references agree with what they describe: the mlops.yaml example with the
schema, the metric names with the installed MLflow's evaluator, the .gitignore lines with what
the suite writes, and the `run` line with its stages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import yaml

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"\n{title}\n", 1)[1].split("\n## ", 1)[0]


def test_mlops_yaml_reference_is_valid_and_names_every_key() -> None:
    schema = json.loads((ROOT / "schema" / "mlops.schema.json").read_text())
    block = section("## mlops.yaml").split("```yaml\n", 1)[1].split("```", 1)[0]
    jsonschema.validate(yaml.safe_load(block), schema)
    # Every key of every section appears, as a key or as a commented alternative.
    for name, spec in schema["properties"].items():
        assert re.search(rf"^{name}:", block, re.M), f"no {name}: section"
        for key in spec.get("properties", {}):
            assert re.search(rf"^ +#? *{key}:", block, re.M), f"{name}.{key} is not shown"


def test_metric_names_are_those_mlflow_logs() -> None:
    from mlflow.models import evaluation

    root = Path(evaluation.__file__).parent
    source = "".join(p.read_text() for p in [root / "default_evaluator.py", *root.glob("*/*.py")])
    table = section("## What your project needs").split("| model type | metrics |", 1)[1]
    rows = dict(re.findall(r"^ *\| `(classifier|regressor)` \| (.+) \|$", table, re.M))
    assert set(rows) == {"classifier", "regressor"}
    for kind, text in rows.items():
        names = re.findall(r"`(\w+)`", text)
        assert names, kind
        for name in names:
            assert re.search(rf"[\"'(]{name}[\"'=]", source), f"MLflow logs no {name} ({kind})"
    assert "`root_mean_squared_error`" in rows["regressor"]
    assert "`accuracy_score`" in rows["classifier"]


def test_gitignore_lines_are_what_the_example_ignores() -> None:
    block = section("## What your project needs").split("```gitignore\n", 1)[1].split("```")[0]
    lines = {line.strip() for line in block.splitlines() if line.strip()}
    example = set((ROOT / "examples" / "iris" / ".gitignore").read_text().split())
    assert lines <= example
    assert lines == {"/mlflow.db", "/mlruns/", "/mlartifacts/", "/mlops-gate/"}


def test_run_is_described_with_its_four_stages() -> None:
    line = next(line for line in README.splitlines() if line.startswith("mlops-actions run "))
    assert "dvc-pull, train, evaluate, promote" in line
    pipeline = (ROOT / "scripts" / "mlops_actions" / "cli" / "pipeline.py").read_text()
    assert "dvc-pull, train, gate, promote" in pipeline or "stage 4/4" in pipeline
