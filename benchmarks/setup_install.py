#!/usr/bin/env python3
"""Benchmark: installing the suite with scripts/setup.sh versus a plain pip install.

Measures, side by side in one run:

* ours, cold: ``bash scripts/setup.sh install`` with an empty uv cache, an empty
  MLOPS_ACTIONS_HOME and no ``uv`` on PATH, so uv is bootstrapped through pip first;
* ours, warm: what a cache hit of actions/cache does: extract the venv tarball (zstd, as
  actions/cache writes it), ``setup.sh install`` (must report ``cache-hit: true``), then
  ``mlops-actions --version`` through the launcher;
* baseline: what a user would otherwise write: ``python -m venv`` plus
  ``pip install mlflow dvc[s3] PyGithub docker pyyaml jsonschema prometheus-client`` with an
  empty pip cache.

Every step runs in a sanitised environment: a throwaway HOME, no pip or uv configuration
files (a machine-wide ``find-links`` or local index would make installs look faster than on a
GitHub runner), caches in fresh temporary directories. Network traffic goes to PyPI only.

    python3 benchmarks/setup_install.py [--repeat N] [--skip-baseline] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SETUP_SH = ROOT / "scripts" / "setup.sh"
TIMEOUT_S = 900.0
WARM_TARGET_S = 3.0
SPEEDUP_TARGET = 4.0
# CPU used by other processes during the run, in cores, above which the timings are flagged.
FOREIGN_CPU_LIMIT = 0.2
BASELINE_PACKAGES = (
    "mlflow",
    "dvc[s3]",
    "PyGithub",
    "docker",
    "pyyaml",
    "jsonschema",
    "prometheus-client",
)
# Network plumbing (trust store, proxies) is passed through; nothing that changes where
# packages come from or how they are cached is.
PASS_THROUGH_ENV = (
    "LANG",
    "LC_ALL",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "PIP_CERT",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
)


class BenchmarkError(RuntimeError):
    """A step failed or did not behave as the benchmark requires."""


def run(
    cmd: Sequence[str | os.PathLike[str]],
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
) -> tuple[float, str]:
    """Run ``cmd`` to completion; return (wall seconds, stdout). Raise on failure."""
    args = [os.fspath(c) for c in cmd]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            args,
            env=dict(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(f"timed out after {TIMEOUT_S:.0f} s: {' '.join(args)}") from exc
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise BenchmarkError(f"exit {proc.returncode}: {' '.join(args)}\n{tail}")
    return elapsed, proc.stdout


def parse_outputs(stdout: str) -> dict[str, str]:
    """Parse the ``name: value`` lines setup.sh prints."""
    outputs: dict[str, str] = {}
    for line in stdout.splitlines():
        name, sep, value = line.partition(": ")
        if sep and name and " " not in name:
            outputs[name] = value.strip()
    return outputs


def du_bytes(path: Path) -> int:
    """Disk usage of ``path`` as ``du -sk`` reports it, in bytes."""
    out = subprocess.run(
        ["du", "-sk", os.fspath(path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    ).stdout
    return int(out.split()[0]) * 1024


def settle() -> None:
    """Flush dirty pages so a timed step does not pay for the writeback of an earlier one."""
    os.sync()


def mib(n_bytes: float) -> float:
    return n_bytes / (1024 * 1024)


def rmtree(path: Path) -> None:
    """Remove a tree, including read-only entries (uv marks some cache entries read-only)."""

    def make_writable_and_retry(func: Callable[..., Any], target: str, _exc: object) -> None:
        parent = os.path.dirname(target)
        for p in (parent, target):
            with contextlib.suppress(OSError):
                os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        func(target)

    if path.exists() or path.is_symlink():
        shutil.rmtree(path, onerror=make_writable_and_retry)


def retire(path: Path, base: Path) -> None:
    """Move ``path`` out of the way; it is deleted with everything else at the very end.

    Deleting tens of thousands of files right before a timed step can slow that step down
    several-fold: ext4 without a journal (as on some VMs) skips inodes freed in the last
    minute when it allocates new ones, at a cost per skipped inode. A rename costs nothing.
    """
    trash = base / "trash"
    trash.mkdir(exist_ok=True)
    path.rename(trash / f"{len(list(trash.iterdir()))}-{path.name}")


class Sandbox:
    """A throwaway HOME, PATH, caches and MLOPS_ACTIONS_HOME for one measured step."""

    def __init__(self, base: Path, name: str, python: Path) -> None:
        self.dir = base / name
        self.home = self.dir / "home"
        self.path_dir = self.dir / "path"
        self.uv_cache = self.dir / "uv-cache"
        self.pip_cache = self.dir / "pip-cache"
        self.mlops_home = self.dir / "mlops-actions"
        for d in (self.home, self.path_dir, self.uv_cache, self.pip_cache):
            d.mkdir(parents=True)
        # PATH hides uv (which lives next to this machine's python) and any installed
        # mlops-actions; python3 still resolves to the interpreter under test.
        (self.path_dir / "python3").symlink_to(python)
        self.env: dict[str, str] = {k: os.environ[k] for k in PASS_THROUGH_ENV if k in os.environ}
        self.env.update(
            {
                "HOME": os.fspath(self.home),
                "PATH": f"{self.path_dir}:/usr/bin:/bin",
                "TMPDIR": os.fspath(self.dir),
                "UV_CACHE_DIR": os.fspath(self.uv_cache),
                "UV_NO_CONFIG": "1",
                "PIP_CACHE_DIR": os.fspath(self.pip_cache),
                "PIP_CONFIG_FILE": os.devnull,
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "MLOPS_ACTIONS_HOME": os.fspath(self.mlops_home),
                "MLOPS_ACTIONS_PYTHON": os.fspath(python),
            }
        )

    def assert_clean_path(self) -> None:
        """Fail unless ``uv`` and ``mlops-actions`` are both absent from this PATH."""
        for tool in ("uv", "mlops-actions"):
            proc = subprocess.run(
                ["bash", "-c", f"command -v {tool}"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if proc.returncode == 0:
                raise BenchmarkError(f"{tool} is on the sandbox PATH at {proc.stdout.strip()}")


def zstd_commands() -> tuple[str, str, str]:
    """(compress program, decompress program, tarball suffix), as actions/cache does it."""
    zstd = shutil.which("zstd")
    if zstd:
        return f"{zstd} -T0 --long=30", f"{zstd} -d --long=30", ".tar.zst"
    gzip = shutil.which("gzip") or "gzip"
    return gzip, f"{gzip} -d", ".tar.gz"


def measure_ours(base: Path, python: Path) -> dict[str, Any]:
    """Cold install, then a simulated actions/cache restore and warm install."""
    box = Sandbox(base, "ours", python)
    box.assert_clean_path()
    setup = ["bash", os.fspath(SETUP_SH), "install"]

    settle()
    cold_s, out = run(setup, box.env, cwd=box.dir)
    cold = parse_outputs(out)
    if cold.get("cache-hit") != "false":
        raise BenchmarkError(f"cold run did not install (outputs: {cold})")
    _, plan_out = run(["bash", os.fspath(SETUP_SH), "plan"], box.env, cwd=box.dir)
    venv = Path(parse_outputs(plan_out)["venv-path"])
    if not venv.is_dir():
        raise BenchmarkError(f"setup.sh reported venv {venv}, which does not exist")
    venv_bytes = du_bytes(venv)
    boot_uv = box.mlops_home / "uv-bootstrap" / "bin" / "uv"
    uv_version = run([boot_uv, "--version"], box.env)[1].strip() if boot_uv.exists() else None

    # actions/cache: save the venv path as a compressed tarball, then a fresh runner.
    compress, decompress, suffix = zstd_commands()
    tarball = base / f"venv{suffix}"
    run(
        ["tar", "-I", compress, "-cf", tarball, "-C", venv.parent, venv.name],
        os.environ,
    )
    tarball_bytes = tarball.stat().st_size
    retire(box.mlops_home, base)
    retire(box.uv_cache, base)
    box.uv_cache.mkdir()
    venv.parent.mkdir(parents=True)

    settle()
    extract_s, _ = run(
        ["tar", "-I", decompress, "-xf", tarball, "-C", venv.parent],
        os.environ,
    )
    warm_install_s, out = run(setup, box.env, cwd=box.dir)
    warm = parse_outputs(out)
    if warm.get("cache-hit") != "true":
        raise BenchmarkError(f"warm run did not hit the cache (outputs: {warm})")
    launcher = box.mlops_home / "bin" / "mlops-actions"
    version_s, version_out = run([launcher, "--version"], box.env, cwd=box.dir)
    tarball.unlink()
    result = {
        "cold_s": cold_s,
        "venv_bytes": venv_bytes,
        "tarball_bytes": tarball_bytes,
        "tarball_format": suffix.lstrip("."),
        "warm_extract_s": extract_s,
        "warm_setup_s": warm_install_s,
        "warm_version_s": version_s,
        "warm_total_s": extract_s + warm_install_s + version_s,
        "suite_version": version_out.strip(),
        "uv_version": uv_version,
    }
    retire(box.dir, base)
    return result


def measure_uv_bootstrap(base: Path, python: Path) -> float:
    """The pip bootstrap of uv alone, as setup.sh runs it, with an empty pip cache."""
    box = Sandbox(base, "bootstrap", python)
    target = box.dir / "uv-bootstrap"
    settle()
    seconds, _ = run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--target",
            target,
            "--require-hashes",
            "-r",
            ROOT / "requirements-uv.lock",
        ],
        box.env,
        cwd=box.dir,
    )
    retire(box.dir, base)
    return seconds


def measure_baseline(base: Path, python: Path) -> dict[str, Any]:
    """``python -m venv`` + ``pip install <the suite's packages>`` with an empty pip cache."""
    box = Sandbox(base, "baseline", python)
    venv = box.dir / "venv"
    settle()
    venv_s, _ = run([python, "-m", "venv", venv], box.env, cwd=box.dir)
    vpython = venv / "bin" / "python"
    pip_s, _ = run(
        [vpython, "-m", "pip", "install", "--quiet", "--no-cache-dir", *BASELINE_PACKAGES],
        box.env,
        cwd=box.dir,
    )
    pip_version = run([vpython, "-m", "pip", "--version"], box.env)[1].split()[1]
    result = {
        "total_s": venv_s + pip_s,
        "venv_s": venv_s,
        "pip_install_s": pip_s,
        "venv_bytes": du_bytes(venv),
        "pip_version": pip_version,
    }
    retire(box.dir, base)
    return result


class CpuMonitor:
    """CPU time the rest of the machine used while the benchmark ran (Linux only)."""

    def __init__(self) -> None:
        self.start_wall = time.monotonic()
        self.start_busy = self._machine_busy_s()
        self.start_own = self._own_s()

    @staticmethod
    def _machine_busy_s() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except (OSError, IndexError):
            return None
        # user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
        ticks = [int(f) for f in fields[:8]]
        busy = sum(ticks) - ticks[3] - ticks[4]
        return busy / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def foreign_cores(self) -> float | None:
        """Average number of cores other processes kept busy since construction."""
        busy = self._machine_busy_s()
        if busy is None or self.start_busy is None:
            return None
        wall = time.monotonic() - self.start_wall
        foreign = (busy - self.start_busy) - (self._own_s() - self.start_own)
        return max(foreign, 0.0) / wall if wall > 0 else None


def filesystem_of(path: Path) -> str:
    """Type of the filesystem holding ``path`` ("ext4 (no journal)" matters, see retire())."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    best, fstype, source = "", "unknown", ""
    target = os.fspath(path.resolve())
    for line in mounts:
        pre, _, post = line.partition(" - ")
        mount_point = pre.split()[4]
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best) and post:
            best, (fstype, source) = mount_point, post.split()[:2]
    if fstype == "ext4":
        journal = any(Path("/proc/fs/jbd2").glob(f"{Path(source).name}-*"))
        return "ext4" if journal else "ext4 (no journal)"
    return fstype


def os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt_time(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def fmt_size(values: Sequence[int]) -> str:
    return f"{mib(median(values)):.0f}"


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ours = [r["ours"] for r in runs]
    summary: dict[str, Any] = {
        "ours_cold_s": median([o["cold_s"] for o in ours]),
        "ours_venv_mib": mib(median([o["venv_bytes"] for o in ours])),
        "ours_tarball_mib": mib(median([o["tarball_bytes"] for o in ours])),
        "ours_warm_s": median([o["warm_total_s"] for o in ours]),
        "uv_bootstrap_s": median([r["uv_bootstrap_s"] for r in runs]),
    }
    summary["warm_target_met"] = summary["ours_warm_s"] < WARM_TARGET_S
    base = [r["baseline"] for r in runs if r.get("baseline")]
    if base:
        summary["baseline_s"] = median([b["total_s"] for b in base])
        summary["baseline_venv_mib"] = mib(median([b["venv_bytes"] for b in base]))
        summary["speedup_cold"] = summary["baseline_s"] / summary["ours_cold_s"]
        summary["size_ratio"] = summary["baseline_venv_mib"] / summary["ours_venv_mib"]
        summary["speedup_target_met"] = summary["speedup_cold"] >= SPEEDUP_TARGET
    return summary


def markdown(runs: list[dict[str, Any]], summary: dict[str, Any], filesystem: str) -> str:
    ours = [r["ours"] for r in runs]
    base = [r["baseline"] for r in runs if r.get("baseline")]
    rows = ["| Measurement | Time (s) | Venv size (MiB, du) |", "| --- | ---: | ---: |"]
    if base:
        rows.append(
            "| Baseline: `python -m venv` + `pip install "
            + " ".join(BASELINE_PACKAGES)
            + "`, empty pip cache "
            + f"| {fmt_time([b['total_s'] for b in base])} "
            + f"| {fmt_size([b['venv_bytes'] for b in base])} |"
        )
    rows.append(
        "| Ours, cold: `setup.sh install`, empty caches, uv bootstrapped through pip "
        + f"| {fmt_time([o['cold_s'] for o in ours])} "
        + f"| {fmt_size([o['venv_bytes'] for o in ours])} |"
    )
    rows.append(
        "| &nbsp;&nbsp;of which: bootstrap of uv through pip (measured separately) "
        + f"| {fmt_time([r['uv_bootstrap_s'] for r in runs])} | |"
    )
    rows.append(
        "| Ours, warm: extract cached venv + `setup.sh install` + `mlops-actions --version` "
        + f"| {fmt_time([o['warm_total_s'] for o in ours])} "
        + f"| tarball {mib(median([o['tarball_bytes'] for o in ours])):.0f} |"
    )
    rows.append(
        "| &nbsp;&nbsp;extract / `setup.sh install` / `--version` "
        + f"| {median([o['warm_extract_s'] for o in ours]):.2f} / "
        + f"{median([o['warm_setup_s'] for o in ours]):.2f} / "
        + f"{median([o['warm_version_s'] for o in ours]):.2f} | |"
    )
    lines = [*rows, ""]
    if base:
        met = "met" if summary["speedup_target_met"] else "NOT met"
        lines.append(
            f"- Baseline / ours cold: **{summary['speedup_cold']:.1f}x** faster "
            f"(target >= {SPEEDUP_TARGET:.0f}x: {met}); "
            f"venv {summary['size_ratio']:.1f}x smaller."
        )
    met = "met" if summary["warm_target_met"] else "NOT met"
    lines.append(
        f"- Ours warm: **{summary['ours_warm_s']:.2f} s** (target < {WARM_TARGET_S:.0f} s: {met}); "
        "download of the cache tarball not included."
    )
    if len(runs) > 1:
        lines.append(f"- {len(runs)} repetitions: median (min-max).")
    foreign = [r["foreign_cpu_cores"] for r in runs if r["foreign_cpu_cores"] is not None]
    if foreign and max(foreign) > FOREIGN_CPU_LIMIT:
        lines.append(
            f"- WARNING: other processes used {max(foreign):.2f} CPU cores on average during "
            "the run: the machine was not idle, timings are inflated."
        )
    elif foreign:
        lines.append(f"- Other processes used {max(foreign):.2f} CPU cores on average (idle).")
    if filesystem == "ext4 (no journal)":
        lines.append(
            "- Temp directory on ext4 without a journal: creating files within a minute or so "
            "of mass deletions (an earlier run, other jobs) is several times slower; "
            "compare runs with care."
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=1, help="repetitions (default 1)")
    parser.add_argument("--skip-baseline", action="store_true", help="skip the pip baseline")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    python = Path(sys.executable).resolve()
    compress, _, _ = zstd_commands()
    base = Path(tempfile.mkdtemp(prefix="mlops-actions-bench-"))
    filesystem = filesystem_of(base)
    runs: list[dict[str, Any]] = []
    try:
        for i in range(args.repeat):
            print(f"[{i + 1}/{args.repeat}] ours (cold, then warm) ...", file=sys.stderr)
            cpu = CpuMonitor()
            record: dict[str, Any] = {"ours": measure_ours(base, python)}
            print(f"[{i + 1}/{args.repeat}] uv bootstrap alone ...", file=sys.stderr)
            record["uv_bootstrap_s"] = measure_uv_bootstrap(base, python)
            if not args.skip_baseline:
                print(f"[{i + 1}/{args.repeat}] baseline (pip) ...", file=sys.stderr)
                record["baseline"] = measure_baseline(base, python)
            record["foreign_cpu_cores"] = cpu.foreign_cores()
            runs.append(record)
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        rmtree(base)

    summary = summarise(runs)
    print(markdown(runs, summary, filesystem))
    if args.json:
        result = {
            "benchmark": "setup_install",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "os": os_name(),
                "kernel": platform.release(),
                "arch": platform.machine(),
                "python": platform.python_version(),
                "python_executable": os.fspath(python),
                "temp_filesystem": filesystem,
            },
            "settings": {
                "repeat": args.repeat,
                "skip_baseline": args.skip_baseline,
                "baseline_packages": list(BASELINE_PACKAGES),
                "tar_compressor": compress,
                "subprocess_timeout_s": TIMEOUT_S,
            },
            "runs": runs,
            "summary": summary,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
