"""Execute a composite action's steps the way the GitHub runner does.

Inputs are resolved against their defaults, every `${{ }}` expression in `env:`, `with:`,
`if:` and `working-directory:` is evaluated, each `run:` step runs under
`bash --noprofile --norc -eo pipefail` with fresh GITHUB_OUTPUT / GITHUB_ENV / GITHUB_PATH /
GITHUB_STEP_SUMMARY files, and step outputs, env and PATH additions flow to later steps.
The action's outputs are evaluated from `outputs.*.value` at the end.

`uses:` steps (actions/cache) cannot run here: they are recorded with their evaluated `with:`
so tests can check what they would have been given, and report no outputs.
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

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}", re.S)
TOKEN = re.compile(
    r"\s*(==|!=|<=|>=|<|>|&&|\|\||!|\(|\)|,|'(?:[^']|'')*'|[A-Za-z_][\w.\-*]*|\d+(?:\.\d+)?)"
)


class Expression:
    """A small evaluator for the GitHub expression subset that the actions and workflows here use:
    literals, context lookups (with `*` projections such as `needs.*.result`), `!`, `==`, `!=`,
    `<`, `<=`, `>`, `>=`, `&&` and `||` (which return an operand, as GitHub's do), and the
    functions contains, startsWith, endsWith, format, join, toJSON, fromJSON and the status
    functions."""

    def __init__(self, text: str, context: dict[str, Any]) -> None:
        self.tokens = self._tokenize(text)
        self.pos = 0
        self.context = context

    @staticmethod
    def _tokenize(text: str) -> list[str]:
        tokens, pos = [], 0
        while pos < len(text):
            match = TOKEN.match(text, pos)
            if not match:
                if text[pos:].strip() == "":
                    break
                raise ValueError(f"cannot parse expression {text!r} at {pos}")
            tokens.append(match.group(1))
            pos = match.end()
        return tokens

    def evaluate(self) -> Any:
        value = self._or()
        if self.pos != len(self.tokens):
            raise ValueError(f"trailing tokens: {self.tokens[self.pos :]}")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _or(self) -> Any:
        left = self._and()
        while self._peek() == "||":
            self._take()
            right = self._and()
            left = left or right
        return left

    def _and(self) -> Any:
        left = self._equality()
        while self._peek() == "&&":
            self._take()
            right = self._equality()
            left = left and right
        return left

    def _equality(self) -> Any:
        left = self._comparison()
        while self._peek() in ("==", "!="):
            op = self._take()
            right = self._comparison()
            same = _loose(left) == _loose(right)
            left = same if op == "==" else not same
        return left

    def _comparison(self) -> Any:
        left = self._unary()
        while self._peek() in ("<", "<=", ">", ">="):
            op = self._take()
            right = self._unary()
            a, b = _number(left), _number(right)
            left = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        return left

    def _unary(self) -> Any:
        if self._peek() == "!":
            self._take()
            return not self._unary()
        return self._primary()

    def _primary(self) -> Any:
        token = self._take()
        if token == "(":
            value = self._or()
            self._take()
            return value
        if token.startswith("'"):
            return token[1:-1].replace("''", "'")
        if token in ("true", "false"):
            return token == "true"
        if token == "null":
            return None
        if re.fullmatch(r"\d+(\.\d+)?", token):
            return float(token)
        if self._peek() == "(":
            self._take()
            args = []
            while self._peek() != ")":
                args.append(self._or())
                if self._peek() == ",":
                    self._take()
            self._take()
            return self._call(token, args)
        return self._lookup(token)

    def _call(self, name: str, args: list[Any]) -> Any:
        status = self.context.get("__status__", "success")
        if name == "always":
            return True
        if name in ("success", "failure"):
            return status == name
        if name == "cancelled":
            return False
        if name == "hashFiles":
            return "hashfiles-not-evaluated"
        if name not in FUNCTIONS:
            raise ValueError(f"unsupported function {name}")
        return FUNCTIONS[name](*args)

    def _lookup(self, dotted: str) -> Any:
        nodes: list[Any] = [self.context]
        projected = False
        for part in dotted.split("."):
            if part == "*":
                projected = True
                nodes = [v for n in nodes if isinstance(n, dict) for v in n.values()]
                continue
            nodes = [n.get(part, "") if isinstance(n, dict) else "" for n in nodes]
        return nodes if projected else nodes[0]


def _loose(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _text(value: Any) -> str:
    """A value as GitHub turns it into a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return "" if value is None else str(value)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip() or 0)
    except ValueError:
        return float("nan")


def _contains(haystack: Any, needle: Any) -> bool:
    if isinstance(haystack, list):
        return any(_loose(item) == _loose(needle) for item in haystack)
    return _text(needle).lower() in _text(haystack).lower()


def _format(template: Any, *values: Any) -> str:
    text = _text(template)
    for index, value in enumerate(values):
        text = text.replace("{" + str(index) + "}", _text(value))
    return text


def _join(items: Any, separator: Any = ",") -> str:
    return _text(separator).join(_text(i) for i in (items if isinstance(items, list) else [items]))


FUNCTIONS: dict[str, Any] = {
    "contains": _contains,
    "startsWith": lambda a, b: _text(a).lower().startswith(_text(b).lower()),
    "endsWith": lambda a, b: _text(a).lower().endswith(_text(b).lower()),
    "format": _format,
    "join": _join,
    "toJSON": lambda value: json.dumps(value, indent=2),
    "fromJSON": lambda text: json.loads(_text(text)),
}


def render(text: Any, context: dict[str, Any]) -> str:
    """Substitute every ${{ expr }} in a string."""
    if not isinstance(text, str):
        return "" if text is None else str(text).lower() if isinstance(text, bool) else str(text)

    def substitute(match: re.Match[str]) -> str:
        return _text(Expression(match.group(1), context).evaluate())

    return EXPRESSION.sub(substitute, text)


def condition(text: Any, context: dict[str, Any]) -> bool:
    if text is None:
        return context.get("__status__", "success") == "success"
    raw = str(text).strip()
    inner = EXPRESSION.fullmatch(raw)
    expression = inner.group(1) if inner else raw
    # GitHub adds an implicit success() unless the condition names a status function.
    value = Expression(expression, context).evaluate()
    if not re.search(r"\b(always|failure|cancelled|success)\(", expression):
        value = value and context.get("__status__", "success") == "success"
    return bool(value)


def parse_env_file(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT / GITHUB_ENV format: name=value lines and name<<DELIMITER blocks."""
    values: dict[str, str] = {}
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body = []
            while lines[index] != delimiter:
                body.append(lines[index])
                index += 1
            index += 1
            values[name] = "\n".join(body)
        else:
            name, _, value = line.partition("=")
            values[name] = value
    return values


@dataclass
class StepResult:
    name: str
    id: str
    outcome: str  # success | failure | skipped | recorded (uses:)
    outputs: dict[str, str] = field(default_factory=dict)
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    uses: str = ""
    with_: dict[str, str] = field(default_factory=dict)


@dataclass
class ActionResult:
    outcome: str
    outputs: dict[str, str]
    steps: list[StepResult]
    summary: str
    path_added: list[str]
    env_added: dict[str, str] = field(default_factory=dict)

    @property
    def log(self) -> str:
        return "\n".join(s.stdout + "\n" + s.stderr for s in self.steps)

    def step(self, step_id: str) -> StepResult:
        return next(s for s in self.steps if s.id == step_id)


def run_action(
    action_dir: Path,
    inputs: dict[str, str],
    *,
    workspace: Path,
    env: dict[str, str],
    timeout: float = 900,
    github_token: str = "",
    runner_temp: Path | None = None,
) -> ActionResult:
    """Run one composite action; `env` is the job's environment (PATH, HOME, secrets...).

    `github_token` is what `${{ github.token }}` evaluates to in input defaults; `runner_temp`
    is the job's RUNNER_TEMP (default: a directory of this action's own).
    """
    spec = yaml.safe_load((action_dir / "action.yml").read_text())
    assert spec["runs"]["using"] == "composite"
    declared = spec.get("inputs", {}) or {}
    unknown = set(inputs) - set(declared)
    assert not unknown, f"inputs not declared by the action: {unknown}"
    # Input defaults are expressions too (e.g. `${{ github.token }}`), evaluated by the runner.
    default_context = {"github": {"token": github_token}, "runner": {"os": "Linux"}}
    resolved_inputs = {
        name: inputs[name]
        if name in inputs
        else render(str((meta or {}).get("default", "")), default_context)
        for name, meta in declared.items()
    }
    job_env = dict(env)
    env_added: dict[str, str] = {}
    path_added: list[str] = []
    steps: dict[str, dict[str, Any]] = {}
    results: list[StepResult] = []
    summaries: list[str] = []
    status = "success"
    scratch = Path(tempfile.mkdtemp(prefix="composite-"))
    temp = runner_temp or scratch

    for index, step in enumerate(spec["runs"]["steps"]):
        step_id = step.get("id", f"__step{index}")
        context = {
            "inputs": resolved_inputs,
            "steps": steps,
            "env": job_env,
            "runner": {"os": "Linux", "arch": "X64", "temp": str(temp)},
            "github": {"action_path": str(action_dir), "workspace": str(workspace)},
            "__status__": status,
        }
        name = step.get("name", step_id)
        if not condition(step.get("if"), context):
            results.append(StepResult(name, step_id, "skipped"))
            steps[step_id] = {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
            continue
        if "uses" in step:
            with_ = {k: render(v, context) for k, v in (step.get("with") or {}).items()}
            results.append(StepResult(name, step_id, "recorded", uses=step["uses"], with_=with_))
            steps[step_id] = {"outputs": {}, "outcome": "success", "conclusion": "success"}
            continue
        files = {kind: scratch / f"{index}-{kind}" for kind in ("output", "env", "path", "summary")}
        for file in files.values():
            file.write_text("")
        step_env = dict(job_env)
        step_env.update({k: render(v, context) for k, v in (step.get("env") or {}).items()})
        step_env.update(
            {
                "GITHUB_ACTIONS": "true",
                "GITHUB_ACTION_PATH": str(action_dir),
                "GITHUB_WORKSPACE": str(workspace),
                "GITHUB_OUTPUT": str(files["output"]),
                "GITHUB_ENV": str(files["env"]),
                "GITHUB_PATH": str(files["path"]),
                "GITHUB_STEP_SUMMARY": str(files["summary"]),
                "RUNNER_OS": "Linux",
                "RUNNER_TEMP": str(temp),
            }
        )
        workdir = workspace / render(step.get("working-directory", "."), context)
        script = scratch / f"{index}-script.sh"
        script.write_text(step["run"])
        assert step.get("shell") == "bash", f"step {name!r} must set shell: bash"
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workdir,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        outputs = parse_env_file(files["output"].read_text())
        added = parse_env_file(files["env"].read_text())
        job_env.update(added)
        env_added.update(added)
        for line in files["path"].read_text().splitlines():
            if line.strip():
                path_added.append(line.strip())
                job_env["PATH"] = line.strip() + os.pathsep + job_env.get("PATH", "")
        summaries.append(files["summary"].read_text())
        outcome = "success" if done.returncode == 0 else "failure"
        if outcome == "failure":
            status = "failure"
        results.append(
            StepResult(name, step_id, outcome, outputs, done.returncode, done.stdout, done.stderr)
        )
        steps[step_id] = {"outputs": outputs, "outcome": outcome, "conclusion": outcome}

    final_context = {
        "inputs": resolved_inputs,
        "steps": steps,
        "env": job_env,
        "runner": {"os": "Linux"},
        "github": {},
    }
    outputs = {
        name: render((meta or {}).get("value", ""), final_context)
        for name, meta in (spec.get("outputs") or {}).items()
    }
    return ActionResult(status, outputs, results, "".join(summaries), path_added, env_added)
