"""The developer entry point `dev`: the set-up that `./dev test` and CI (`.ci/run`) share, and
the markers that carve out the fast subset (`./dev test-fast`).

The set-up is tested without installing anything: the commands it looks for are hidden by
running it with a PATH of links to everything else, apt-get and docker among the hidden.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DEV = ROOT / "dev"
# Markers that pytest and its plugins bring; every other one must be registered in pyproject.
BUILTIN_MARKERS = {
    "parametrize",
    "skip",
    "skipif",
    "xfail",
    "usefixtures",
    "filterwarnings",
    "timeout",
}
DOCKER_FIXTURES = {"docker_client", "base_image", "registry", "auth_registry"}
# The end-to-end tests: a whole pipeline or a workflow's jobs against real services.
E2E_TESTS = {
    ("test_workflows.py", "test_pull_request_template_reports_a_pass_then_a_rejection"),
    ("test_workflows.py", "test_main_template_promotes_after_approval_and_rollback_restores"),
    ("test_workflows.py", "test_selftest_jobs_pass_here"),
    ("test_monitoring.py", "test_every_dashboard_query_returns_data_from_a_real_prometheus"),
}


def path_without(tmp_path: Path, *hidden: str) -> str:
    """A PATH of one directory that links to every command on PATH except `hidden`."""
    farm = tmp_path / "bin"
    farm.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not Path(directory).is_dir():
            continue
        for entry in Path(directory).iterdir():
            link = farm / entry.name
            if entry.name in hidden or link.exists() or link.is_symlink():
                continue
            if entry.is_file() and os.access(entry, os.X_OK):
                link.symlink_to(entry)
    return str(farm)


def run_dev(args: list[str], path: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_ACTIONS_")}
    env.update(PATH=path, **extra)
    return subprocess.run(
        [str(DEV), *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )


def test_setup_check_names_what_is_missing(tmp_path: Path) -> None:
    done = run_dev(["setup", "--check"], path_without(tmp_path, "promtool", "mmdebstrap"))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "missing  prometheus (promtool)" in lines
    assert "missing  mmdebstrap (mmdebstrap)" in lines
    if shutil.which("git"):
        assert "ok       git (git)" in lines
    assert any(line.endswith("Docker engine (docker info)") for line in lines)


def test_setup_where_it_cannot_install_names_the_packages_and_ci_fails(tmp_path: Path) -> None:
    """No apt-get: a warning that names the packages locally, an error under CI's setting.
    Without `docker` the engine is not started either: nothing on this machine changes."""
    path = path_without(tmp_path, "promtool", "apt-get", "docker")
    local = run_dev(["setup"], path)
    assert local.returncode == 0, local.stderr
    assert "no apt-get" in local.stderr
    assert re.search(r"install the equivalents of .*\bprometheus\b.*\bdocker\.io\b", local.stderr)
    assert "tests that need it will be skipped" in local.stderr
    assert "no Docker engine (apt-get install docker.io)" in local.stderr

    ci = run_dev(["setup"], path, MLOPS_ACTIONS_REQUIRE_SERVICES="1")
    assert ci.returncode == 2
    assert "error: not a Debian/Ubuntu system (no apt-get)" in ci.stderr
    assert "prometheus" in ci.stderr


def test_dev_test_sets_up_first_unless_told_not_to(tmp_path: Path) -> None:
    path = path_without(tmp_path, "promtool", "apt-get", "docker")
    with_setup = run_dev(["test", "--version"], path)
    assert with_setup.returncode == 0, with_setup.stderr
    assert "no apt-get" in with_setup.stderr
    for opted_out in (
        run_dev(["test", "--no-setup", "--version"], path),
        run_dev(["test-fast", "--version"], path, MLOPS_ACTIONS_NO_SETUP="1"),
    ):
        assert opted_out.returncode == 0, opted_out.stderr
        assert "apt-get" not in opted_out.stderr
        assert "pytest" in opted_out.stdout + opted_out.stderr


def mark_names(node: ast.AST) -> set[str]:
    """Every X in `pytest.mark.X` under node."""
    return {
        sub.attr
        for sub in ast.walk(node)
        if isinstance(sub, ast.Attribute)
        and isinstance(sub.value, ast.Attribute)
        and sub.value.attr == "mark"
        and isinstance(sub.value.value, ast.Name)
        and sub.value.value.id == "pytest"
    }


def modules_under_test() -> list[Path]:
    return sorted((ROOT / "tests").glob("test_*.py"))


def test_every_marker_used_is_registered(pytestconfig: pytest.Config) -> None:
    """--strict-markers catches this too, but only in the modules a run collects."""
    registered = {line.split(":")[0].split("(")[0] for line in pytestconfig.getini("markers")}
    assert {"docker", "e2e"} <= registered
    for module in [*modules_under_test(), ROOT / "tests" / "conftest.py"]:
        used = mark_names(ast.parse(module.read_text()))
        assert used - BUILTIN_MARKERS <= registered, f"{module.name}: unregistered markers"


def marks_by_test(module: Path) -> dict[str, tuple[set[str], set[str]]]:
    """Each test function: (its marks, module-level ones included; the fixtures it asks for)."""
    tree = ast.parse(module.read_text())
    module_marks: set[str] = set()
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "pytestmark"
            for target in statement.targets
        ):
            module_marks |= mark_names(statement.value)
    found = {}
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef) and statement.name.startswith("test_"):
            marks = module_marks.union(*(mark_names(d) for d in statement.decorator_list))
            fixtures = {a.arg for a in statement.args.args}
            found[statement.name] = (marks, fixtures)
    return found


def test_docker_and_end_to_end_tests_carry_their_markers() -> None:
    assert "docker" in mark_names(
        next(
            s
            for s in ast.parse((ROOT / "tests" / "test_image.py").read_text()).body
            if isinstance(s, ast.Assign) and getattr(s.targets[0], "id", "") == "pytestmark"
        )
    ), "tests/test_image.py: pytestmark = pytest.mark.docker"
    seen = set()
    for module in modules_under_test():
        for name, (marks, fixtures) in marks_by_test(module).items():
            if fixtures & DOCKER_FIXTURES:
                assert "docker" in marks, f"{module.name}::{name} uses Docker: mark it docker"
            if (module.name, name) in E2E_TESTS:
                assert "e2e" in marks, f"{module.name}::{name}: mark it e2e"
                seen.add((module.name, name))
    assert seen == E2E_TESTS, "a test named in E2E_TESTS was renamed: update the list"


def test_the_fast_subset_leaves_out_docker_and_end_to_end_tests() -> None:
    expression = re.search(r'^readonly FAST_TESTS="(.+)"$', DEV.read_text(), re.MULTILINE)
    assert expression is not None
    modules = sorted({f"tests/{module}" for module, _ in E2E_TESTS} | {"tests/test_image.py"})
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", expression[1], *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert len(collected) > 20  # the static checks of the workflows and monitoring/ stay
    assert not [test for test in collected if test.startswith("tests/test_image.py")]
    for module, name in E2E_TESTS:
        assert not [test for test in collected if f"{module}::{name}" in test]
