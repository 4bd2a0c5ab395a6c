"""dvc-pull: fetch the data version the commit points to, and fingerprint it.

The fingerprint is a SHA-256 over the `.dvc` / `dvc.lock` entries of the pulled targets (path,
content hash, size, file count), sorted, so the same data version always gives the same value
on any machine, and any change to the data changes it. It tags MLflow runs and keys caches.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError, ServiceError


@dataclass(frozen=True)
class DataEntry:
    path: str  # relative to the DVC repository root, POSIX separators
    hash: str  # "<algorithm>:<value>", e.g. "md5:1a2b…" (".dir" for directories)
    size: int | None
    nfiles: int | None


@dataclass(frozen=True)
class PullResult:
    remote: str
    files_fetched: int
    bytes_fetched: int
    fingerprint: str
    entries: tuple[DataEntry, ...]
    cache_dir: str


@dataclass(frozen=True)
class PullPlan:
    remote: str
    remote_url: str
    fingerprint: str
    entries: tuple[DataEntry, ...]
    cache_dir: str


def fingerprint(entries: Sequence[DataEntry]) -> str:
    """A stable SHA-256 hex digest of the data entries, independent of their order."""
    canonical = json.dumps(
        sorted((asdict(e) for e in entries), key=lambda e: e["path"]),
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- remotes

AWS_KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def _describe_remote(name: str, url: str) -> str:
    return f"DVC remote '{name}' ({url})"


def s3_credentials_missing(
    remote: Mapping[str, Any], environ: Mapping[str, str], home: Path
) -> list[str]:
    """The variables still needed for an S3 remote, or [] when some credential source exists.

    Checks, in botocore's order, the sources that need no network: the remote's own config
    (usually .dvc/config.local), both key variables, a profile, web identity (OIDC), container
    credentials and the shared credentials file. The EC2 instance metadata service is only
    trusted when AWS_EC2_METADATA_DISABLED=false says the runner has an instance role.
    """
    if remote.get("allow_anonymous_login"):
        return []
    if remote.get("access_key_id") and remote.get("secret_access_key"):
        return []
    key, secret = (environ.get(v, "").strip() for v in AWS_KEY_VARIABLES)
    if key or secret:
        return [v for v, value in zip(AWS_KEY_VARIABLES, (key, secret), strict=True) if not value]
    other_sources = (
        remote.get("profile"),
        remote.get("credentialpath"),
        environ.get("AWS_PROFILE"),
        environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"),
        environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
    )
    if any(other_sources):
        return []
    shared = Path(environ.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials")
    if shared.is_file():
        return []
    if environ.get("AWS_EC2_METADATA_DISABLED", "").strip().lower() == "false":
        return []
    return list(AWS_KEY_VARIABLES)


def check_remote(
    remotes: Mapping[str, Mapping[str, Any]],
    default: str,
    requested: str,
    environ: Mapping[str, str],
    home: Path,
) -> str:
    """Validate the remote to pull from before any download; return its name."""
    name = requested or default
    if not name:
        raise ConfigError(
            "no DVC remote to pull from: the repository has no default remote",
            "set the `remote` input (data.remote), or run `dvc remote default <name>`",
        )
    if name not in remotes:
        defined = ", ".join(sorted(remotes)) or "none"
        raise ConfigError(
            f"DVC remote '{name}' is not defined in .dvc/config (defined: {defined})",
            "fix the `remote` input (data.remote), or add it with `dvc remote add`",
        )
    remote = remotes[name]
    url = str(remote.get("url", ""))
    scheme = urlsplit(url).scheme
    if scheme == "s3":
        missing = s3_credentials_missing(remote, environ, home)
        if missing:
            raise ConfigError(
                f"{_describe_remote(name, url)} has no AWS credentials: "
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set",
                "pass them from secrets through `env:`, or use OIDC "
                "(aws-actions/configure-aws-credentials); on an EC2 runner with an instance "
                "role set AWS_EC2_METADATA_DISABLED=false",
            )
    elif scheme in ("", "file") and not Path(url.removeprefix("file://")).exists():
        raise ConfigError(
            f"{_describe_remote(name, url)} points to a directory that does not exist",
            "fix the remote's url in .dvc/config",
        )
    return name


# ----------------------------------------------------------------------------- DVC repository


@contextmanager
def _open_repo(repo_dir: Path) -> Iterator[Any]:
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo
    from dvc.scm import SCMError

    try:
        repo = Repo(str(repo_dir))
    except NotDvcRepoError:
        raise ConfigError(
            f"{repo_dir} is not inside a DVC repository",
            "run the step in the repository (working directory), or set data.repo",
        ) from None
    except SCMError as error:
        raise ConfigError(
            f"DVC repository {repo_dir.resolve()} expects Git: {error}",
            "run it inside a Git checkout (git init), or `dvc config core.no_scm true`",
        ) from None
    try:
        yield repo
    finally:
        repo.close()


def _collect_entries(repo: Any, targets: Sequence[str]) -> tuple[DataEntry, ...]:
    from dvc.exceptions import DvcException

    root = Path(repo.root_dir)
    stages: list[Any] = []
    if targets:
        for target in targets:
            try:
                stages.extend(stage for stage, _ in repo.stage.collect_granular(target))
            except DvcException as exc:
                raise ConfigError(
                    f"DVC target '{target}' is not tracked by DVC: {_first_line(exc)}",
                    "fix the `targets` input (data.targets): a .dvc file, a tracked path "
                    "or a dvc.yaml stage",
                ) from None
    else:
        stages = list(repo.index.stages)
    entries: dict[str, DataEntry] = {}
    for stage in stages:
        for out in stage.outs:
            if not out.use_cache or not out.hash_info:
                continue
            path = Path(out.fs_path).relative_to(root).as_posix()
            entries[path] = DataEntry(
                path=path,
                hash=f"{out.hash_info.name}:{out.hash_info.value}",
                size=out.meta.size,
                nfiles=out.meta.nfiles,
            )
    return tuple(sorted(entries.values(), key=lambda e: e.path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _cache_inventory(cache_dir: Path) -> dict[str, int]:
    """Every object in the local cache with its size (to measure what a pull downloaded)."""
    inventory: dict[str, int] = {}
    if not cache_dir.is_dir():
        return inventory
    for folder, _, files in os.walk(cache_dir):
        for name in files:
            path = os.path.join(folder, name)
            try:
                inventory[path] = os.stat(path).st_size
            except OSError:
                continue
    return inventory


def _remote_settings(repo: Any) -> tuple[dict[str, dict[str, Any]], str]:
    remotes = {name: dict(conf) for name, conf in repo.config.get("remote", {}).items()}
    return remotes, str(repo.config.get("core", {}).get("remote", "") or "")


def plan(
    repo_dir: Path, targets: Sequence[str], remote: str, environ: Mapping[str, str], home: Path
) -> PullPlan:
    """Everything a pull needs to know before downloading: remote, fingerprint, cache path."""
    with _open_repo(repo_dir) as repo:
        return _plan(repo, targets, remote, environ, home)


def _plan(
    repo: Any, targets: Sequence[str], remote: str, environ: Mapping[str, str], home: Path
) -> PullPlan:
    entries = _collect_entries(repo, targets)
    remotes, default = _remote_settings(repo)
    name = check_remote(remotes, default, remote, environ, home)
    url = str(remotes[name].get("url", ""))
    return PullPlan(name, url, fingerprint(entries), entries, str(repo.cache.local.path))


def in_repository(path: Path) -> bool:
    """True when `path` or one of its parents holds a .dvc directory."""
    resolved = path.resolve()
    return any((folder / ".dvc").is_dir() for folder in (resolved, *resolved.parents))


def workspace_fingerprint(repo_dir: Path, targets: Sequence[str] = ()) -> str:
    """The fingerprint of what the checkout tracks, or '' outside a DVC repository."""
    try:
        with _open_repo(repo_dir) as repo:
            return fingerprint(_collect_entries(repo, targets))
    except ConfigError:
        return ""


def pull(
    repo_dir: Path,
    targets: Sequence[str],
    remote: str,
    jobs: int | None,
    environ: Mapping[str, str],
    home: Path,
) -> PullResult:
    """Check the remote and its credentials, then pull the targets into the workspace."""
    from dvc.exceptions import CheckoutError, DownloadError, DvcException

    with _open_repo(repo_dir) as repo:
        planned = _plan(repo, targets, remote, environ, home)
        where = _describe_remote(planned.remote, planned.remote_url)
        cache_dir = Path(planned.cache_dir)
        before = _cache_inventory(cache_dir)
        try:
            result = repo.pull(targets=list(targets) or None, remote=planned.remote, jobs=jobs)
        except DownloadError as exc:
            raise ServiceError(
                f"{exc.amount} file(s) failed to download from {where}",
                "check the remote's url, endpoint and credentials; the log above has details",
            ) from None
        except CheckoutError as exc:
            missing = ", ".join(exc.target_infos[:5]) if exc.target_infos else "some files"
            raise ServiceError(
                f"data is missing from {where}: {missing}",
                "run `dvc push` where the data was added, then re-run",
            ) from None
        except DvcException as exc:
            raise ServiceError(f"pulling from {where} failed: {_first_line(exc)}") from None
        except Exception as exc:  # botocore and fsspec errors that DVC does not wrap
            if type(exc).__name__ in {"NoCredentialsError", "PartialCredentialsError"}:
                raise ConfigError(
                    f"{where} has no usable AWS credentials: {_first_line(exc)}",
                    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use OIDC",
                ) from None
            raise
        after = _cache_inventory(cache_dir)
    fetched = int(result.get("stats", {}).get("fetched", 0))
    new_bytes = sum(size for path, size in after.items() if path not in before)
    return PullResult(
        planned.remote, fetched, new_bytes, planned.fingerprint, planned.entries, planned.cache_dir
    )
