"""dvc-pull against real DVC remotes: the bundled local remote and S3 on a loopback server."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from mlops_actions.data import DataEntry, fingerprint
from tests.conftest import BIN, S3Server, assert_one_line_error, clean_env, run_cli

IRIS_MD5 = "7a4bc75cb351218cf9004aff4382ee52"


def test_fingerprint_is_order_independent_and_content_sensitive() -> None:
    a = DataEntry("data/a.csv", "md5:1", 10, None)
    b = DataEntry("data/b", "md5:2.dir", 20, 3)
    assert fingerprint([a, b]) == fingerprint([b, a])
    assert fingerprint([a, b]) != fingerprint([a, DataEntry("data/b", "md5:3.dir", 20, 3)])
    assert len(fingerprint([])) == 64


def test_pull_from_the_local_remote(example: Path, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    result = run_cli(["dvc-pull"], example, env)
    assert result.returncode == 0, result.output
    outputs = result.outputs()
    csv = example / "data" / "iris.csv"
    assert hashlib.md5(csv.read_bytes()).hexdigest() == IRIS_MD5
    assert outputs["files-fetched"] == "1"
    assert outputs["bytes-fetched"] == str(csv.stat().st_size)
    assert outputs["remote"] == "bundled"

    # Same data version elsewhere: same fingerprint; a warm cache fetches nothing.
    again = run_cli(["dvc-pull", "--targets", "data/iris.csv.dvc"], example, env)
    assert again.returncode == 0, again.output
    assert again.outputs()["data-fingerprint"] == outputs["data-fingerprint"]
    assert again.outputs()["files-fetched"] == "0"
    assert again.outputs()["bytes-fetched"] == "0"


def test_fingerprint_changes_with_the_data(example: Path, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    before = run_cli(["dvc-pull", "--plan"], example, env).outputs()["data-fingerprint"]
    (example / "data" / "iris.csv").write_text("a,b\n1,2\n")
    subprocess.run(
        [str(BIN / "dvc"), "add", "-q", "data/iris.csv"], cwd=example, check=True, env=env
    )
    after = run_cli(["dvc-pull", "--plan"], example, env).outputs()["data-fingerprint"]
    assert before != after
    assert len(after) == 64


def test_nonexistent_target_names_the_target(example: Path, tmp_path: Path) -> None:
    result = run_cli(["dvc-pull", "--targets", "data/missing.csv"], example, clean_env(tmp_path))
    assert result.returncode == 2
    assert_one_line_error(result, "data/missing.csv", "targets")
    assert not (example / "data" / "iris.csv").exists()


def test_undefined_remote_names_the_remote(example: Path, tmp_path: Path) -> None:
    result = run_cli(["dvc-pull", "--remote", "nowhere"], example, clean_env(tmp_path))
    assert result.returncode == 2
    assert_one_line_error(result, "'nowhere'", "bundled")


def test_remote_directory_that_does_not_exist(example: Path, tmp_path: Path) -> None:
    shutil.rmtree(example / "dvc-storage")
    result = run_cli(["dvc-pull"], example, clean_env(tmp_path))
    assert result.returncode == 2
    assert_one_line_error(result, "'bundled'", "does not exist")


def test_not_a_dvc_repository(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    result = run_cli(["dvc-pull"], tmp_path / "plain", clean_env(tmp_path))
    assert result.returncode == 2
    assert_one_line_error(result, "not inside a DVC repository")


@pytest.fixture
def s3_example(example: Path, tmp_path: Path, s3_server: S3Server) -> Path:
    """The example with an S3 remote on the loopback server, data pushed there."""
    import boto3

    bucket = f"data-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
    ).create_bucket(Bucket=bucket)
    env = clean_env(tmp_path, **s3_server.credentials())
    dvc = str(BIN / "dvc")
    subprocess.run([dvc, "pull", "-q"], cwd=example, env=env, check=True)
    subprocess.run(
        [dvc, "remote", "add", "s3store", f"s3://{bucket}/iris"], cwd=example, env=env, check=True
    )
    subprocess.run(
        [dvc, "remote", "modify", "s3store", "endpointurl", s3_server.endpoint],
        cwd=example,
        env=env,
        check=True,
    )
    subprocess.run([dvc, "push", "-q", "-r", "s3store"], cwd=example, env=env, check=True)
    # Start from nothing local: no workspace copy, no cache.
    (example / "data" / "iris.csv").unlink()
    shutil.rmtree(example / ".dvc" / "cache")
    return example


def test_pull_from_s3_with_a_custom_endpoint(
    s3_example: Path, tmp_path: Path, s3_server: S3Server
) -> None:
    env = clean_env(tmp_path, **s3_server.credentials(), GITHUB_ACTIONS="true")
    result = run_cli(["dvc-pull", "--remote", "s3store"], s3_example, env)
    assert result.returncode == 0, result.output
    assert result.outputs()["files-fetched"] == "1"
    assert result.outputs()["remote"] == "s3store"
    data = (s3_example / "data" / "iris.csv").read_bytes()
    assert hashlib.md5(data).hexdigest() == IRIS_MD5
    assert s3_server.secret_key not in result.output.replace(
        f"::add-mask::{s3_server.secret_key}", ""
    )


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ({}, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set"),
        ({"AWS_ACCESS_KEY_ID": "AKIAONLYKEY"}, "AWS_SECRET_ACCESS_KEY is not set"),
    ],
)
def test_missing_s3_credentials_name_the_remote_and_variable(
    s3_example: Path, tmp_path: Path, present: dict[str, str], missing: str
) -> None:
    result = run_cli(
        ["dvc-pull", "--remote", "s3store"], s3_example, clean_env(tmp_path / "home", **present)
    )
    assert result.returncode == 2
    assert_one_line_error(result, "'s3store'", missing)
    assert not (s3_example / "data" / "iris.csv").exists()
