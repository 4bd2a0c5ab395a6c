"""MLflow's usage telemetry: off in the suite's own processes, left alone in the user's training.

`import mlflow` starts a thread that fetches a telemetry config from the internet. Besides
phoning home from CI machines, that thread, when the fetch fails, removes a variable from
os.environ (`_MLFLOW_TELEMETRY_SESSION_ID`) while the main thread may be copying os.environ,
which then raises KeyError (os.environ lists its keys, then reads each). So the CLI sets
MLFLOW_DISABLE_TELEMETRY=true before anything imports mlflow, unless the user chose already
(MLFLOW_DISABLE_TELEMETRY or DO_NOT_TRACK set; MLFLOW_DISABLE_TELEMETRY=false opts in). The
training command is the user's own code: it gets the environment as the user set it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

VARIABLE = "MLFLOW_DISABLE_TELEMETRY"
USER_CHOICES = (VARIABLE, "DO_NOT_TRACK")

_state = {"defaulted": False}  # whether this process set VARIABLE itself


def disable_by_default(environ: MutableMapping[str, str]) -> bool:
    """Set VARIABLE=true in `environ` unless the user decided; whether it was set."""
    defaulted = not any(name in environ for name in USER_CHOICES)
    _state["defaulted"] = defaulted
    if defaulted:
        environ[VARIABLE] = "true"
    return defaulted


def user_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of `environ` without VARIABLE if disable_by_default set it (and it is unchanged)."""
    env = dict(environ)
    if _state["defaulted"] and env.get(VARIABLE) == "true":
        del env[VARIABLE]
    return env
