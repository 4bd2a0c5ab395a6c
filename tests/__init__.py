"""The test suite (see tests/conftest.py for the services it starts).

Imported before any test module or conftest, so what is set here holds for every service the
tests start with the pytest process's environment (the `mlflow server`s, the model servers).
"""

import os

# `mlflow server` with a database store also starts MLflow's server-side job runner: five huey
# consumer processes, each importing MLflow, that then poll for GenAI jobs (scorers, prompt
# optimisation, trace roll-ups) for as long as the server runs. mlops-actions never submits
# such a job; on a two-core CI machine the runner doubles a server's start-up and keeps taking
# CPU from the tests. The tracking, registry and artifact APIs the tests use are unchanged.
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
