"""What the gate's paired bootstrap costs: time and peak memory by rows and resamples.

Ours (`mlops_actions.significance.compare`) against what a user would write: a loop of index
draws (`rng.integers(0, n, n)`), scoring both models with scikit-learn on each resample. The
loop is timed on a few resamples and scaled linearly to the full count (it is linear in
resamples: every resample does the same work); ours is timed in full.

Two families, because the suite resamples them differently:
- accuracy (classifier): a multinomial draw of the paired confusion table, so n hardly matters;
- RMSE (regressor): Poisson(1) row weights drawn in chunks of bounded size.

Peak memory is tracemalloc's (numpy reports its buffers to it).

    .venv/bin/python benchmarks/bootstrap.py [--rows 1000 10000 100000 1000000]
        [--resamples 2000 10000] [--json benchmarks/results/bootstrap.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from mlops_actions import significance  # noqa: E402


def measure(work: Callable[[], Any]) -> tuple[float, float]:
    """Seconds and peak MiB of one call."""
    tracemalloc.start()
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20


def data(rows: int, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    if kind == "accuracy_score":
        truth = rng.integers(0, 2, rows)
        old = np.where(rng.random(rows) < 0.8, truth, 1 - truth)
        new = np.where(rng.random(rows) < 0.82, truth, 1 - truth)
        return truth, old, new
    y = rng.normal(10, 3, rows)
    return y, y + rng.normal(0, 2, rows), y + rng.normal(0, 1.9, rows)


def naive(truth: np.ndarray, old: np.ndarray, new: np.ndarray, kind: str, resamples: int) -> None:
    from sklearn import metrics

    score = metrics.accuracy_score if kind == "accuracy_score" else metrics.root_mean_squared_error
    rng = np.random.default_rng(0)
    differences = []
    for _ in range(resamples):
        index = rng.integers(0, len(truth), len(truth))
        differences.append(score(truth[index], new[index]) - score(truth[index], old[index]))
    np.quantile(differences, [0.025, 0.975])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    parser.add_argument("--resamples", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--naive-resamples", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import sklearn.metrics  # noqa: F401 - imported before timing, not inside the first loop

    results = []
    for kind in ("accuracy_score", "root_mean_squared_error"):
        for rows in args.rows:
            truth, old, new = data(rows, kind)
            sample = min(args.naive_resamples, max(args.resamples))
            naive_seconds, naive_mib = measure(partial(naive, truth, old, new, kind, sample))
            for resamples in args.resamples:
                seconds, mib = measure(
                    partial(
                        significance.compare,
                        truth,
                        {"predictions": old},
                        {"predictions": new},
                        [kind],
                        resamples=resamples,
                    )
                )
                scaled = naive_seconds * resamples / sample
                results.append(
                    {
                        "metric": kind,
                        "rows": rows,
                        "resamples": resamples,
                        "seconds": round(seconds, 3),
                        "peak_mib": round(mib, 1),
                        "naive_seconds": round(scaled, 1),
                        "naive_peak_mib": round(naive_mib, 1),
                        "speedup": round(scaled / seconds, 1) if seconds else None,
                    }
                )
                print(json.dumps(results[-1]), flush=True)
    print("\n| metric | rows | resamples | ours | peak | index-draw loop | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['metric']} | {r['rows']:,} | {r['resamples']:,} | {r['seconds']} s "
            f"| {r['peak_mib']} MiB | {r['naive_seconds']} s | {r['speedup']}x |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
