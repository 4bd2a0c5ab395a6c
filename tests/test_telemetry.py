"""MLflow telemetry is off in the suite's processes and images, while the user's training
command gets the environment the user set (see scripts/mlops_actions/telemetry.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_actions import image, telemetry
from tests.conftest import clean_env, run_cli

# Runs main() the way the console script does, then imports mlflow as a verb would.
PROBE = """
import json, os, sys
if sys.argv[1] == "cli":
    from mlops_actions.cli import main
    assert "mlflow" not in sys.modules, "the CLI imported mlflow before main()"
    main(["config", "show"])
import mlflow
from mlflow.telemetry import get_telemetry_client
print(json.dumps({"client": get_telemetry_client() is not None,
                  "variable": os.environ.get("MLFLOW_DISABLE_TELEMETRY")}))
"""


def probe(tmp_path: Path, how: str, **extra: str) -> dict[str, object]:
    env = clean_env(tmp_path, **extra)
    if "MLFLOW_DISABLE_TELEMETRY" not in extra:
        del env["MLFLOW_DISABLE_TELEMETRY"]  # a user's machine, not this test suite's
    done = subprocess.run(
        [sys.executable, "-c", PROBE, how],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_cli_turns_mlflow_telemetry_off_before_mlflow_starts_it(tmp_path: Path) -> None:
    # Without the CLI, importing mlflow here starts a telemetry client: the probe can see it.
    assert probe(tmp_path, "plain") == {"client": True, "variable": None}
    assert probe(tmp_path, "cli") == {"client": False, "variable": "true"}
    # The user's own choice stands, either way.
    assert probe(tmp_path, "cli", MLFLOW_DISABLE_TELEMETRY="false") == {
        "client": True,
        "variable": "false",
    }
    assert probe(tmp_path, "cli", DO_NOT_TRACK="true") == {"client": False, "variable": None}


def test_the_default_is_set_only_when_the_user_chose_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(telemetry._state, "defaulted", False)
    environ = {"PATH": "/bin"}
    assert telemetry.disable_by_default(environ) is True
    assert environ == {"PATH": "/bin", "MLFLOW_DISABLE_TELEMETRY": "true"}
    assert telemetry.user_environment(environ) == {"PATH": "/bin"}
    for choice in ({"MLFLOW_DISABLE_TELEMETRY": "true"}, {"MLFLOW_DISABLE_TELEMETRY": "false"}):
        environ = {"PATH": "/bin", **choice}
        assert telemetry.disable_by_default(environ) is False
        assert environ == {"PATH": "/bin", **choice}
        assert telemetry.user_environment(environ) == environ
    environ = {"DO_NOT_TRACK": "false"}
    assert telemetry.disable_by_default(environ) is False
    assert environ == {"DO_NOT_TRACK": "false"}


@pytest.mark.parametrize(
    "user",
    [{}, {"MLFLOW_DISABLE_TELEMETRY": "true"}, {"MLFLOW_DISABLE_TELEMETRY": "false"}],
    ids=["unset", "true", "false"],
)
def test_the_training_command_gets_the_users_environment(
    example: Path, tmp_path: Path, mlflow_server: str, user: dict[str, str]
) -> None:
    seen = tmp_path / "seen.json"
    script = tmp_path / "dump.py"
    script.write_text(
        "import json, os, sys\n"
        "keys = ('MLFLOW_DISABLE_TELEMETRY', 'DO_NOT_TRACK')\n"
        "json.dump({k: os.environ.get(k) for k in keys}, open(sys.argv[1], 'w'))\n"
    )
    env = clean_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_server, **user)
    if not user:
        del env["MLFLOW_DISABLE_TELEMETRY"]
    result = run_cli(
        [
            "train",
            "--experiment",
            "train-telemetry",
            "--command",
            f"{sys.executable} {script} {seen}",
        ],
        example,
        env,
    )
    assert result.returncode == 0, result.output
    expected = user.get("MLFLOW_DISABLE_TELEMETRY")
    assert json.loads(seen.read_text()) == {
        "MLFLOW_DISABLE_TELEMETRY": expected,
        "DO_NOT_TRACK": None,
    }


def test_the_serving_image_has_telemetry_off_from_its_first_layer() -> None:
    text = image.render_dockerfile()
    first_env = text[text.index("\nENV ") : text.index("\nCOPY requirements.txt")]
    # Set before the RUN that installs and warms up mlflow, and for the server it runs.
    assert "MLFLOW_DISABLE_TELEMETRY=true" in first_env
    assert text.count("MLFLOW_DISABLE_TELEMETRY") == 1
