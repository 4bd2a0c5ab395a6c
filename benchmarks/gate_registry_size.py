"""Gate time against registry size: one candidate gated against a registered model with 10
versions and against one with 10,000, each with a 50-entry history of its `champion` alias.

Starts a real `mlflow server` (SQLite store unless --store-uri) on loopback. Before it starts,
the bulk of the large model's versions is written straight into the store with MLflow's
SqlAlchemyStore, in one transaction (placeholder versions: no run, never read by the gate).
Then, through the server: real runs with logged metrics and a logged scikit-learn model (10
that get promoted, and the candidate), and 50 moves of `champion` on each model by the suite's
own promote core, the 10 runs in turn (the first 10 moves register them, so the small model has
exactly those 10 versions and the large one has them as its newest 10). Then, alternating:

- the CLI: `mlops-actions evaluate` in logged mode, PR comment and check run off, one process
  per gate (what a workflow step runs);
- the core in-process: `evaluation.assess` + `gate.decide`, so process start-up (importing
  MLflow) does not hide a difference.

Reports medians, spread and the ratio large / small, and the REST requests each gate makes,
counted through a proxy: the same requests for both sizes is the structural proof that nothing
in the gate lists the versions. Also times single registry endpoints on both models, to show
where a difference comes from.

    .venv/bin/python benchmarks/gate_registry_size.py [--json results.json]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from mlflow_server import ROOT, machine, start_server, stop_server

sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))  # tests.fault_proxy: the proxy that counts requests

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
BIN = Path(sys.executable).parent
ALIAS = "champion"
HISTORY = 10  # gate.history, the default: champions shown in the report's chart
WAYS = ("cli", "core")
RULES = [
    {"metric": "accuracy", "direction": "higher", "threshold": 0.85, "min_improvement": 0.0},
    {"metric": "latency_ms", "direction": "lower", "max_regression": 5},
]


def model_name(versions: int) -> str:
    return f"gate-scale-{versions}"


# ----------------------------------------------------------------------------- the registry


def bulk_versions(store_uri: str, counts: dict[str, int]) -> float:
    """Create the registered models, each with `count` placeholder versions (one transaction
    per model, in-process, before the server starts). Returns the seconds it took."""
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(store_uri)
    start = time.perf_counter()
    for name, count in counts.items():
        store.create_registered_model(name)
        now = int(time.time() * 1000)
        with store.ManagedSessionMaker() as session:
            session.add_all(
                SqlModelVersion(
                    name=name,
                    version=version,
                    creation_time=now,
                    last_updated_time=now,
                    source=f"models:/m-{uuid.uuid4().hex}",
                )
                for version in range(1, count + 1)
            )
    elapsed = time.perf_counter() - start
    store.engine.dispose()
    return elapsed


def log_runs(url: str, count: int) -> tuple[list[str], str]:
    """`count` runs to promote and a better candidate: metrics and a scikit-learn model each."""
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no waits for versions announced
    mlflow.set_tracking_uri(url)
    mlflow.set_experiment("gate-registry-size")
    features, target = load_iris(return_X_y=True, as_frame=True)
    runs = []
    for index in range(count + 1):
        candidate = index == count
        model = LogisticRegression(C=0.5 + index, max_iter=300).fit(features, target)
        name = "candidate" if candidate else f"champion-{index}"
        with redirect_stdout(io.StringIO()), mlflow.start_run(run_name=name) as run:  # no links
            mlflow.log_metrics(
                {
                    "accuracy": 0.95 if candidate else 0.86 + index / 1000,
                    "latency_ms": 100.0,
                }
            )
            mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
        runs.append(run.info.run_id)
    return runs[:-1], runs[-1]


def record_history(client: Any, name: str, runs: list[str], moves: int) -> str:
    """`moves` promotions of the runs in turn by the suite's promote core; the last holder."""
    from mlops_actions import promote
    from mlops_actions.registry import resolve_candidate

    expected = promote.NONE
    for index in range(moves):
        result = promote.promote(
            client,
            model_name=name,
            alias=ALIAS,
            candidate=resolve_candidate(client, runs[index % len(runs)]),
            expected=expected,
            provenance=promote.Provenance(
                workflow_run=f"https://github.com/acme/iris/actions/runs/{1000 + index}",
                commit=f"{index:040x}",
                actor="benchmark",
                gate_verdict="passed",
            ),
        )
        expected = result.version
    return expected


# ----------------------------------------------------------------------------- the gate


def write_project(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True)
    gate = {"rules": RULES, "history": HISTORY, "report": {"pr_comment": False, "check_run": False}}
    document = {"version": 1, "model": {"name": name}, "gate": gate}
    (directory / "mlops.yaml").write_text(json.dumps(document))
    return directory


def cli_env(url: str, home: Path) -> dict[str, str]:
    """This environment without GitHub, runner, MLflow or suite settings from outside."""
    own = ("GITHUB_", "RUNNER_", "MLFLOW_", "MLOPS_", "ACTIONS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    return env | {
        "HOME": str(home),
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    }


def cli_gate(project: Path, env: dict[str, str], candidate: str) -> tuple[float, dict[str, str]]:
    """One `mlops-actions evaluate`: seconds and its outputs."""
    start = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "mlops-actions"), "evaluate", "--candidate", candidate],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(
            f"mlops-actions evaluate exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    outputs = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key and " " not in key:
            outputs[key] = value
    return elapsed, outputs


def core_gate(client: Any, url: str, name: str, candidate: str) -> tuple[Any, Any]:
    """The gate without its reporting: assessment (registry and runs) and decision."""
    from mlops_actions import evaluation, gate

    assessed = evaluation.assess(
        client,
        tracking_uri=url,
        model_name=name,
        alias=ALIAS,
        candidate=candidate,
        spec=None,
        environ=os.environ,
        cwd=Path.cwd(),
        history_limit=HISTORY,
        history_metric="accuracy",
    )
    decision = gate.decide(
        gate.parse_rules(RULES), assessed.metrics.candidate, assessed.metrics.champion
    )
    return assessed, decision


def endpoint(request: str) -> str:
    """ "GET /api/2.0/mlflow/runs/get?run_id=…" without its query: what is asked, not of whom."""
    return request.split("?", 1)[0]


def count_requests(
    upstream: str, gates: dict[str, Callable[[str], object]]
) -> dict[str, list[str]]:
    """Each gate's requests (in order), run once through a counting proxy at the given URL."""
    from tests.fault_proxy import FaultProxy

    proxy = FaultProxy(upstream)
    server = proxy.serve()
    seen = {}
    try:
        for label, run in gates.items():
            mark = len(proxy.seen)
            run(proxy.url)
            seen[label] = [request for request, _ in proxy.seen[mark:]]
            failed = [r for r, status in proxy.seen[mark:] if status >= 400]
            if failed:
                raise SystemExit(f"{label}: requests failed: {failed}")
    finally:
        server.shutdown()
    return seen


# ----------------------------------------------------------------------------- measuring


def spread(times: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
    }


def alternate(repeats: int, sizes: list[int], measure: Callable[[int], float]) -> dict[int, list]:
    """`repeats` rounds, the order of the sizes reversed every other round."""
    times: dict[int, list[float]] = {size: [] for size in sizes}
    for index in range(repeats):
        for size in sizes if index % 2 == 0 else sizes[::-1]:
            times[size].append(measure(size))
    return times


def busy_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]
    idle = ticks[3] + ticks[4]
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def tree_seconds(root: int) -> float:
    """CPU seconds of a process and its descendants, with their reaped children (/proc)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit():
            stats[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    tree, total, grown = {root}, 0, True
    while grown:
        grown = False
        for pid, (parent, _) in stats.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grown = True
    total = sum(ticks for pid, (_, ticks) in stats.items() if pid in tree)
    return total / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores used, on average since it was made, by processes other than this benchmark (this
    process, its children, and the server's process tree): other jobs on the machine."""

    def __init__(self, server_pid: int) -> None:
        self.server = server_pid
        self.start = (time.perf_counter(), busy_seconds(), self._ours())

    def _ours(self) -> float:
        mine = os.times()
        own = mine.user + mine.system + mine.children_user + mine.children_system
        return own + tree_seconds(self.server)

    def others(self) -> float:
        wall, busy, ours = self.start
        used = (busy_seconds() - busy) - (self._ours() - ours)
        return round(max(used, 0.0) / (time.perf_counter() - wall), 2)


@dataclass
class Registry:
    """The server and what was built on it."""

    url: str
    client: Any
    workdir: Path
    names: dict[int, str]
    holders: dict[int, str]  # the version holding the alias, by size
    candidate: str  # its run id
    setup: dict[str, float]


def build(url: str, workdir: Path, names: dict[int, str], moves: int, setup: dict) -> Registry:
    """Runs, logged models and the alias histories, through the server."""
    from mlflow import MlflowClient

    from mlops_actions import promote

    client = MlflowClient(url)
    start = time.perf_counter()
    runs, candidate = log_runs(url, min(names))
    setup["log_runs_s"] = time.perf_counter() - start
    holders = {}
    for size, name in names.items():
        start = time.perf_counter()
        holders[size] = record_history(client, name, runs, moves)
        setup[f"promote_{size}_s"] = time.perf_counter() - start
        newest = client.search_model_versions(
            f"name = '{name}'", max_results=1, order_by=["version_number DESC"]
        )
        assert int(newest[0].version) == size, (size, newest[0].version)
        assert len(promote.history_of(client, name, ALIAS)) == min(moves, 50)
    print(f"setup: {json.dumps({k: round(v, 1) for k, v in setup.items()})}", flush=True)
    return Registry(url, client, workdir, names, holders, candidate, setup)


class Gates:
    """Both ways of running the gate on one model size, checked every time."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.projects = {
            size: write_project(registry.workdir / "projects" / str(size), name)
            for size, name in registry.names.items()
        }
        self.home = registry.workdir / "home"
        self.home.mkdir()

    def cli(self, size: int, url: str = "") -> float:
        registry = self.registry
        env = cli_env(url or registry.url, self.home)
        elapsed, outputs = cli_gate(self.projects[size], env, registry.candidate)
        assert outputs["verdict"] == "passed", outputs
        assert outputs["champion-version"] == registry.holders[size], outputs
        return elapsed

    def core(self, size: int, url: str = "") -> float:
        from mlflow import MlflowClient

        registry = self.registry
        client = MlflowClient(url) if url else registry.client
        start = time.perf_counter()
        assessed, decision = core_gate(
            client, url or registry.url, registry.names[size], registry.candidate
        )
        elapsed = time.perf_counter() - start
        assert decision.passed, decision
        assert assessed.champion.version == registry.holders[size]
        assert len(assessed.history) == min(HISTORY, *registry.names), assessed.history
        return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, nargs=2, default=[10, 10000], metavar="N")
    parser.add_argument("--moves", type=int, default=50, help="promotions recorded per model")
    parser.add_argument("--cli-repeats", type=int, default=7, help="CLI gates per model")
    parser.add_argument("--core-repeats", type=int, default=40, help="in-process gates per model")
    parser.add_argument("--store-uri", default="", help="an empty database instead of SQLite")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    sizes = sorted(args.versions)
    names = {size: model_name(size) for size in sizes}
    info = machine()

    workdir = Path(tempfile.mkdtemp(prefix="gate-scale-bench-"))
    store_uri = args.store_uri or f"sqlite:///{workdir / 'store.db'}"
    setup = {"bulk_versions_s": bulk_versions(store_uri, {names[sizes[1]]: sizes[1] - sizes[0]})}
    process, url = start_server(workdir, store_uri)
    try:
        registry = build(url, workdir, names, args.moves, setup)
        gates = Gates(registry)
        # Requests, once per model and way through the proxy (also a warm-up); then timings.
        requests = count_requests(
            url,
            {f"{way} {size}": partial(getattr(gates, way), size) for way in WAYS for size in sizes},
        )
        for way in WAYS:
            first, second = (Counter(map(endpoint, requests[f"{way} {s}"])) for s in sizes)
            if first != second:
                raise SystemExit(f"{way}: the requests differ by size: {first} vs {second}")
        for size in sizes:
            gates.core(size)
        own = CpuMeter(process.pid)
        times = {
            "core": alternate(args.core_repeats, sizes, gates.core),
            "cli": alternate(args.cli_repeats, sizes, gates.cli),
        }
        info["other_processes_cores"] = own.others()
        endpoints = time_endpoints(registry)
        info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        stop_server(process)
        shutil.rmtree(workdir, ignore_errors=True)

    result = report(sizes, args, setup, times, requests, endpoints, info)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


ENDPOINTS = {
    "GetRegisteredModel": lambda c, name, version, run: c.get_registered_model(name),
    "SearchRegisteredModels (name =)": lambda c, name, version, run: c.search_registered_models(
        f"name = '{name}'"
    ),
    "GetModelVersionByAlias": lambda c, name, version, run: c.get_model_version_by_alias(
        name, ALIAS
    ),
    "GetModelVersion": lambda c, name, version, run: c.get_model_version(name, version),
    "GetRun": lambda c, name, version, run: c.get_run(run),
}


def time_endpoints(registry: Registry, repeats: int = 15) -> dict[str, dict[int, float]]:
    """Median milliseconds of single registry calls on each model, alternating."""
    medians: dict[str, dict[int, float]] = {}
    sizes = sorted(registry.names)
    for label, call in ENDPOINTS.items():

        def measure(size: int, call: Callable[..., object] = call) -> float:
            start = time.perf_counter()
            call(registry.client, registry.names[size], registry.holders[size], registry.candidate)
            return time.perf_counter() - start

        times = alternate(repeats, sizes, measure)
        medians[label] = {size: round(statistics.median(times[size]) * 1000, 1) for size in sizes}
    return medians


def report(
    sizes: list[int],
    args: argparse.Namespace,
    setup: dict[str, float],
    times: dict[str, dict[int, list[float]]],
    requests: dict[str, list[str]],
    endpoints: dict[str, dict[int, float]],
    info: dict[str, Any],
) -> dict[str, Any]:
    small, large = sizes
    result: dict[str, Any] = {
        "versions": sizes,
        "alias_history_entries": min(args.moves, 50),
        "gate_history": HISTORY,
        "store": "custom" if args.store_uri else "sqlite",
        "setup_s": {k: round(v, 1) for k, v in setup.items()},
        "machine": info,
    }
    rows = []
    labels = {
        "cli": "`mlops-actions evaluate` (a process per gate)",
        "core": "core in-process: `assess` + `decide`",
    }
    for way, label in labels.items():
        runs = times[way]
        medians = {size: statistics.median(runs[size]) for size in sizes}
        ratio = medians[large] / medians[small]
        counts = {size: len(requests[f"{way} {size}"]) for size in sizes}
        result[way] = {
            "repeats": len(runs[small]),
            **{str(size): spread(runs[size]) for size in sizes},
            "ratio": round(ratio, 3),
            "requests": {str(size): counts[size] for size in sizes},
            "endpoints": dict(sorted(Counter(map(endpoint, requests[f"{way} {small}"])).items())),
        }
        cells = [f"{medians[s]:.3f} s ({min(runs[s]):.3f}-{max(runs[s]):.3f})" for s in sizes]
        requested = f"{counts[small]} / {counts[large]}"
        rows.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio:.2f} | {requested} |")
    result["endpoint_ms"] = {
        label: {str(k): v for k, v in row.items()} for label, row in endpoints.items()
    }

    print(f"\n| gate | {small:,} versions | {large:,} versions | ratio | requests |")
    print("|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\n| endpoint (median ms) | {small:,} versions | {large:,} versions |")
    print("|---|---:|---:|")
    for label, row in endpoints.items():
        print(f"| {label} | {row[small]} | {row[large]} |")
    print("\nrequests per gate:")
    for way in WAYS:
        print(f"  {way}: {result[way]['endpoints']}")
    return result


if __name__ == "__main__":
    sys.exit(main())
