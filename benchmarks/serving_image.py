"""The serving image: `mlops-actions build-push` vs `mlflow models build-docker`, in one run.

Both build an image for the same registered scikit-learn Iris model, FROM the same base image
(Debian bookworm's Python, made here with mmdebstrap: no Docker Hub), with the same Docker
engine. Measured per side:

- size of the image above the base (engine's `Size`, uncompressed);
- cold build (empty build cache) of version 1, as the user runs it: ours is
  `mlops-actions build-push --push false --smoke-test false`; MLflow's is
  `mlflow.models.build_docker(env_manager="local")` (what `mlflow models build-docker` calls);
- rebuild for version 2 (a retrained model, same requirements) and the bytes of the layers
  version 2 does not share with anything else (the engine's unique size): what a push uploads;
- time from `docker run` to the first 200 from `/ping` (median of several starts);
- throughput and p50/p99 latency with wrk at a fixed number of connections, posting the
  model's serving input example to `/invocations`; every answer must be a 200;
- memory of the container after the load (cgroup usage minus inactive file cache, as
  `docker stats` reports it).

Then, for ours alone: throughput of the Open Inference Protocol's infer route against
`/invocations` with the same rows, in one container, in alternating rounds (`--only-protocols`
measures just that); and what attaching the SBOM and the provenance adds to build-push with a push
to Debian's docker-registry on loopback (attestations off and on in turn, the build cached, after
a warm-up push); `--only-attestations` measures just that.

Each image runs with its defaults: MLflow's starts nginx and uvicorn with one worker per CPU;
ours forks one worker per CPU from a process that loaded the model. Ours is also measured with
a single worker (`MLSERVING_WORKERS=1`), for comparison.

    .venv/bin/python benchmarks/serving_image.py [--json results.json] [--duration 15]
    .venv/bin/python benchmarks/serving_image.py --only-attestations [--attestation-runs 5]
    .venv/bin/python benchmarks/serving_image.py --only-protocols [--protocol-rounds 5]

Needs a running Docker engine, a Docker client that can build (`--docker-cli`), mmdebstrap,
wrk, docker-registry, and network access to PyPI and Debian from build containers (MLflow's
Dockerfile runs apt-get for nginx). The base image is tagged `python:3.11-slim`, because MLflow
only takes its slim path for a base whose name starts with `python:`; the script refuses to
overwrite such a tag that it did not create.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "python:3.11-slim"
BASE_LABEL = "org.mlops-actions.benchmark"
OURS_REPOSITORY = "mlops-bench/ours"
MLFLOW_REPOSITORY = "mlops-bench/mlflow"
MODEL_NAME = "bench-iris"
PORT = 8080
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def log(message: str) -> None:
    print(f"-- {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# Base image and model


def ensure_base_image(client: Any, rebuild: bool) -> None:
    """Debian bookworm with Python, pip and `python` (MLflow's slim Dockerfile needs both),
    trusting the host's CA bundle, so package downloads work behind TLS inspection."""
    import docker.errors

    try:
        existing = client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        existing = None
    if existing is not None:
        if (existing.labels or {}).get(BASE_LABEL) != "base":
            raise SystemExit(
                f"{BASE_IMAGE} exists and was not made by this benchmark; remove or retag it"
            )
        if not rebuild:
            return
    ca_file = os.environ.get("SSL_CERT_FILE") or CA_BUNDLE
    log(f"building the base image {BASE_IMAGE} with mmdebstrap")
    with tempfile.TemporaryDirectory() as workdir:
        tarball = Path(workdir) / "base.tar"
        subprocess.run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates",
                f'--customize-hook=cp {ca_file} "$1{CA_BUNDLE}"',
                "--format=tar",
                "bookworm",
                str(tarball),
            ],
            check=True,
            capture_output=True,
        )
        repository, tag = BASE_IMAGE.split(":")
        client.api.import_image(
            src=str(tarball),
            repository=repository,
            tag=tag,
            changes=[
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                f"ENV SSL_CERT_FILE={CA_BUNDLE} REQUESTS_CA_BUNDLE={CA_BUNDLE} "
                f"PIP_CERT={CA_BUNDLE} PIP_BREAK_SYSTEM_PACKAGES=1",
                f"LABEL {BASE_LABEL}=base",
            ],
        )


def register_models(tracking_uri: str) -> dict[str, Any]:
    """Two versions of one Iris model: different coefficients, the same requirements."""
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("serving-image-benchmark")
    features, target = load_iris(return_X_y=True, as_frame=True)
    for c in (1.0, 0.5):
        with mlflow.start_run():
            model = LogisticRegression(C=c, max_iter=300).fit(features, target)
            mlflow.sklearn.log_model(
                model,
                name="model",
                input_example=features.head(5),
                registered_model_name=MODEL_NAME,
            )
    example = {"dataframe_split": json.loads(features.head(5).to_json(orient="split"))}
    example["dataframe_split"].pop("index", None)
    return example


# ---------------------------------------------------------------------------------------------
# Builds


def prune_build_cache(client: Any, docker_cli: str) -> None:
    """Cold means cold: no BuildKit cache, no legacy-builder intermediate images."""
    subprocess.run([docker_cli, "builder", "prune", "-af"], check=True, capture_output=True)
    client.images.prune()


def remove_images(client: Any, repository: str) -> None:
    for image in client.images.list(name=repository):
        for tag in image.tags:
            client.images.remove(tag, force=True)
    client.images.prune()


def build_ours(version: int, env: dict[str, str], workdir: Path, docker_cli: str) -> str:
    """`mlops-actions build-push` without push or smoke test; the image it tags `v<version>`."""
    build_push_ours(
        version,
        env,
        workdir,
        docker_cli,
        OURS_REPOSITORY,
        "--push",
        "false",
        "--smoke-test",
        "false",
    )
    return f"{OURS_REPOSITORY}:v{version}"


def build_push_ours(
    version: int, env: dict[str, str], workdir: Path, docker_cli: str, repository: str, *extra: str
) -> None:
    """`mlops-actions build-push` of a version of the model into `repository`."""
    command = [
        str(Path(sys.executable).parent / "mlops-actions"),
        "build-push",
        "--model-uri",
        f"models:/{MODEL_NAME}/{version}",
        "--image",
        repository,
        "--base-image",
        BASE_IMAGE,
        "--docker-cli",
        docker_cli,
        *extra,
    ]
    result = subprocess.run(
        command, env=env, cwd=workdir, capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise SystemExit(f"build-push failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


@contextmanager
def loopback_registry(workdir: Path) -> Iterator[str]:
    """Debian's docker-registry on a free loopback port: host:port."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise SystemExit("docker-registry is needed (apt-get install docker-registry)")
    port = free_port()
    config = workdir / "registry.json"
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "storage": {"filesystem": {"rootdirectory": str(workdir / "registry")}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        )
    )
    process = subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def attestation_cost(
    client: Any, env: dict[str, str], workdir: Path, docker_cli: str, runs: int
) -> dict[str, Any]:
    """What the SBOM, the provenance and their pushes add to build-push: the same cached
    build and push of version 2, attestations off and on in turn, after a warm-up push (so
    every layer is in the registry and only the work that differs is timed)."""
    with loopback_registry(workdir) as address:
        repository = f"{address}/bench/ours"
        log("attestations: warm-up build and push")
        pushed = (
            2,
            env,
            workdir,
            docker_cli,
            repository,
            "--smoke-test",
            "false",
            "--attestations",
        )
        build_push_ours(*pushed, "true")
        off, on = [], []
        for run in range(runs):
            log(f"attestations: run {run + 1} of {runs}")
            off.append(timed(build_push_ours, *pushed, "false")[0])
            on.append(timed(build_push_ours, *pushed, "true")[0])
        size = int(client.images.get(f"{repository}:v2").attrs["Size"])
        remove_images(client, repository)
    return {
        "build_push_s": statistics.median(off),
        "build_push_attested_s": statistics.median(on),
        "attestation_overhead_s": statistics.median(on) - statistics.median(off),
        "off_all_s": off,
        "on_all_s": on,
        "image_bytes": size,
    }


def build_mlflow(version: int, env: dict[str, str], workdir: Path, docker_cli: str) -> str:
    name = f"{MLFLOW_REPOSITORY}:{version}"
    script = (
        "import mlflow.models, sys; "
        "mlflow.models.build_docker(model_uri=sys.argv[1], name=sys.argv[2], "
        "env_manager='local', base_image=sys.argv[3])"
    )
    # MLflow calls `docker` from PATH: put the chosen client first.
    run_env = {**env, "PATH": f"{Path(docker_cli).parent}{os.pathsep}{env['PATH']}"}
    result = subprocess.run(
        [sys.executable, "-c", script, f"models:/{MODEL_NAME}/{version}", name, BASE_IMAGE],
        env=run_env,
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        tail = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        raise SystemExit(f"MLflow's build failed:\n{tail}")
    return name


def timed(action: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = action(*args)
    return time.perf_counter() - start, value


def unique_bytes(client: Any, image_id: str) -> int:
    """Bytes in layers no other image has: for version 2, what a push has to upload."""
    for entry in client.df()["Images"]:
        if entry["Id"] == image_id:
            return int(entry["Size"]) - int(entry["SharedSize"])
    raise SystemExit(f"image {image_id} not in the engine's disk usage")


# ---------------------------------------------------------------------------------------------
# Running


@contextmanager
def running(
    client: Any, image: str, environment: dict[str, str] | None = None
) -> Iterator[tuple[Any, int, float]]:
    """Start a container; yield it, its host port and the seconds until /ping answered 200."""
    port = free_port()
    start = time.perf_counter()
    container = client.containers.run(
        image,
        detach=True,
        ports={f"{PORT}/tcp": ("127.0.0.1", port)},
        environment=environment or {},
    )
    try:
        yield container, port, wait_for_ping(container, port, start)
    finally:
        container.remove(force=True)


def wait_for_ping(container: Any, port: int, start: float, limit: float = 120.0) -> float:
    while time.perf_counter() - start < limit:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.02)
    logs = container.logs(tail=30).decode(errors="replace")
    raise SystemExit(f"{container.image.tags} never answered /ping:\n{logs}")


def start_times(
    client: Any, image: str, starts: int, environment: dict[str, str] | None = None
) -> list[float]:
    with running(client, image, environment):  # warm the page cache once, not timed
        pass
    times = []
    for _ in range(starts):
        with running(client, image, environment) as (_, _, seconds):
            times.append(seconds)
    return times


def memory_mib(container: Any) -> float:
    stats = container.stats(stream=False)["memory_stats"]
    detail = stats.get("stats", {})
    inactive = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    return (int(stats["usage"]) - int(inactive)) / 2**20


WRK_LINE = re.compile(r"^\s*(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$")
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def load_test(
    client: Any,
    image: str,
    body: dict[str, Any],
    connections: int,
    duration: int,
    workdir: Path,
    environment: dict[str, str] | None = None,
) -> dict[str, float]:
    with running(client, image, environment) as (container, port, _):
        url = f"http://127.0.0.1:{port}/invocations"
        wrk(url, body, connections, 3, workdir)  # warm-up
        result = wrk(url, body, connections, duration, workdir)
        memory = memory_mib(container)
    return {**result, "memory_mib": memory}


def wrk(
    url: str, body: dict[str, Any], connections: int, duration: int, workdir: Path
) -> dict[str, float]:
    """POST `body` to `url` for `duration` seconds: requests per second, p50 and p99 (ms)."""
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    command = ["wrk", "-t", "2", "-c", str(connections), "--latency", "-s", str(script)]
    result = subprocess.run(
        [*command, "-d", str(duration), url], check=True, capture_output=True, text=True
    )
    text = result.stdout
    if "Non-2xx" in text or "Socket errors" in text:
        raise SystemExit(f"{url}: not every answer was a 200:\n{text}")
    latency = {}
    for line in text.splitlines():
        match = WRK_LINE.match(line)
        if match:
            latency[match.group(1)] = float(match.group(2)) * UNIT_MS[match.group(3)]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    return {"rps": rate, "p50_ms": latency["50"], "p99_ms": latency["99"]}


def v2_request(example: dict[str, Any]) -> dict[str, Any]:
    """The serving example as an Open Inference Protocol request: a FP64 tensor per column."""
    frame = example["dataframe_split"]
    columns = list(zip(*frame["data"], strict=True))
    return {
        "inputs": [
            {"name": name, "datatype": "FP64", "shape": [len(values)], "data": list(values)}
            for name, values in zip(frame["columns"], columns, strict=True)
        ]
    }


def protocol_throughput(
    client: Any,
    image: str,
    example: dict[str, Any],
    connections: int,
    duration: int,
    workdir: Path,
    rounds: int,
) -> dict[str, Any]:
    """/invocations and V2 infer with the same rows in one container, in alternating rounds
    (so drift on a busy machine hits both alike); medians of the rounds."""
    bodies = {"invocations": example, "v2": v2_request(example)}
    with running(client, image) as (_, port, _):
        urls = {
            "invocations": f"http://127.0.0.1:{port}/invocations",
            "v2": f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/infer",
        }
        for side, body in bodies.items():
            wrk(urls[side], body, connections, 3, workdir)  # warm-up
        runs: dict[str, list[dict[str, float]]] = {side: [] for side in bodies}
        for round_number in range(rounds):
            log(f"protocols: round {round_number + 1} of {rounds}")
            for side, body in bodies.items():
                runs[side].append(wrk(urls[side], body, connections, duration, workdir))
    result: dict[str, Any] = {"rounds": rounds, "duration_s": duration}
    for side, values in runs.items():
        result[side] = {
            key: statistics.median(run[key] for run in values)
            for key in ("rps", "p50_ms", "p99_ms")
        }
        result[side]["rps_all"] = [run["rps"] for run in values]
    result["v2_over_invocations"] = result["v2"]["rps"] / result["invocations"]["rps"]
    return result


def protocol_markdown(protocols: dict[str, Any], connections: int) -> str:
    lines = [
        f"| route, {connections} connections, 5 rows per request | req/s (median of "
        f"{protocols['rounds']}) | p50 (ms) | p99 (ms) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for side, label in (("invocations", "`/invocations` (dataframe_split)"),
                        ("v2", "`/v2/models/{name}/infer` (a tensor per column)")):  # fmt: skip
        values = protocols[side]
        lines.append(
            f"| {label} | {values['rps']:.0f} | {values['p50_ms']:.2f} | {values['p99_ms']:.2f} |"
        )
    lines.append(
        f"\nV2 / `/invocations` throughput: {protocols['v2_over_invocations']:.3f} "
        "(target: at least 0.90)."
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--duration", type=int, default=15, help="seconds of load per image")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--starts", type=int, default=5, help="timed starts per image")
    parser.add_argument(
        "--docker-cli",
        default="/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker",
        help="Docker client both builds use",
    )
    parser.add_argument("--rebuild-base", action="store_true", help="rebuild the base image")
    parser.add_argument("--keep", action="store_true", help="keep the built images")
    parser.add_argument(
        "--attestation-runs", type=int, default=5, help="timed build-push runs per setting"
    )
    parser.add_argument(
        "--protocol-rounds", type=int, default=5, help="alternating rounds per protocol"
    )
    parser.add_argument(
        "--only-protocols",
        action="store_true",
        help="measure only V2 infer against /invocations on our image (no MLflow build)",
    )
    parser.add_argument(
        "--only-attestations",
        action="store_true",
        help="measure only what attestations add to build-push (no MLflow build, no load)",
    )
    return parser.parse_args()


def write_json(path: Path | None, results: dict[str, Any]) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")


def main() -> int:
    args = parse_args()
    for tool in ("wrk", "mmdebstrap"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt-get install {tool})")

    import docker

    client = docker.from_env(timeout=600)
    ensure_base_image(client, args.rebuild_base)
    base_size = int(client.images.get(BASE_IMAGE).attrs["Size"])
    results: dict[str, Any] = {"base_mb": base_size / 1e6, "connections": args.connections}
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as temp:
        workdir = Path(temp)
        tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        example = register_models(tracking_uri)
        remove_images(client, OURS_REPOSITORY)
        remove_images(client, MLFLOW_REPOSITORY)
        if args.only_attestations:
            cost = attestation_cost(client, env, workdir, args.docker_cli, args.attestation_runs)
            results["attestations"] = cost
            print(attestation_markdown(cost))
            write_json(args.json, results)
            return 0

        if args.only_protocols:
            results["protocols"] = only_protocols(client, env, workdir, example, args)
            write_json(args.json, results)
            return 0

        sides: dict[str, dict[str, Any]] = {"mlflow": {}, "ours": {}}
        for side, build in (("mlflow", build_mlflow), ("ours", build_ours)):
            prune_build_cache(client, args.docker_cli)
            log(f"{side}: cold build of version 1")
            seconds, first = timed(build, 1, env, workdir, args.docker_cli)
            log(f"{side}: rebuild for version 2")
            rebuild_seconds, second = timed(build, 2, env, workdir, args.docker_cli)
            first_id, second_id = client.images.get(first).id, client.images.get(second).id
            sides[side].update(
                cold_build_s=seconds,
                rebuild_s=rebuild_seconds,
                size_above_base_mb=(int(client.images.get(first_id).attrs["Size"]) - base_size)
                / 1e6,
                new_layer_mb=unique_bytes(client, second_id) / 1e6,
                image=second_id,
            )
        for side, values in sides.items():
            log(f"{side}: {args.starts} starts")
            times = start_times(client, values["image"], args.starts)
            values.update(start_s=statistics.median(times), start_all_s=times)
            log(f"{side}: load test, {args.connections} connections, {args.duration} s")
            values.update(
                load_test(
                    client, values["image"], example, args.connections, args.duration, workdir
                )
            )
        log("ours with 1 worker: load test")
        sides["ours_1_worker"] = load_test(
            client,
            sides["ours"]["image"],
            example,
            args.connections,
            args.duration,
            workdir,
            {"MLSERVING_WORKERS": "1"},
        )
        log("ours: /invocations against V2 infer")
        results["protocols"] = protocol_throughput(
            client, sides["ours"]["image"], example, args.connections, args.duration, workdir,
            args.protocol_rounds,
        )  # fmt: skip
        results["attestations"] = attestation_cost(
            client, env, workdir, args.docker_cli, args.attestation_runs
        )
        if not args.keep:
            remove_images(client, OURS_REPOSITORY)
            remove_images(client, MLFLOW_REPOSITORY)
    results.update(sides)
    print(markdown(results))
    write_json(args.json, results)
    return 0


def only_protocols(
    client: Any, env: dict[str, str], workdir: Path, example: dict[str, Any], args: Any
) -> dict[str, Any]:
    log("ours: build of version 1")
    ours = build_ours(1, env, workdir, args.docker_cli)
    protocols = protocol_throughput(
        client, ours, example, args.connections, args.duration, workdir, args.protocol_rounds
    )
    print(protocol_markdown(protocols, args.connections))
    if not args.keep:
        remove_images(client, OURS_REPOSITORY)
    return protocols


def markdown(results: dict[str, Any]) -> str:
    mlflow, ours, single = results["mlflow"], results["ours"], results["ours_1_worker"]
    rows = [
        ("image size above the base (MB)", "size_above_base_mb", "{:.0f}", "<= 0.25"),
        ("cold build (s)", "cold_build_s", "{:.1f}", ""),
        ("rebuild for a new model version (s)", "rebuild_s", "{:.1f}", "<= 0.20"),
        ("new layers for a new model version (MB)", "new_layer_mb", "{:.2f}", ""),
        ("start to healthy /ping (s, median)", "start_s", "{:.2f}", "<= 0.33"),
        (f"throughput, {results['connections']} connections (req/s)", "rps", "{:.0f}", ">= 2"),
        ("latency p50 (ms)", "p50_ms", "{:.2f}", ""),
        ("latency p99 (ms)", "p99_ms", "{:.2f}", ""),
        ("memory after load (MiB)", "memory_mib", "{:.0f}", "<= 0.50"),
    ]
    lines = [
        "| measurement | `mlflow models build-docker` | mlops-actions | ours / MLflow | target "
        "| ours, 1 worker |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for label, key, form, target in rows:
        ratio = ours[key] / mlflow[key] if mlflow[key] else float("nan")
        extra = form.format(single[key]) if key in single else ""
        lines.append(
            f"| {label} | {form.format(mlflow[key])} | {form.format(ours[key])} "
            f"| {ratio:.2f} | {target} | {extra} |"
        )
    lines.append(f"\nBase image: {results['base_mb']:.0f} MB.")
    if "protocols" in results:
        lines += ["", protocol_markdown(results["protocols"], results["connections"])]
    if "attestations" in results:
        lines += ["", attestation_markdown(results["attestations"])]
    return "\n".join(lines)


def attestation_markdown(cost: dict[str, Any]) -> str:
    return "\n".join(
        [
            "| build-push of a new model version, push to a loopback registry (median) | s |",
            "| --- | ---: |",
            f"| attestations off | {cost['build_push_s']:.2f} |",
            f"| attestations on (SBOM + provenance + their pushes + version tags) "
            f"| {cost['build_push_attested_s']:.2f} |",
            f"| added (target <= 3 s) | {cost['attestation_overhead_s']:.2f} |",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
