"""Overhead of training on Ray through the suite: vs a local run and a bare `ray job submit`.

Starts one real Ray head node (2 CPUs, loopback; tests/ray_services.py, which stops only its own
processes) and one real `mlflow server` (benchmarks/mlflow_server.py) for the whole run, and a
small project whose train.py prints a first line at once, logs one metric into an MLflow run and
exits. Then, alternating, one warm-up each (not counted) and `--repeat` timed runs each of:

- local: `mlops-actions train --command "python train.py"` (backend local);
- ours on Ray: the same with `train.backend: ray` (creates the run, submits the job through
  Ray's JobSubmissionClient, streams its log, polls its status, closes the run);
- bare: `ray job submit --address <job server> --working-dir . -- python train.py`, with
  MLFLOW_TRACKING_URI in the runtime env so the job creates and ends its own run (the same
  MLflow work as ours, where the suite creates the run and the job logs into it).

Each way is a process. Measured from its start: end-to-end (its exit) and submission-to-first-log
(the training's first line read from its stdout/stderr, a pipe read line by line). Also, from the
process's output and the Ray job's own times: when the job was submitted, when Ray started and
ended it, and when the process exited, to show where any overhead goes.

    .venv/bin/python benchmarks/ray_train.py [--repeat 5] [--json benchmarks/results/ray_train.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow_server import ROOT, machine, start_server, stop_server

sys.path.insert(0, str(ROOT))  # tests.ray_services: a head node stopped by its own processes

BIN = Path(sys.executable).parent
WAYS = ("local", "ours", "bare")
MARKER = "bench-train: first line"
TARGET_FACTOR, TARGET_SLACK = 1.2, 1.0  # ours_e2e <= 1.2 x bare_e2e + 1 s

TRAIN_PY = f'''\
import os
import sys

print("{MARKER}", flush=True)
import mlflow  # noqa: E402

# MLFLOW_RUN_ID (ours on Ray, local) resumes the suite's run; without it (bare) a new run.
with mlflow.start_run() as run:
    mlflow.log_metric("loss", 0.5)
print("bench-train: logged into", run.info.run_id, flush=True)
sys.exit(0)
'''

# (pattern in the process's output, milestone); the job id is group 1 where there is one.
MILESTONES = {
    "ours": [
        (re.compile(r"^Ray job (\S+) submitted to "), "submitted"),
        (re.compile(r"^Ray job \S+: (SUCCEEDED|FAILED|STOPPED)"), "status_seen"),
    ],
    "bare": [
        (re.compile(r"Job '(\S+)' submitted successfully"), "submitted"),
        (re.compile(r"Job '\S+' (succeeded|failed|stopped)"), "status_seen"),
    ],
    "local": [],
}


def make_project(workdir: Path, address: str) -> Path:
    project = workdir / "project"
    project.mkdir()
    (project / "train.py").write_text(TRAIN_PY)
    (project / "local.yaml").write_text(json.dumps({"version": 1}))
    ray_config = {"version": 1, "train": {"backend": "ray", "ray": {"address": address}}}
    (project / "ray.yaml").write_text(json.dumps(ray_config))
    return project


def environment(home: Path, tracking_uri: str) -> dict[str, str]:
    """A runner-like environment (as the tests' clean_env): nothing from the outside but PATH."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "HOME": str(home),
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "DVC_NO_ANALYTICS": "1",
        }
    )
    return env


def command(way: str, address: str, tracking_uri: str) -> list[str]:
    if way == "bare":
        runtime_env = {
            "env_vars": {
                "MLFLOW_TRACKING_URI": tracking_uri,
                "MLFLOW_EXPERIMENT_NAME": "bench-bare",
                "MLFLOW_DISABLE_TELEMETRY": "true",
            }
        }
        return [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            address,
            "--working-dir",
            ".",
            "--runtime-env-json",
            json.dumps(runtime_env),
            "--",
            "python",
            "train.py",
        ]
    config = "ray.yaml" if way == "ours" else "local.yaml"
    return [
        str(BIN / "mlops-actions"),
        "train",
        "--config",
        config,
        "--experiment",
        f"bench-{way}",
        "--command",
        "python train.py",
    ]


def timed(way: str, argv: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run one process; the time of its first training line, its milestones and its exit."""
    wall_start = time.time()
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0
    )
    assert process.stdout is not None
    first: float | None = None
    found: dict[str, float] = {}
    job_id = ""
    lines = []
    for raw in iter(process.stdout.readline, b""):
        now = time.perf_counter() - start
        line = raw.decode(errors="replace").rstrip("\n")
        lines.append(line)
        if first is None and MARKER in line:
            first = now
        for pattern, name in MILESTONES[way]:
            if name not in found and (match := pattern.search(line)):
                found[name] = now
                if name == "submitted":
                    job_id = match.group(1)
    code = process.wait()
    end = time.perf_counter() - start
    if code != 0 or first is None:
        raise SystemExit(f"{way} failed (exit {code}):\n" + "\n".join(lines[-60:]))
    return {
        "e2e_s": end,
        "first_log_s": first,
        "milestones_s": found,
        "job_id": job_id,
        "wall_start": wall_start,
    }


def job_times(client: Any, sample: dict[str, Any]) -> None:
    """Ray's own start and end of the job, relative to the process's start."""
    if not sample["job_id"]:
        return
    info = client.get_job_info(sample["job_id"])
    base = sample["wall_start"]
    if info.start_time:
        sample["milestones_s"]["ray_job_start"] = info.start_time / 1000 - base
    if info.end_time:
        sample["milestones_s"]["ray_job_end"] = info.end_time / 1000 - base
        sample["after_job_end_s"] = sample["e2e_s"] - (info.end_time / 1000 - base)


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def fmt(stat: dict[str, float]) -> str:
    return f"{stat['median']:.2f} s ({stat['min']:.2f}-{stat['max']:.2f})"


def summarize(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median (min-max) per way of each measure and milestone; the samples, rounded."""
    results: dict[str, Any] = {}
    for way in WAYS:
        data = samples[way]
        entry: dict[str, Any] = {
            "e2e_s": spread([s["e2e_s"] for s in data]),
            "first_log_s": spread([s["first_log_s"] for s in data]),
            "samples": [
                {
                    k: (round(v, 3) if isinstance(v, float) else v)
                    for k, v in s.items()
                    if k != "wall_start"
                }
                for s in data
            ],
        }
        for milestone in ("submitted", "ray_job_start", "ray_job_end", "status_seen"):
            values = [s["milestones_s"][milestone] for s in data if milestone in s["milestones_s"]]
            if values:
                entry.setdefault("milestones_s", {})[milestone] = spread(values)
        after = [s["after_job_end_s"] for s in data if "after_job_end_s" in s]
        if after:
            entry["after_job_end_s"] = spread(after)
        for sample in entry["samples"]:
            sample["milestones_s"] = {k: round(v, 3) for k, v in sample["milestones_s"].items()}
        results[way] = entry
    return results


def report(document: dict[str, Any]) -> None:
    """The Markdown table, the target, and where the time goes."""
    results, ratios, target = document["results"], document["ratios"], document["target"]
    info, repeat = document["machine"], document["repeat"]
    labels = {
        "local": '`mlops-actions train --command "python train.py"` (local)',
        "ours": "`mlops-actions train`, `train.backend: ray`",
        "bare": "`ray job submit --working-dir . -- python train.py`",
    }
    print(f"| way (median of {repeat}, min-max) | submission to first log | end to end |")
    print("|---|---:|---:|")
    for way in WAYS:
        first, e2e = results[way]["first_log_s"], results[way]["e2e_s"]
        print(f"| {labels[way]} | {fmt(first)} | {fmt(e2e)} |")
    print(
        f"| ours / bare | {ratios['ours_over_bare_first_log']} | "
        f"**{ratios['ours_over_bare_e2e']}** |"
    )
    print(
        f"| ours / local | {ratios['ours_over_local_first_log']} | "
        f"{ratios['ours_over_local_e2e']} |"
    )
    verdict = "met" if target["met"] else "NOT met"
    print(
        f"\nTarget {target['rule']}: {target['ours_e2e_s']:.2f} s against "
        f"{target['limit_s']:.2f} s: {verdict}"
    )
    for way in ("ours", "bare"):
        marks = results[way].get("milestones_s", {})
        parts = [f"{name} {stat['median']:.2f} s" for name, stat in marks.items()]
        after = results[way].get("after_job_end_s")
        if after:
            parts.append(f"exit {after['median']:.2f} s after Ray's job end")
        print(f"{way}: " + ", ".join(parts))
    print(f"load average: {info['load_average_at_start']} -> {info['load_average_at_end']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per way")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    import ray
    from tests.ray_services import start_ray_cluster

    info = machine(ray=ray.__version__)
    workdir = Path(tempfile.mkdtemp(prefix="ray-train-bench-"))
    server, tracking_uri = start_server(workdir)
    cluster = None
    samples: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    try:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri).create_experiment("bench-bare")  # the bare job's own runs
        cluster = start_ray_cluster(num_cpus=2)
        client = cluster.client()
        project = make_project(workdir, cluster.address)
        home = workdir / "home"
        home.mkdir()
        env = environment(home, tracking_uri)
        for index in range(args.repeat + 1):  # the first round is the warm-up
            for way in WAYS:
                sample = timed(way, command(way, cluster.address, tracking_uri), project, env)
                job_times(client, sample)
                print(
                    f"{'warm-up' if index == 0 else f'run {index}'} {way}: "
                    f"e2e {sample['e2e_s']:.2f} s, first log {sample['first_log_s']:.2f} s",
                    file=sys.stderr,
                )
                if index:
                    samples[way].append(sample)
        runs = finished_runs_with_metric(tracking_uri)
    finally:
        if cluster is not None:
            cluster.stop()
        stop_server(server)
        shutil.rmtree(workdir, ignore_errors=True)
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    results = summarize(samples)

    def median(way: str, measure: str) -> float:
        return float(results[way][measure]["median"])

    ratios = {
        "ours_over_bare_e2e": round(median("ours", "e2e_s") / median("bare", "e2e_s"), 2),
        "ours_over_bare_first_log": round(
            median("ours", "first_log_s") / median("bare", "first_log_s"), 2
        ),
        "ours_over_local_e2e": round(median("ours", "e2e_s") / median("local", "e2e_s"), 2),
        "ours_over_local_first_log": round(
            median("ours", "first_log_s") / median("local", "first_log_s"), 2
        ),
    }
    limit = TARGET_FACTOR * median("bare", "e2e_s") + TARGET_SLACK
    target = {
        "rule": "ours_e2e <= 1.2 x bare_e2e + 1 s",
        "limit_s": round(limit, 3),
        "ours_e2e_s": median("ours", "e2e_s"),
        "met": median("ours", "e2e_s") <= limit,
    }
    document = {
        "repeat": args.repeat,
        "machine": info,
        "results": results,
        "ratios": ratios,
        "target": target,
        "mlflow_runs_with_metric": runs,
    }

    report(document)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


def finished_runs_with_metric(tracking_uri: str) -> dict[str, int]:
    """Each way's FINISHED runs with the metric: the same MLflow work was done by all."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    counts = {}
    for way in WAYS:
        experiment = client.get_experiment_by_name(f"bench-{way}")
        runs = [] if experiment is None else client.search_runs([experiment.experiment_id])
        counts[way] = sum(
            1 for r in runs if r.info.status == "FINISHED" and "loss" in r.data.metrics
        )
    return counts


if __name__ == "__main__":
    sys.exit(main())
