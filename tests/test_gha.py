from __future__ import annotations

import io
from pathlib import Path

import pytest

from mlops_actions import gha
from tests.composite import parse_env_file


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    files = {name: tmp_path / name for name in ("output", "summary")}
    for file in files.values():
        file.write_text("")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(files["output"]))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(files["summary"]))
    return files


def test_outputs_use_random_heredoc_delimiters(runner: dict[str, Path]) -> None:
    gha.set_output("metrics", '{"a": 1}\nsecond line')
    gha.set_output("metrics-again", "EOF\n=x")
    text = runner["output"].read_text()
    delimiters = [line.split("<<", 1)[1] for line in text.splitlines() if "<<" in line]
    assert len(set(delimiters)) == 2
    assert all(d.startswith("ghadelimiter_") for d in delimiters)
    assert parse_env_file(text) == {"metrics": '{"a": 1}\nsecond line', "metrics-again": "EOF\n=x"}


def test_summary_appends_markdown(runner: dict[str, Path]) -> None:
    gha.add_summary("### one")
    gha.add_summary("two\n")
    assert runner["summary"].read_text() == "### one\n\ntwo\n\n"


def test_annotation_escapes_data_and_properties() -> None:
    line = gha.format_annotation("error", "50% done\nnext", title="a: b, c", file="x.yaml", line=3)
    assert line == "::error file=x.yaml,line=3,title=a%3A b%2C c::50%25 done%0Anext"
    assert gha.format_annotation("notice", "plain") == "::notice::plain"


def test_mask_prints_each_line_in_a_runner(
    runner: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    gha.mask("first\nsecond")
    assert capsys.readouterr().out == "::add-mask::first\n::add-mask::second\n"


def test_secret_environment_is_masked(
    runner: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    gha.mask_secret_environment(
        {"AWS_SECRET_ACCESS_KEY": "abc", "MY_API_TOKEN": "t0k", "PLAIN": "visible"}
    )
    out = capsys.readouterr().out
    assert "::add-mask::abc" in out
    assert "::add-mask::t0k" in out
    assert "visible" not in out


def test_everything_is_harmless_outside_a_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)
    gha.set_output("x", "1")
    gha.add_summary("nothing")
    gha.mask("secret")
    with gha.group("title"):
        pass
    stream = io.StringIO()
    gha.annotate("error", "bad thing", title="t", stream=stream)
    captured = capsys.readouterr()
    assert "secret" not in captured.out + captured.err
    assert stream.getvalue() == "error: t: bad thing\n"
    assert list(tmp_path.iterdir()) == []


def test_input_value_reads_the_mapped_variable() -> None:
    env = {"INPUT_TRACKING_URI": " http://x ", "INPUT_JOBS": ""}
    assert gha.input_value("tracking-uri", env) == "http://x"
    assert gha.input_value("jobs", env) == ""
    assert gha.input_value("missing", env) == ""


def _commands(text: str) -> list[str]:
    """Lines the runner would execute: '::' first after spaces, or '##[' anywhere."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [line for line in lines if line.lstrip().startswith("::") or "##[" in line]


@pytest.mark.parametrize(
    "value",
    [
        "x\n::error::injected",
        "x\r::add-mask::injected",
        "x\r\n  ::set-output name=a::injected",
        "x ##[error]injected",
        "::warning::at the start",
    ],
)
def test_log_safe_lines_are_no_workflow_commands(value: str) -> None:
    shown = gha.log_safe(f"name: {value}")
    assert _commands(shown) == []
    assert "injected" in shown or "at the start" in shown  # still readable, not dropped
    assert gha.log_safe("tags: a:v1\nb:latest") == "tags: a:v1\nb:latest"


def test_group_title_and_emitted_values_cannot_start_a_command(
    runner: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from mlops_actions.cli import emit

    with gha.group("gate: abc\n::error::injected"):
        emit({"alias": "champion\n::add-mask::injected"})
    out = capsys.readouterr().out
    assert _commands(out) == ["::group::gate: abc%0A::error::injected", "::endgroup::"]
    assert parse_env_file(runner["output"].read_text()) == {
        "alias": "champion\n::add-mask::injected"
    }
