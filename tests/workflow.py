"""Run a workflow's jobs on this machine, step by step, the way the GitHub runner does.

A `Workflow` takes a workflow file (a template or one of .github/workflows), the event that
triggers it (its name and payload), the workspace (a checkout: the tests use a fresh copy of
the example project or of this repository), the runner's environment, and the `vars` and
`secrets` a repository would hold. `run()` runs the jobs in the order their `needs:` give:

- `if:` (job and step, with GitHub's implicit `success()`), `env:` (workflow, job, step),
  `with:`, `outputs:`, `needs.<job>.outputs`/`.result`, `steps.<id>.outputs`/`.outcome`,
  `inputs` (workflow_dispatch, with defaults and boolean inputs), `continue-on-error`,
  `timeout-minutes`, `working-directory` are evaluated as the runner does (the expression
  subset of tests/composite.py);
- `run:` steps run in bash (`bash -e {0}`, or `bash --noprofile --norc -eo pipefail {0}` for
  `shell: bash`) with fresh GITHUB_OUTPUT / GITHUB_ENV / GITHUB_PATH / GITHUB_STEP_SUMMARY
  files, the GITHUB_* and RUNNER_* variables, and the event payload in GITHUB_EVENT_PATH;
- `uses: ./actions/<verb>`, `uses: ./` and the templates'
  `<owner>/mlops-actions[/actions/<verb>]@<sha>` run this repository's composite action with
  tests/composite.py;
- the third-party actions in LOCAL_EQUIVALENTS are not run: each has a local equivalent in the
  test's set-up (below) and is recorded with its evaluated `with:`; any other `uses:` fails, so
  a template cannot grow a step that the tests silently skip;
- a job with an `environment:` runs only once that environment is approved
  (`Workflow.approved`); until then it is `waiting` and the jobs that need it do not start, as
  on GitHub when the environment has required reviewers. `run()` again continues the run;
- `act=True` runs the jobs as nektos/act does: `ACT=true` in the environment and the `env`
  context, and environments are not waited for (act ignores them).

`$default-branch` is replaced by `default_branch`, as GitHub does when it creates a workflow
from a template.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.composite import ActionResult, condition, parse_env_file, render, run_action

ROOT = Path(__file__).resolve().parent.parent

# The suite as the templates name it: any owner, this repository's name, a full commit hash.
SUITE_REF = re.compile(r"^[\w.-]+/mlops-actions(?P<path>/actions/[\w-]+)?@[0-9a-f]{40}$")

# Third-party actions and what stands in for each in the tests.
LOCAL_EQUIVALENTS = {
    "actions/checkout": "the workspace is already a checkout of the commit under test",
    "actions/setup-python": "the tests' Python is first on PATH",
    "actions/cache": "nothing is cached between test runs",
    "aws-actions/configure-aws-credentials": "the DVC remote is local: no cloud credentials",
    "actions/attest": "signing needs GitHub's OIDC token and Sigstore: its inputs are checked",
}


@dataclass
class StepRecord:
    name: str
    id: str
    outcome: str  # success | failure | skipped
    conclusion: str  # the outcome after continue-on-error
    outputs: dict[str, str] = field(default_factory=dict)
    uses: str = ""
    with_: dict[str, str] = field(default_factory=dict)
    log: str = ""
    action: ActionResult | None = None
    local_equivalent: str = ""  # set for a third-party action that was not run
    env_added: dict[str, str] = field(default_factory=dict)  # GITHUB_ENV
    path_added: list[str] = field(default_factory=list)  # GITHUB_PATH
    summary: str = ""  # GITHUB_STEP_SUMMARY


@dataclass
class JobResult:
    id: str
    name: str
    result: str  # success | failure | skipped | waiting
    outputs: dict[str, str] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    environment: str = ""
    summary: str = ""

    def step(self, step_id: str) -> StepRecord:
        return next(s for s in self.steps if s.id == step_id)

    @property
    def log(self) -> str:
        return "\n".join(f"--- {s.name} ({s.outcome})\n{s.log}" for s in self.steps)


@dataclass
class Workflow:
    path: Path
    workspace: Path
    event_name: str
    event: dict[str, Any]
    env: dict[str, str]
    vars: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    github: dict[str, Any] = field(default_factory=dict)
    act: bool = False
    approved: set[str] = field(default_factory=set)
    default_branch: str = "main"
    results: dict[str, JobResult] = field(default_factory=dict)

    def __post_init__(self) -> None:
        text = self.path.read_text().replace("$default-branch", self.default_branch)
        self.spec = yaml.safe_load(text)
        # PyYAML reads the key `on` as the boolean True (YAML 1.1).
        self.triggers = self.spec.get("on", self.spec.get(True)) or {}
        self.scratch = Path(tempfile.mkdtemp(prefix="workflow-"))
        event_path = self.scratch / "event.json"
        event_path.write_text(json.dumps(self.event))
        token = self.github.get("token", "")
        self.github_context: dict[str, Any] = {
            "event_name": self.event_name,
            "event": self.event,
            "event_path": str(event_path),
            "workspace": str(self.workspace),
            "workflow": self.spec.get("name", self.path.name),
            "run_id": "4242",
            "run_number": "17",
            "run_attempt": "1",
            "server_url": "https://github.com",
            "api_url": "https://api.github.com",
            "repository_owner": str(self.github.get("repository", "acme/x")).split("/")[0],
            "token": token,
            **self.github,
        }
        self.secrets_context = {"GITHUB_TOKEN": token, **self.secrets}
        self.inputs = self._inputs()

    # ------------------------------------------------------------------------- contexts

    def _inputs(self) -> dict[str, Any]:
        declared = (self.triggers.get("workflow_dispatch") or {}).get("inputs") or {}
        given = self.event.get("inputs") or {}
        values: dict[str, Any] = {}
        for name, meta in declared.items():
            value = given.get(name, meta.get("default", ""))
            if meta.get("type") == "boolean":
                value = value if isinstance(value, bool) else str(value).lower() == "true"
            values[name] = value
        return values

    def _base_context(self) -> dict[str, Any]:
        return {
            "github": self.github_context,
            "vars": self.vars,
            "secrets": self.secrets_context,
            "inputs": self.inputs,
            "runner": {"os": "Linux", "arch": "X64", "temp": str(self.scratch)},
        }

    def _runner_variables(self, job_id: str, temp: Path) -> dict[str, str]:
        """The variables the runner sets for every step."""
        g = self.github_context
        variables = {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKFLOW": str(g["workflow"]),
            "GITHUB_JOB": job_id,
            "GITHUB_EVENT_NAME": self.event_name,
            "GITHUB_EVENT_PATH": str(g["event_path"]),
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_REPOSITORY": str(g.get("repository", "")),
            "GITHUB_REPOSITORY_OWNER": str(g["repository_owner"]),
            "GITHUB_SHA": str(g.get("sha", "")),
            "GITHUB_REF": str(g.get("ref", "")),
            "GITHUB_REF_NAME": str(g.get("ref_name", "")),
            "GITHUB_HEAD_REF": str(g.get("head_ref", "")),
            "GITHUB_BASE_REF": str(g.get("base_ref", "")),
            "GITHUB_ACTOR": str(g.get("actor", "")),
            "GITHUB_RUN_ID": str(g["run_id"]),
            "GITHUB_RUN_NUMBER": str(g["run_number"]),
            "GITHUB_RUN_ATTEMPT": str(g["run_attempt"]),
            "GITHUB_SERVER_URL": str(g["server_url"]),
            "GITHUB_API_URL": str(g["api_url"]),
            "RUNNER_OS": "Linux",
            "RUNNER_ARCH": "X64",
            "RUNNER_TEMP": str(temp),
        }
        if self.act:
            variables["ACT"] = "true"
        return variables

    # ------------------------------------------------------------------------- jobs

    def run(self) -> dict[str, JobResult]:
        """Run every job that can run now, in `needs:` order. Jobs that finished are not run
        again; a job waiting for its environment is tried again (approve it first)."""
        jobs = self.spec["jobs"]
        progress = True
        while progress:
            progress = False
            for job_id, job in jobs.items():
                done = self.results.get(job_id)
                if done is not None and done.result != "waiting":
                    continue
                needs = [self.results.get(n) for n in _as_list(job.get("needs"))]
                if any(n is None or n.result == "waiting" for n in needs):
                    continue
                self.results[job_id] = self.run_job(job_id)
                progress = progress or self.results[job_id].result != "waiting"
        return self.results

    def run_job(self, job_id: str, needs: dict[str, JobResult] | None = None) -> JobResult:
        """One job; `needs` stands in for the results of the jobs it needs (default: this run's)."""
        job = self.spec["jobs"][job_id]
        name = render(job.get("name", job_id), self._base_context())
        need_results = needs if needs is not None else self.results
        needs_context = {
            n: {"outputs": need_results[n].outputs, "result": need_results[n].result}
            for n in _as_list(job.get("needs"))
        }
        results = {n["result"] for n in needs_context.values()}
        status = (
            "failure"
            if results & {"failure", "cancelled"}
            else "skipped"
            if "skipped" in results
            else "success"
        )
        context = {**self._base_context(), "needs": needs_context, "__status__": status}
        # The implicit success() of a job's `if:` means: every job it needs succeeded.
        if not condition(job.get("if"), context):
            return JobResult(job_id, name, "skipped")
        environment = job.get("environment") or ""
        if isinstance(environment, dict):
            environment = environment.get("name", "")
        environment = render(environment, context)
        if environment and not self.act and environment not in self.approved:
            return JobResult(job_id, name, "waiting", environment=environment)

        temp = Path(tempfile.mkdtemp(prefix=f"{job_id}-", dir=self.scratch))
        workflow_env = {k: render(v, context) for k, v in (self.spec.get("env") or {}).items()}
        env_context = {**workflow_env}
        if self.act:
            env_context["ACT"] = "true"
        job_env_context = {**context, "env": env_context}
        env_context.update(
            {k: render(v, job_env_context) for k, v in (job.get("env") or {}).items()}
        )
        process_env = {**self.env, **self._runner_variables(job_id, temp), **env_context}

        steps: dict[str, dict[str, Any]] = {}
        records: list[StepRecord] = []
        summaries: list[str] = []
        job_status = "success"
        for index, step in enumerate(job.get("steps") or []):
            step_id = step.get("id", f"__step{index}")
            step_context = {
                **context,
                "env": dict(env_context),
                "steps": steps,
                "job": {"status": job_status},
                "__status__": job_status,
            }
            step_name = render(step.get("name", step.get("uses", step_id)), step_context)
            if not condition(step.get("if"), step_context):
                records.append(StepRecord(step_name, step_id, "skipped", "skipped"))
                steps[step_id] = {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
                continue
            step_env = {k: render(v, step_context) for k, v in (step.get("env") or {}).items()}
            timeout = float(step.get("timeout-minutes", job.get("timeout-minutes", 360))) * 60
            run_step = self._run_step if "run" in step else self._uses_step
            record = run_step(
                step, step_name, step_id, step_context, temp, timeout, {**process_env, **step_env}
            )
            summaries.append(record.summary)
            env_context.update(record.env_added)
            process_env.update(record.env_added)
            for directory in record.path_added:
                process_env["PATH"] = directory + os.pathsep + process_env.get("PATH", "")
            continue_on_error = render(step.get("continue-on-error", False), step_context)
            record.conclusion = (
                "success"
                if record.outcome == "failure" and continue_on_error == "true"
                else record.outcome
            )
            if record.conclusion == "failure":
                job_status = "failure"
            records.append(record)
            steps[step_id] = {
                "outputs": record.outputs,
                "outcome": record.outcome,
                "conclusion": record.conclusion,
            }

        final = {**context, "env": env_context, "steps": steps, "job": {"status": job_status}}
        outputs = {k: render(v, final) for k, v in (job.get("outputs") or {}).items()}
        return JobResult(
            job_id, name, job_status, outputs, records, environment, "".join(summaries)
        )

    # ------------------------------------------------------------------------- steps

    def _run_step(
        self,
        step: dict[str, Any],
        name: str,
        step_id: str,
        context: dict[str, Any],
        temp: Path,
        timeout: float,
        env: dict[str, str],
    ) -> StepRecord:
        files = {kind: temp / f"{step_id}-{kind}" for kind in ("output", "env", "path", "summary")}
        for file in files.values():
            file.write_text("")
        env.update(
            GITHUB_OUTPUT=str(files["output"]),
            GITHUB_ENV=str(files["env"]),
            GITHUB_PATH=str(files["path"]),
            GITHUB_STEP_SUMMARY=str(files["summary"]),
        )
        script = temp / f"{step_id}-script.sh"
        script.write_text(render(step["run"], context))
        shell = step.get("shell")
        argv = (
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)]
            if shell == "bash"
            else ["bash", "-e", str(script)]
        )
        assert shell in (None, "bash"), f"step {name!r}: only bash steps run here, not {shell}"
        workdir = self.workspace / render(step.get("working-directory", "."), context)
        done = subprocess.run(
            argv,
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        outcome = "success" if done.returncode == 0 else "failure"
        return StepRecord(
            name,
            step_id,
            outcome,
            outcome,
            parse_env_file(files["output"].read_text()),
            log=done.stdout + done.stderr,
            env_added=parse_env_file(files["env"].read_text()),
            path_added=[line.strip() for line in files["path"].read_text().splitlines() if line],
            summary=files["summary"].read_text(),
        )

    def _uses_step(
        self,
        step: dict[str, Any],
        name: str,
        step_id: str,
        context: dict[str, Any],
        temp: Path,
        timeout: float,
        env: dict[str, str],
    ) -> StepRecord:
        uses = step["uses"]
        with_ = {k: render(v, context) for k, v in (step.get("with") or {}).items()}
        action_dir = self._local_action(uses)
        if action_dir is None:
            action = uses.split("@", 1)[0]
            assert action in LOCAL_EQUIVALENTS, (
                f"step {name!r}: {uses} has no local equivalent in tests/workflow.py"
            )
            return StepRecord(
                name,
                step_id,
                "success",
                "success",
                uses=uses,
                with_=with_,
                local_equivalent=LOCAL_EQUIVALENTS[action],
            )
        result = run_action(
            action_dir,
            with_,
            workspace=self.workspace,
            env=env,
            timeout=timeout,
            github_token=str(self.github_context.get("token", "")),
            runner_temp=temp,
        )
        return StepRecord(
            name,
            step_id,
            result.outcome,
            result.outcome,
            result.outputs,
            uses=uses,
            with_=with_,
            log=result.log,
            action=result,
            env_added=result.env_added,
            path_added=result.path_added,
            summary=result.summary,
        )

    def _local_action(self, uses: str) -> Path | None:
        """This repository's composite action that a `uses:` names, if it names one."""
        if uses.startswith("./"):
            return (self.workspace / uses).resolve()
        match = SUITE_REF.match(uses)
        if match:
            return ROOT / match["path"].lstrip("/") if match["path"] else ROOT
        return None


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
