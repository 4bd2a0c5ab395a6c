"""What the gate's paired bootstrap costs: time and peak memory by rows and resamples.

Ours (`mlops_actions.significance.compare`) against what a user would write: a loop of index
draws (`rng.integers(0, n, n)`), scoring both models with scikit-learn on each resample. The
loop is timed on a few resamples (`--naive-resamples`) and scaled linearly to the full count
(it is linear in resamples: every resample does the same work); ours is timed in full.

One metric per resampling scheme:
- accuracy_score (classifier): a multinomial draw of the paired confusion table, so n hardly
  matters;
- root_mean_squared_error (regressor): Poisson(1) row weights drawn in blocks, weighted sums;
- roc_auc (binary classifier): the same weights, each model's scores sorted once.

Every measurement runs in a fresh Python process, so none inherits another's memory or caches.
Peak memory is the growth of the process's peak resident set (VmHWM, reset once the data is
made) during the call: everything the call touched, threads included. CPU is the process's user
and system time during the call (above the wall time when both cores work). Other jobs on the
machine take cores from ours: each result keeps the load average before it, and `--repeat N`
keeps the fastest of N runs of ours. Linux only.

    .venv/bin/python benchmarks/bootstrap.py [--rows 1000 10000 100000 1000000]
        [--resamples 2000 10000] [--metrics accuracy_score root_mean_squared_error roc_auc]
        [--repeat 1] [--significance PATH] [--json benchmarks/results/bootstrap.json]

`--significance` benchmarks another copy of significance.py (say, an earlier commit's, from
`git show REV:scripts/mlops_actions/significance.py > /tmp/significance.py`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

METRICS = {
    "accuracy_score": "multinomial counts",
    "root_mean_squared_error": "Poisson sums",
    "roc_auc": "Poisson ranks",
}


def significance_module(path: str | None) -> ModuleType:
    """The suite's significance module, or another copy of it (for a before/after)."""
    if path is None:
        from mlops_actions import significance

        return significance
    import mlops_actions

    spec = importlib.util.spec_from_file_location("mlops_actions.significance", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    mlops_actions.significance = module  # type: ignore[attr-defined]
    return module


def data(rows: int, metric: str) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """The truth and both models' outputs: the candidate a little better."""
    rng = np.random.default_rng(0)
    if metric == "accuracy_score":
        truth = rng.integers(0, 2, rows)
        old = np.where(rng.random(rows) < 0.8, truth, 1 - truth)
        new = np.where(rng.random(rows) < 0.82, truth, 1 - truth)
        return truth, {"predictions": old}, {"predictions": new}
    if metric == "roc_auc":
        truth = rng.integers(0, 2, rows)
        models = []
        for signal in (1.0, 1.1):
            score = 1 / (1 + np.exp(-(rng.normal(size=rows) + signal * (2 * truth - 1))))
            models.append({"probabilities": np.column_stack([1 - score, score])})
        return truth, models[0], models[1]
    y = rng.normal(10, 3, rows)
    old_y, new_y = y + rng.normal(0, 2, rows), y + rng.normal(0, 1.9, rows)
    return y, {"predictions": old_y}, {"predictions": new_y}


def naive(truth: np.ndarray, old: dict, new: dict, metric: str, resamples: int) -> None:
    """The loop a user would write: draw row indices, score both models with scikit-learn."""
    from sklearn import metrics

    def score(model: dict, index: np.ndarray) -> float:
        if metric == "roc_auc":
            return float(metrics.roc_auc_score(truth[index], model["probabilities"][index, 1]))
        function = getattr(metrics, metric)
        return float(function(truth[index], model["predictions"][index]))

    rng = np.random.default_rng(0)
    differences = []
    for _ in range(resamples):
        index = rng.integers(0, len(truth), len(truth))
        differences.append(score(new, index) - score(old, index))
    np.quantile(differences, [0.025, 0.975])


def status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(work: Callable[[], Any]) -> dict[str, float]:
    """Wall and CPU seconds of one call, and how far it raised the peak resident set."""
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
    before = status_mib("VmRSS")
    cpu_before, start = os.times(), time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    cpu_after = os.times()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_mib": status_mib("VmHWM") - before}


def one(kind: str, metric: str, rows: int, resamples: int, module: str | None) -> None:
    """In a child process: one measurement, printed as JSON."""
    significance = significance_module(module)
    import sklearn.metrics  # noqa: F401 - imported before timing, not inside the first loop

    truth, old, new = data(rows, metric)
    if kind == "ours":
        work = lambda: significance.compare(truth, old, new, [metric], resamples=resamples)  # noqa: E731
    else:
        work = lambda: naive(truth, old, new, metric, resamples)  # noqa: E731
    print(json.dumps(measure(work)))


def child(kind: str, metric: str, rows: int, resamples: int, module: str | None) -> dict:
    argv = [sys.executable, __file__, "--one", kind, metric, str(rows), str(resamples)]
    if module:
        argv += ["--significance", module]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    parser.add_argument("--resamples", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), choices=list(METRICS))
    parser.add_argument("--naive-resamples", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1, help="ours: keep the fastest of N runs")
    parser.add_argument("--no-naive", action="store_true", help="ours only")
    parser.add_argument("--significance", help="another copy of significance.py to measure")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, metric, rows, resamples = args.one
        one(kind, metric, int(rows), int(resamples), args.significance)
        return

    results = []
    started = os.getloadavg()[0]
    for metric in args.metrics:
        for rows in args.rows:
            loop = None
            if not args.no_naive:
                sample = min(args.naive_resamples, max(args.resamples))
                loop = child("naive", metric, rows, sample, args.significance)
            for resamples in args.resamples:
                load = os.getloadavg()[0]  # other jobs on the machine take cores from ours
                ours = min(
                    (
                        child("ours", metric, rows, resamples, args.significance)
                        for _ in range(args.repeat)
                    ),
                    key=lambda run: run["seconds"],
                )
                result: dict[str, Any] = {
                    "metric": metric,
                    "scheme": METRICS[metric],
                    "rows": rows,
                    "resamples": resamples,
                    "seconds": round(ours["seconds"], 3),
                    "cpu_seconds": round(ours["cpu_seconds"], 2),
                    "peak_mib": round(ours["peak_mib"], 1),
                    "load_average": round(load, 2),
                }
                if loop is not None:
                    scaled = loop["seconds"] * resamples / sample
                    result |= {
                        "naive_seconds": round(scaled, 1),
                        "naive_timed_resamples": sample,
                        "naive_peak_mib": round(loop["peak_mib"], 1),
                        "speedup": round(scaled / ours["seconds"], 1),
                    }
                results.append(result)
                print(json.dumps(result), flush=True)
    print(f"\nload average: {started:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    print("\n| metric | rows | resamples | ours | CPU | peak | load | index-draw loop | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['metric']} | {r['rows']:,} | {r['resamples']:,} | {r['seconds']} s "
            f"| {r['cpu_seconds']} s | {r['peak_mib']} MiB | {r['load_average']} "
            f"| {r.get('naive_seconds', '-')} s | {r.get('speedup', '-')}x |"
        )
    if args.json:
        report = {
            "machine": {"cores": os.cpu_count(), "load_average_at_start": round(started, 2)},
            "results": results,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
