"""Inputs fail closed: every bad value is exit 2 and one error naming the input, never a
traceback; a password in a URL reaches no log, output, summary or file; no input can put a
workflow command of its own into the log; `key=value` values keep their commas."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops_actions import config
from mlops_actions.cli import build_parser
from mlops_actions.errors import ConfigError
from tests.composite import run_action
from tests.conftest import ROOT, CliResult, assert_one_line_error, clean_env, run_cli

RUN_ID = "0123456789abcdef0123456789abcdef"
RULES = "[{metric: accuracy, direction: higher, threshold: 0.5}]"

# Each verb that talks to MLflow, with enough inputs to get to the tracking URI.
MLFLOW_VERBS: dict[str, list[str]] = {
    "train": ["train", "--command", "true"],
    "evaluate": ["evaluate", "--candidate", RUN_ID, "--model-name", "m", "--rules", RULES],
    "promote": ["promote", "--candidate", RUN_ID, "--model-name", "m"],
    "rollback": ["rollback", "--model-name", "m"],
    "registry history": ["registry", "history", "--model-name", "m"],
    "registry unlock": ["registry", "unlock", "--model-name", "m"],
    "build-push": [
        *("build-push", "--model-uri", "models:/m/1", "--image", "localhost:5000/m"),
        *("--push", "false", "--smoke-test", "false"),
    ],
    "run": ["run", "--command", "true"],
    "config show": ["config", "show"],
}


@dataclass
class Runner:
    """A directory laid out like a job on a runner: workspace, output and summary files."""

    root: Path

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def summary(self) -> Path:
        return self.root / "summary"

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(
            self.root / "home",
            GITHUB_ACTIONS="true",
            GITHUB_OUTPUT=str(self.output),
            GITHUB_STEP_SUMMARY=str(self.summary),
            RUNNER_TEMP=str(self.root / "temp"),
            **extra,
        )

    def files_holding(self, secret: str) -> list[Path]:
        """Every file the step wrote (workspace, temp, home, output, summary) with `secret`."""
        return [
            path
            for path in self.root.rglob("*")
            if path.is_file() and secret.encode() in path.read_bytes()
        ]


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    job = Runner(tmp_path)
    for directory in ("workspace", "temp", "home"):
        (tmp_path / directory).mkdir()
    job.output.write_text("")
    job.summary.write_text("")
    return job


def workflow_commands(text: str) -> list[str]:
    """The lines the runner would execute: '::' first after spaces, or '##[' anywhere."""
    return [
        line
        for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if line.lstrip().startswith("::") or "##[" in line
    ]


# ----------------------------------------------------------------------------- tracking URIs

BAD_URIS = [
    pytest.param("http://[::1", "not a valid URI", id="unclosed-ipv6"),
    pytest.param("htp:/x", "scheme 'htp'", id="unknown-scheme"),
    pytest.param("http:/x", "no host name", id="no-host"),
    pytest.param("http://mlflow:99999", "port", id="bad-port"),
    pytest.param("http://mlflow.example.com/a b", "spaces", id="space"),
]


@pytest.mark.parametrize("verb", MLFLOW_VERBS)
@pytest.mark.parametrize(("uri", "says"), BAD_URIS)
def test_a_bad_tracking_uri_is_one_error_naming_the_input(
    runner: Runner, verb: str, uri: str, says: str
) -> None:
    result = run_cli(MLFLOW_VERBS[verb], runner.workspace, runner.env(INPUT_TRACKING_URI=uri))
    assert result.returncode == 2, result.output
    line = assert_one_line_error(result, "input 'tracking-uri'", says, "Fix:")
    assert line.startswith("::error title=configuration error::")


@pytest.mark.parametrize("verb", ["train", "promote", "build-push", "config show"])
def test_a_bad_registry_uri_or_variable_is_named(runner: Runner, verb: str) -> None:
    by_input = run_cli(
        MLFLOW_VERBS[verb], runner.workspace, runner.env(INPUT_REGISTRY_URI="ftp://x/y")
    )
    assert by_input.returncode == 2
    assert_one_line_error(by_input, "input 'registry-uri'", "scheme 'ftp'")
    by_variable = run_cli(
        MLFLOW_VERBS[verb], runner.workspace, runner.env(MLFLOW_TRACKING_URI="http://[::1")
    )
    assert by_variable.returncode == 2
    assert_one_line_error(by_variable, "environment variable MLFLOW_TRACKING_URI")


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:5000",
        "https://mlflow.example.com/prefix",
        "http://[::1]:5000",
        "file:///tmp/mlruns",
        "mlruns",
        "/tmp/mlruns",
        "/home/me/My Runs/mlruns",
        "sqlite:///mlflow.db",
        "postgresql://mlflow@db.example.com:5432/mlflow",
        "postgresql+psycopg2://mlflow@db/mlflow",
        "mysql+pymysql://mlflow@db/mlflow?read_default_file=~/.my.cnf",
        "mssql+pyodbc://db/mlflow",
        "databricks",
        "databricks://profile",
        "databricks://secret-scope:key-prefix",
        "databricks-uc",
    ],
)
def test_what_mlflow_accepts_is_accepted(uri: str) -> None:
    from mlops_actions import tracking

    assert tracking.resolve_tracking_uri(uri, Path.cwd(), "input 'tracking-uri'") == uri


def test_the_mlflow_schemes_are_the_ones_mlflow_registers() -> None:
    """If MLflow adds a store, the list here must follow (or it would refuse a good URI)."""
    from mlflow.tracking._model_registry.utils import _get_store_registry
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    from mlops_actions import tracking

    known = set(_tracking_store_registry._registry) | set(_get_store_registry()._registry)
    assert known <= tracking.MLFLOW_SCHEMES | tracking._plugin_schemes()


# ----------------------------------------------------------------------------- credentials


def assert_no_leak(result: CliResult, job: Runner, *secrets: str) -> None:
    """The secret is only ever in the runner's own ::add-mask:: line, printed first."""
    for secret in secrets:
        masks = [line for line in result.stdout.splitlines() if line == f"::add-mask::{secret}"]
        assert masks, result.output
        assert result.stdout.startswith("::add-mask::"), result.stdout
        shown = result.stdout.replace(f"::add-mask::{secret}\n", "") + result.stderr
        assert secret not in shown, shown
        assert job.files_holding(secret) == []


def with_credentials(url: str, userinfo: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{userinfo}@{rest}"


@pytest.mark.parametrize("verb", MLFLOW_VERBS)
def test_a_password_in_the_tracking_uri_is_refused_and_never_shown(
    runner: Runner, mlflow_server: str, verb: str
) -> None:
    password = "pw-in-the-uri-7Q"
    uri = with_credentials(mlflow_server, f"ci-user:{password}")
    result = run_cli(MLFLOW_VERBS[verb], runner.workspace, runner.env(MLFLOW_TRACKING_URI=uri))
    assert result.returncode == 2, result.output
    assert_one_line_error(
        result,
        "environment variable MLFLOW_TRACKING_URI has credentials",
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
    )
    assert_no_leak(result, runner, password)


@pytest.mark.parametrize("verb", ["train", "promote", "config show"])
def test_credentials_in_the_uri_inputs_are_refused_and_masked(
    runner: Runner, mlflow_server: str, verb: str
) -> None:
    token, password = "tok-as-user-5W", "registry-pw-9K"
    by_token = run_cli(
        MLFLOW_VERBS[verb],
        runner.workspace,
        runner.env(INPUT_TRACKING_URI=with_credentials(mlflow_server, token)),
    )
    assert by_token.returncode == 2
    assert_one_line_error(by_token, "input 'tracking-uri' has credentials")
    assert_no_leak(by_token, runner, token)
    in_registry = run_cli(
        MLFLOW_VERBS[verb],
        runner.workspace,
        runner.env(
            MLFLOW_TRACKING_URI=mlflow_server,
            INPUT_REGISTRY_URI=with_credentials(mlflow_server, f"u:{password}"),
        ),
    )
    assert in_registry.returncode == 2
    assert_one_line_error(in_registry, "input 'registry-uri' has credentials")
    assert_no_leak(in_registry, runner, password)


def test_a_database_password_is_refused_a_database_user_is_not(tmp_path: Path) -> None:
    from mlops_actions import tracking

    with pytest.raises(ConfigError, match="has credentials") as raised:
        tracking.check_uri("postgresql://mlflow:hunter2@db/mlflow", "input 'tracking-uri'")
    assert "hunter2" not in str(raised.value)
    assert "PGPASSWORD" in raised.value.hint
    assert tracking.check_uri("postgresql://mlflow@db/mlflow", "x")
    assert tracking.url_secrets("http://u:p%40ss@h") == ["p%40ss", "p@ss"]
    assert tracking.url_secrets("postgresql://mlflow@db/x") == []


# ----------------------------------------------------------------------------- other inputs

SWEEP = [
    pytest.param(
        ["rollback", "--model-name", "m", "--to-version", "abc"],
        ("--to-version", "version number"),
        id="rollback-to-version",
    ),
    pytest.param(
        ["rollback", "--model-name", "m", "--to-version", "-1"],
        ("--to-version", "version number"),
        id="rollback-negative-version",
    ),
    pytest.param(
        [*MLFLOW_VERBS["promote"], "--expected-version", "²"],
        ("input 'expected-version'",),
        id="promote-expected-version",
    ),
    pytest.param(
        ["promote", "--candidate", RUN_ID, "--model-name", "team/model"],
        ("$.model.name (from input model-name)",),
        id="promote-model-name",
    ),
    pytest.param(
        [*MLFLOW_VERBS["evaluate"], "--decision-file", "/proc/no/such/decision.json"],
        ("--decision-file", "cannot create its directory"),
        id="evaluate-decision-file",
    ),
    pytest.param(
        [*MLFLOW_VERBS["evaluate"], "--decision-file", "."],
        ("--decision-file", "is a directory"),
        id="evaluate-decision-file-directory",
    ),
    pytest.param(
        ["build-push", "--model-uri", "models:/m/1", "--image", "not an image!"],
        ("input 'image'", "not an image repository"),
        id="build-push-image",
    ),
    pytest.param(
        ["build-push", "--model-uri", "models:/m/1", "--image", "localhost:5000/m:v1"],
        ("input 'image'", "tag or digest"),
        id="build-push-image-with-tag",
    ),
    pytest.param(
        [*MLFLOW_VERBS["build-push"], "--base-image", "Python:3.11!"],
        ("input 'base-image'", "not an image reference"),
        id="build-push-base-image",
    ),
    pytest.param(
        [*MLFLOW_VERBS["build-push"], "--extra-ca", "no-such-ca.pem"],
        ("input 'extra-ca'", "not a file"),
        id="build-push-extra-ca",
    ),
    pytest.param(
        [*MLFLOW_VERBS["build-push"], "--dockerfile", "no/Dockerfile"],
        ("input 'dockerfile'", "not a file"),
        id="build-push-dockerfile",
    ),
    pytest.param(
        [
            *("push-metrics", "--stage", "deploy", "--status", "success"),
            *("--pushgateway-url", "http://[::1"),
        ],
        ("input 'pushgateway-url'", "not a valid URL"),
        id="push-metrics-url",
    ),
    pytest.param(
        ["promote", "--candidat", RUN_ID, "--model-name", "m"],
        ("unrecognized arguments: --candidat",),
        id="abbreviated-flag",
    ),
    pytest.param(
        ["registry", "history", "--model-name", "m", "--js"],
        ("unrecognized arguments: --js",),
        id="abbreviated-flag-of-a-sub-verb",
    ),
]


@pytest.mark.parametrize(("argv", "needles"), SWEEP)
def test_a_bad_input_is_one_error_naming_it(
    runner: Runner, mlflow_server: str, argv: list[str], needles: tuple[str, ...]
) -> None:
    result = run_cli(argv, runner.workspace, runner.env(MLFLOW_TRACKING_URI=mlflow_server))
    assert result.returncode == 2, result.output
    assert_one_line_error(result, *needles)


def test_no_parser_takes_an_abbreviation() -> None:
    def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        found = [parser]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found += parsers(sub)
        return found

    every = parsers(build_parser())
    assert len(every) > 10
    assert [p.prog for p in every if p.allow_abbrev] == []


# ----------------------------------------------------------------------------- workflow commands


@pytest.mark.parametrize(
    ("argv", "name", "value"),
    [
        (MLFLOW_VERBS["evaluate"], "CANDIDATE", f"{RUN_ID}\n::error::injected"),
        (MLFLOW_VERBS["promote"], "ALIAS", "champion\r::add-mask::injected"),
        (MLFLOW_VERBS["train"], "RUN_NAME", "nightly\n::set-output name=x::injected"),
        (MLFLOW_VERBS["train"], "EXPERIMENT", "e\n##[error]injected"),
    ],
)
def test_a_line_break_in_an_input_starts_no_workflow_command(
    runner: Runner, mlflow_server: str, argv: list[str], name: str, value: str
) -> None:
    env = runner.env(MLFLOW_TRACKING_URI=mlflow_server, **{f"INPUT_{name}": value})
    result = run_cli(argv_without(argv, name), runner.workspace, env)
    assert result.returncode == 2, result.output
    input_name = name.lower().replace("_", "-")
    line = assert_one_line_error(result, f"input '{input_name}' has a line break")
    assert workflow_commands(result.output) == [line]
    assert "injected" not in result.output


def argv_without(argv: list[str], name: str) -> list[str]:
    """`argv` without the flag for input `name` (and its value), so the input is read."""
    flag = "--" + name.lower().replace("_", "-")
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        else:
            out.append(arg)
    return out


def test_promote_mode_with_a_line_break_is_not_echoed(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    done = run_action(
        ROOT / "actions" / "promote",
        {"mode": "promote\n::error::injected ::set-output name=version::9"},
        workspace=tmp_path,
        env=env,
    )
    assert done.outcome == "failure"
    step = done.step("promote")
    assert step.returncode == 2
    assert workflow_commands(step.stdout + step.stderr) == [
        "::error title=configuration error::input 'mode' must be promote or rollback. "
        "Fix: set mode to promote, rollback or leave it empty"
    ]


def test_setup_escapes_the_python_input_in_its_error(tmp_path: Path) -> None:
    done = run_action(
        ROOT / "actions" / "promote",
        {"python": "no-such-python\n::error::injected"},
        workspace=tmp_path,
        env=clean_env(tmp_path),
    )
    step = done.step("plan")
    assert step.returncode == 2
    (line,) = workflow_commands(step.stdout + step.stderr)
    assert line.startswith(
        "::error title=mlops-actions setup::Python interpreter 'no-such-python%0A"
    )


# ----------------------------------------------------------------------------- key=value pairs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("drop=rooms,area_m2", {"drop": "rooms,area_m2"}),
        ("drop=rooms,area_m2\nalpha=0.5", {"drop": "rooms,area_m2", "alpha": "0.5"}),
        ("alpha=0.5,l1_ratio=0.1", {"alpha": "0.5", "l1_ratio": "0.1"}),
        ("alpha=0.5, drop=rooms,area_m2", {"alpha": "0.5", "drop": "rooms,area_m2"}),
        ("query=a=1,b=2\nlimit=3", {"query": "a=1,b=2", "limit": "3"}),
        ("  note = spaces kept inside  \n\n", {"note": "spaces kept inside"}),
        ('{"drop": "rooms,area_m2", "alpha": 0.5}', {"drop": "rooms,area_m2", "alpha": 0.5}),
    ],
)
def test_pairs_keep_commas_in_values(text: str, expected: dict[str, object]) -> None:
    for key, name in (
        ("train.project.parameters", "parameters"),
        ("train.tags", "tags"),
        ("image.build_args", "build-args"),
    ):
        if key != "train.project.parameters" and any(
            not isinstance(v, str) for v in expected.values()
        ):
            continue  # tags and build args are strings only
        resolved = config.resolve(config_path=None, environ={}, inputs={key: (name, text)})
        assert resolved.get(key) == expected


def test_a_pair_without_equals_names_the_input_and_the_advice_works() -> None:
    from mlops_actions import pairs

    with pytest.raises(ConfigError) as raised:
        pairs.parse_pairs("rooms,area_m2", "input 'parameters'")
    assert "input 'parameters'" in raised.value.message
    assert "got 'rooms,area_m2'" in raised.value.message
    assert "one key=value pair per line" in raised.value.hint
    # Followed: one pair per line, commas in the value.
    assert pairs.parse_pairs("drop=rooms,area_m2\nalpha=2", "x") == {
        "drop": "rooms,area_m2",
        "alpha": "2",
    }


def test_a_comma_in_a_parameter_reaches_the_training_script(
    housing: Path, tmp_path: Path, mlflow_server: str
) -> None:
    """The README's form, one pair per line, through the action input to the MLproject."""
    from mlflow import MlflowClient

    env = clean_env(
        tmp_path,
        MLFLOW_TRACKING_URI=mlflow_server,
        INPUT_PARAMETERS="drop=rooms,area_m2\nalpha=0.5",
    )
    result = run_cli(["train", "--experiment", "inputs-commas"], housing, env)
    assert result.returncode == 0, result.output
    assert "features=age_years,distance_km" in result.stdout
    run = MlflowClient(mlflow_server).get_run(result.outputs()["run-id"])
    assert run.data.params["drop"] == "rooms,area_m2"
    assert run.data.params["features"] == "age_years,distance_km"
    assert run.data.params["alpha"] == "0.5"
