"""Rules every action.yml follows (the runner does not enforce them; users feel them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, clean_env, run_cli

ACTIONS = [ROOT / "action.yml", *sorted((ROOT / "actions").glob("*/action.yml"))]
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


@pytest.mark.parametrize("path", ACTIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_action_metadata_follows_the_rules(path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    assert spec["name"]
    assert spec["description"]
    for name, meta in (spec.get("inputs") or {}).items():
        assert re.fullmatch(r"[a-z][a-z0-9-]*", name), name
        assert meta.get("description"), name
        assert isinstance(meta.get("default", ""), str), name
    step_ids = {s.get("id") for s in spec["runs"]["steps"]}
    for name, meta in (spec.get("outputs") or {}).items():
        assert meta.get("description"), name
        referenced = re.findall(r"steps\.([\w-]+)\.outputs", meta["value"])
        assert referenced, name
        assert set(referenced) <= step_ids, name
    for step in spec["runs"]["steps"]:
        assert step.get("name"), step
        if "run" in step:
            assert step.get("shell") == "bash"
            assert "${{" not in step["run"], f"expression inside run: in {step['name']}"
        else:
            assert PINNED.match(step["uses"]), f"unpinned action {step['uses']}"
            assert "# v" in path.read_text().split(step["uses"], 1)[1].splitlines()[0]


def test_every_verb_action_is_a_cli_subcommand(tmp_path: Path) -> None:
    result = run_cli(["--help"], tmp_path, clean_env(tmp_path))
    for action in (ROOT / "actions").iterdir():
        assert action.name in result.stdout


def test_every_verb_input_reaches_the_cli() -> None:
    """Each input is either mapped to INPUT_<NAME> for the CLI or used by the action itself."""
    for action in sorted((ROOT / "actions").iterdir()):
        text = (action / "action.yml").read_text()
        spec = yaml.safe_load(text)
        for name in spec["inputs"]:
            variable = "INPUT_" + name.upper().replace("-", "_")
            used_directly = f"inputs.{name}" in text
            assert variable in text or used_directly, name
