"""Promotion exactly once, against real MLflow servers (SQLite and PostgreSQL stores): eight
promoters at once on a loaded machine, abandoned and dead-holder locks, lost replies and
killed promoters at every request, resumable follow-ups, and inputs refused before any write."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import clean_env
from tests.fault_proxy import Fault, FaultProxy
from tests.github_fake import FakeGitHub
from tests.promoters import CpuLoad, Promoters
from tests.test_evaluate import TOKEN, client, unique

ROUNDS = int(os.environ.get("MLOPS_TEST_PROMOTE_ROUNDS", "10"))
PROMOTERS = 8


@pytest.fixture(params=["sqlite", "postgresql"])
def store_server(request: pytest.FixtureRequest) -> str:
    """The tracking server, once with a SQLite store and once with a PostgreSQL store."""
    name = "mlflow_server" if request.param == "sqlite" else "postgres_mlflow_server"
    return str(request.getfixturevalue(name))


@pytest.fixture(scope="module")
def promoters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Promoters]:
    with Promoters(tmp_path_factory.mktemp("promoters")) as pool:
        yield pool


def candidate(mlflow_client: Any, experiment_id: str, tags: dict[str, str] | None = None) -> str:
    """A finished run with a logged model, as training leaves it (without the model's files,
    which registration never reads)."""
    run = mlflow_client.create_run(experiment_id, tags=tags or {})
    model = mlflow_client.create_logged_model(
        experiment_id, name="model", source_run_id=run.info.run_id
    )
    mlflow_client.finalize_logged_model(model.model_id, "READY")
    mlflow_client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def experiment(mlflow_client: Any) -> str:
    return str(mlflow_client.create_experiment(unique("exp")))


def history(mlflow_client: Any, model: str, alias: str = "champion") -> list[dict[str, Any]]:
    from mlops_actions import promote

    return promote.as_dicts(promote.history_of(mlflow_client, model, alias))


def versions(mlflow_client: Any, model: str) -> list[Any]:
    found = mlflow_client.search_model_versions(max_results=10000)  # any name, quotes too
    return sorted((v for v in found if v.name == model), key=lambda v: int(v.version))


def locks_left(mlflow_client: Any, model: str) -> list[str]:
    names = [m.name for m in mlflow_client.search_registered_models(max_results=1000)]
    return [n for n in names if n.startswith(f"mlops-lock--{model}--")]


def plant_lock(mlflow_client: Any, model: str, *, expires: float, process: str = "") -> None:
    mlflow_client.create_registered_model(
        f"mlops-lock--{model}--champion",
        tags={
            "mlops.lock.token": "planted",
            "mlops.lock.expires": str(expires),
            "mlops.lock.holder": "https://github.com/acme/iris/actions/runs/77",
            "mlops.lock.process": process,
        },
    )


def env_for(home: Path, tracking_uri: str, **extra: str) -> dict[str, str]:
    return clean_env(
        home, MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_DISABLE_TELEMETRY="true", **extra
    )


def promote_cmd(run: str, model: str, *extra: str) -> list[str]:
    return ["promote", "--candidate", run, "--model-name", model, *extra]


# ----------------------------------------------------------------------------- races


@pytest.mark.serial  # CpuLoad busies every core: not while another worker's tests run
@pytest.mark.parametrize("planted", [False, True], ids=["no-lock", "expired-lock"])
def test_eight_promoters_under_load_one_winner_every_round(
    tmp_path: Path, store_server: str, promoters: Promoters, planted: bool
) -> None:
    mlflow_client = client(store_server)
    experiment_id = experiment(mlflow_client)
    model = unique("stress")
    env = env_for(tmp_path, store_server)
    winners: list[str] = []
    # Eight different candidates every round: the seven that lost (never registered) and one
    # new one in place of the winner's.
    runs = [candidate(mlflow_client, experiment_id) for _ in range(PROMOTERS)]
    with CpuLoad():
        for round_ in range(ROUNDS):
            if planted:
                plant_lock(mlflow_client, model, expires=time.time() - 1)
            expected = winners[-1] if winners else "none"
            jobs = [
                promoters.start(promote_cmd(run, model, "--expected-version", expected), env)
                for run in runs
            ]
            results = [promoters.wait(job) for job in jobs]
            codes = sorted(r.returncode for r in results)
            assert codes == [0] + [4] * (PROMOTERS - 1), (
                f"round {round_}: {codes}",
                [r.output[-600:] for r in results if r.returncode not in (0, 4)],
            )
            winner = next(index for index, r in enumerate(results) if r.returncode == 0)
            winners.append(results[winner].outputs()["version"])
            runs[winner] = candidate(mlflow_client, experiment_id)
            for loser in (r for r in results if r.returncode == 4):
                assert "Traceback" not in loser.output
    moves = history(mlflow_client, model)
    assert [(m["from_version"], m["to_version"]) for m in moves] == list(
        zip([None, *winners[:-1]], winners, strict=True)
    )
    assert all(m["state"] == "done" for m in moves)
    assert mlflow_client.get_registered_model(model).aliases == {"champion": winners[-1]}
    assert not locks_left(mlflow_client, model)
    registered = versions(mlflow_client, model)
    assert [v.version for v in registered] == winners, "losers registered nothing"
    assert len({v.run_id for v in registered}) == len(registered)


def test_a_takeover_never_deletes_a_lock_another_promotion_took(mlflow_server: str) -> None:
    from mlops_actions import promote

    mlflow_client = client(mlflow_server)
    model = unique("takeover")
    lock = promote.lock_name(model, "champion")
    # The expired lock was replaced by a fresh one between our read and our takeover.
    mlflow_client.create_registered_model(
        lock, tags={"mlops.lock.token": "fresh", "mlops.lock.expires": str(time.time() + 60)}
    )
    assert promote._take_over(mlflow_client, lock, "abandoned", "mine", 60)
    assert mlflow_client.get_registered_model(lock).tags["mlops.lock.token"] == "fresh"
    # Another waiter is taking over the same abandoned lock: we wait, and delete nothing.
    mlflow_client.create_registered_model(
        promote.takeover_name(lock, "fresh"),
        tags={"mlops.lock.token": "other", "mlops.lock.expires": str(time.time() + 60)},
    )
    assert not promote._take_over(mlflow_client, lock, "fresh", "mine", 60)
    assert mlflow_client.get_registered_model(lock).tags["mlops.lock.token"] == "fresh"
    # A lock still carrying the abandoned token is deleted, and the marker with it.
    mlflow_client.delete_registered_model(promote.takeover_name(lock, "fresh"))
    assert promote._take_over(mlflow_client, lock, "fresh", "mine", 60)
    assert not locks_left(mlflow_client, model)


def dead_process_identity() -> str:
    """The identity a promoter on this machine had, after it was killed (and reaped)."""
    from mlops_actions import promote

    process = subprocess.Popen(["sleep", "60"])
    start = (Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split())[19]
    process.kill()
    process.wait()
    host, boot, _, _ = promote.process_identity().split("/")
    return f"{host}/{boot}/{process.pid}/{start}"


def test_a_lock_of_a_dead_promoter_is_taken_over_at_once(
    tmp_path: Path, mlflow_server: str, promoters: Promoters
) -> None:
    mlflow_client = client(mlflow_server)
    model = unique("dead-holder")
    run = candidate(mlflow_client, experiment(mlflow_client))
    plant_lock(mlflow_client, model, expires=time.time() + 600, process=dead_process_identity())
    began = time.monotonic()
    moved = promoters.run(promote_cmd(run, model), env_for(tmp_path, mlflow_server))
    assert moved.returncode == 0, moved.output
    assert time.monotonic() - began < 20, "no wait for the dead holder's expiry"
    assert not locks_left(mlflow_client, model)


def test_a_waiter_names_the_holder_and_the_unlock_command_at_once(
    tmp_path: Path, mlflow_server: str, promoters: Promoters
) -> None:
    mlflow_client = client(mlflow_server)
    model = unique("it's busy")
    run = candidate(mlflow_client, experiment(mlflow_client))
    plant_lock(mlflow_client, model, expires=time.time() + 600, process="runner-7/boot/4242/99")
    env = env_for(tmp_path, mlflow_server, MLOPS_PROMOTE_LOCK_WAIT_SECONDS="3")
    busy = promoters.run(promote_cmd(run, model), env)
    assert busy.returncode == 4, busy.output
    notice = next(line for line in busy.stderr.splitlines() if "is locked by" in line)
    assert "actions/runs/77" in notice
    assert "host runner-7, pid 4242" in notice
    assert (
        f"mlops-actions registry unlock --model-name {shlex.quote(model)} --alias champion"
        in notice
    )
    assert not versions(mlflow_client, model), "nothing registered while locked"
    unlocked = promoters.run(["registry", "unlock", "--model-name", model], env)
    assert unlocked.returncode == 0, unlocked.output
    assert not locks_left(mlflow_client, model)
    moved = promoters.run(promote_cmd(run, model), env)
    assert moved.returncode == 0, moved.output


# ----------------------------------------------------------------------------- faults


def promote_args(run: str, model: str) -> list[str]:
    """A promotion with every follow-up: the stage, the version's tags, the deployment event."""
    return promote_cmd(
        run,
        model,
        "--expected-version",
        "none",
        "--dispatch-event",
        "deploy-model",
        "--stage",
        "Production",
    )


def github_env(home: Path, tracking_uri: str, github: FakeGitHub, **extra: str) -> dict[str, str]:
    return env_for(
        home,
        tracking_uri,
        GITHUB_ACTIONS="true",
        GITHUB_REPOSITORY="acme/iris",
        GITHUB_API_URL=github.url,
        GITHUB_TOKEN=TOKEN,
        GITHUB_RUN_ID="5",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="2",
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0",
        **extra,
    )


def assert_converged(mlflow_client: Any, model: str, run: str, dispatches: list[Any]) -> None:
    """Moved once: one version of the candidate, the alias on it, one done entry, one event."""
    found = versions(mlflow_client, model)
    assert [v.run_id for v in found] == [run], [v.version for v in found]
    assert mlflow_client.get_registered_model(model).aliases == {"champion": found[0].version}
    assert found[0].current_stage == "Production"
    moves = history(mlflow_client, model)
    assert [(m["from_version"], m["to_version"], m["state"], m["dispatch"]) for m in moves] == [
        (None, found[0].version, "done", "sent")
    ]
    mine = [
        d for d in dispatches if d["client_payload"]["model_uri"].startswith(f"models:/{model}/")
    ]
    assert len(mine) == 1, mine
    assert mine[0]["client_payload"]["promotion_id"] == moves[0]["id"]
    assert not locks_left(mlflow_client, model)


@pytest.mark.parametrize("fault", ["lost-reply", "killed"])
def test_a_fault_at_any_request_converges_on_re_run(
    tmp_path: Path, mlflow_server: str, github: FakeGitHub, promoters: Promoters, fault: str
) -> None:
    mlflow_client = client(mlflow_server)
    experiment_id = experiment(mlflow_client)
    proxy = FaultProxy(mlflow_server)
    server = proxy.serve()
    env = github_env(tmp_path, proxy.url, github)
    try:
        # A clean promotion first, to count its requests.
        model, run = unique("fault"), candidate(mlflow_client, experiment_id)
        clean = promoters.run(promote_args(run, model), env)
        assert clean.returncode == 0, clean.output
        assert_converged(mlflow_client, model, run, github.dispatches)
        requests = len(proxy.seen)
        assert requests > 10
        target: dict[str, int] = {}

        def kill_target() -> None:
            os.kill(promoters.pid(target["job"]), signal.SIGKILL)

        for index in range(requests):
            model, run = unique("fault"), candidate(mlflow_client, experiment_id)
            if fault == "killed":
                proxy.faults[:] = [Fault(".", skip=index, before=kill_target)]
            else:
                proxy.faults[:] = [Fault(".", skip=index, drop=True)]
            start = len(proxy.seen)
            target["job"] = promoters.start(promote_args(run, model), env)
            first = promoters.wait(target["job"])
            faulted = proxy.seen[start + index : start + index + 1]
            proxy.faults.clear()
            if fault == "killed":
                assert first.returncode == -signal.SIGKILL, (index, first.output[-800:])
            else:
                assert first.returncode in (0, 3, 6), (index, first.output[-800:])
            began = time.monotonic()
            again = promoters.run(promote_args(run, model), env)
            assert again.returncode == 0, (index, proxy.seen[-3:], again.output[-800:])
            assert time.monotonic() - began < 30, "a dead promoter's lock is taken over at once"
            try:
                assert_converged(mlflow_client, model, run, github.dispatches)
            except AssertionError as error:
                raise AssertionError(f"fault at request {index}: {faulted}") from error
    finally:
        server.shutdown()


def test_lost_reply_to_registration_leaves_one_version(
    tmp_path: Path, store_server: str, promoters: Promoters
) -> None:
    mlflow_client = client(store_server)
    model = unique("lost-create")
    run = candidate(mlflow_client, experiment(mlflow_client))
    proxy = FaultProxy(
        store_server, faults=[Fault(r"POST /api/2\.0/mlflow/model-versions/create", drop=True)]
    )
    server = proxy.serve()
    try:
        moved = promoters.run(promote_cmd(run, model), env_for(tmp_path, proxy.url))
    finally:
        server.shutdown()
    assert moved.returncode == 0, moved.output
    assert proxy.count("model-versions/create") == 2, "MLflow's client retried the POST"
    found = versions(mlflow_client, model)
    assert [v.version for v in found] == [moved.outputs()["version"]]
    assert mlflow_client.get_registered_model(model).aliases == {"champion": found[0].version}


# ----------------------------------------------------------------------------- follow-ups


def test_a_refused_dispatch_is_moved_follow_up_failed_and_a_re_run_sends_it_once(
    tmp_path: Path, mlflow_server: str, github: FakeGitHub, promoters: Promoters
) -> None:
    mlflow_client = client(mlflow_server)
    model = unique("dispatch-refused")
    run = candidate(mlflow_client, experiment(mlflow_client))
    summary = tmp_path / "summary.md"
    env = github_env(tmp_path, mlflow_server, github, GITHUB_STEP_SUMMARY=str(summary))
    github.forbidden.add("POST dispatches")
    failed = promoters.run(promote_args(run, model), env)
    assert failed.returncode == 6, failed.output
    assert failed.outputs()["changed"] == "true"
    assert failed.outputs()["version"] == "1"
    assert "moved to version 1, but sending the deployment event failed" in failed.output
    assert "moved, follow-up failed" in summary.read_text()
    assert mlflow_client.get_registered_model(model).aliases == {"champion": "1"}
    assert [m["dispatch"] for m in history(mlflow_client, model)] == ["pending"]
    github.forbidden.discard("POST dispatches")
    resumed = promoters.run(promote_args(run, model), env)
    assert resumed.returncode == 0, resumed.output
    assert resumed.outputs()["changed"] == "true"
    assert resumed.outputs()["resumed"] == "true"
    assert_converged(mlflow_client, model, run, github.dispatches)
    again = promoters.run(promote_args(run, model), env)
    assert again.returncode == 0, again.output
    assert again.outputs()["changed"] == "false"
    assert_converged(mlflow_client, model, run, github.dispatches)


# ----------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--alias", "latest", "promote.alias"),
        ("--alias", "v7", "promote.alias"),
        ("--alias", "V12", "promote.alias"),
        ("--alias", "prod env", "promote.alias"),
        ("--model-name", "team/model", "model.name"),
    ],
)
def test_names_mlflow_refuses_are_refused_before_any_write(
    tmp_path: Path, mlflow_server: str, promoters: Promoters, option: str, value: str, named: str
) -> None:
    mlflow_client = client(mlflow_server)
    model = unique("names")
    run = candidate(mlflow_client, experiment(mlflow_client))
    args = promote_cmd(run, model, option, value)
    refused = promoters.run(args, env_for(tmp_path, mlflow_server))
    assert refused.returncode == 2, refused.output
    assert named in refused.output
    assert repr(value) in refused.output
    assert "Traceback" not in refused.output
    names = [m.name for m in mlflow_client.search_registered_models(max_results=1000)]
    assert not [n for n in names if model in n], "no model, version, lock or history written"


@pytest.mark.parametrize("model", ["b'm", 'b"m', "mödel \"x\" 'y'"])
def test_model_names_with_quotes_promote_and_re_run(
    tmp_path: Path, mlflow_server: str, promoters: Promoters, model: str
) -> None:
    mlflow_client = client(mlflow_server)
    model = f"{model}-{unique('q')}"
    experiment_id = experiment(mlflow_client)
    env = env_for(tmp_path, mlflow_server)
    runs = [candidate(mlflow_client, experiment_id) for _ in range(2)]
    for run in runs:
        moved = promoters.run(promote_cmd(run, model), env)
        assert moved.returncode == 0, moved.output
    again = promoters.run(promote_cmd(runs[1], model), env)
    assert again.returncode == 0, again.output
    assert again.outputs()["changed"] == "false"
    found = mlflow_client.get_registered_model(model)
    assert found.aliases == {"champion": "2"}
    moves = history(mlflow_client, model)
    assert [(m["from_version"], m["to_version"]) for m in moves] == [(None, "1"), ("1", "2")]


def test_a_candidate_gated_for_another_model_is_refused(
    tmp_path: Path, mlflow_server: str, promoters: Promoters
) -> None:
    mlflow_client = client(mlflow_server)
    gated, other = unique("bm"), unique("other")
    tags = {
        "mlops.gate.verdict": "passed",
        "mlops.gate.model": gated,
        "mlops.gate.alias": "champion",
        "mlops.gate.champion_version": "1",
    }
    run = candidate(mlflow_client, experiment(mlflow_client), tags)
    env = env_for(tmp_path, mlflow_server)
    refused = promoters.run(promote_cmd(run, other), env)
    assert refused.returncode == 2, refused.output
    assert f"the gate judged {run} against model '{gated}'" in refused.stderr
    assert "require-gate: false" in refused.stderr
    assert not [m for m in mlflow_client.search_registered_models() if other in m.name]
    forced = promoters.run(promote_cmd(run, other, "--require-gate", "false"), env)
    assert forced.returncode == 0, forced.output
    assert forced.outputs()["version"] == "1"


def test_a_rollback_whose_dispatch_failed_is_finished_not_repeated(
    tmp_path: Path, mlflow_server: str, github: FakeGitHub, promoters: Promoters
) -> None:
    mlflow_client = client(mlflow_server)
    model = unique("rollback-resume")
    experiment_id = experiment(mlflow_client)
    env = github_env(tmp_path, mlflow_server, github)
    for _ in range(3):
        run = candidate(mlflow_client, experiment_id)
        moved = promoters.run(promote_cmd(run, model), env)
        assert moved.returncode == 0, moved.output
    rollback = ["rollback", "--model-name", model, "--dispatch-event", "deploy-model"]
    github.forbidden.add("POST dispatches")
    failed = promoters.run(rollback, env)
    assert failed.returncode == 6, failed.output
    assert failed.outputs()["version"] == "2"
    github.forbidden.discard("POST dispatches")
    resumed = promoters.run(rollback, env)
    assert resumed.returncode == 0, resumed.output
    assert resumed.outputs()["resumed"] == "true"
    assert resumed.outputs()["version"] == "2", "the same rollback finished, not a second one"
    assert mlflow_client.get_registered_model(model).aliases == {"champion": "2"}
    moves = history(mlflow_client, model)
    assert [(m["reason"], m["to_version"], m["dispatch"]) for m in moves][-1] == (
        "rollback",
        "2",
        "sent",
    )
    assert len(github.dispatches) == 1
