"""The serving image's build context, without a Docker engine: requirements, layer order,
labels, the model facts read from a real MLflow model, and the choice of Docker CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_actions import image
from mlops_actions.errors import ConfigError
from tests.conftest import save_iris_model


def test_mlflow_becomes_skinny_and_everything_else_stays() -> None:
    assert image.image_requirements(
        ["mlflow==3.17.2", "scikit-learn==1.9.1", "# comment", "", "-r other.txt", "pandas"]
    ) == ["mlflow-skinny==3.17.2", "scikit-learn==1.9.1", "pandas"]
    assert image.image_requirements(["mlflow[extras]>=3.4 ; python_version>'3.9'"]) == [
        "mlflow-skinny>=3.4 ; python_version>'3.9'"
    ]
    assert image.image_requirements(["mlflow-skinny==3.4.0"]) == ["mlflow-skinny==3.4.0"]
    assert image.image_requirements(["mlflowx==1"]) == ["mlflowx==1", "mlflow-skinny"]
    assert image.image_requirements([]) == ["mlflow-skinny"]


def test_layers_go_from_base_to_model() -> None:
    text = image.render_dockerfile()
    order = [
        text.index("FROM ${BASE_IMAGE}"),
        text.index("COPY requirements.txt"),
        text.index("pip install"),
        text.index("COPY mlserving/"),
        text.index("COPY model/"),
    ]
    assert order == sorted(order)
    # Per-version values enter only after the last layer, so they never invalidate one.
    assert text.index("ARG MODEL_NAME") > text.index("COPY model/")
    assert "--mount=type=secret,id=extra_ca" in text  # the CA never lands in a layer
    assert "USER 10001" in text
    assert "# syntax=" not in text  # a syntax line would pull a frontend image from a registry
    # pip's report becomes installed.json (for the SBOM) in the same layer, and is deleted there.
    dependencies = text[text.index("COPY requirements.txt") : text.index("COPY mlserving/")]
    assert "installed.py" in dependencies.splitlines()[0]
    report = dependencies.index("--report /tmp/pip-report.json")
    kept = dependencies.index(f"installed.py /tmp/pip-report.json {image.INSTALLED_IN_IMAGE}")
    assert report < kept < dependencies.index("rm /tmp/pip-report.json")


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_iris_model(tmp_path_factory.mktemp("iris") / "model", example_rows=2)


def test_context_from_a_real_model(iris_model: Path, tmp_path: Path) -> None:
    import mlflow

    facts = image.read_model(iris_model, "models:/iris/3", "iris", "3")
    assert facts.flavor == "sklearn"
    assert facts.mlflow_version == mlflow.__version__
    assert facts.python_version.startswith("3.")
    assert facts.example is not None
    assert b"dataframe_split" in facts.example
    context = image.write_context(iris_model, facts, tmp_path / "context")
    requirements = (context / "requirements.txt").read_text().splitlines()
    assert f"mlflow-skinny=={mlflow.__version__}" in requirements
    assert "prometheus-client>=0.20" in requirements
    assert "pandas" in requirements, "the scoring server's, whatever the model names"
    assert not any(r.startswith("mlflow==") for r in requirements)
    assert (context / "mlserving" / "mlops_actions" / "serving" / "app.py").is_file()
    assert not list((context / "mlserving").rglob("__pycache__"))
    assert (context / "model" / "MLmodel").is_file()
    # Start-up imports, the flavor's included, get their bytecode built into the image.
    warmup = (context / "warmup.py").read_text()
    assert "'mlflow.sklearn'" in warmup
    assert "'mlflow.pyfunc.scoring_server'" in warmup
    assert "'skops.io'" in warmup  # what loading a skops-saved scikit-learn model imports
    assert "'sklearn.utils:all_estimators'" in warmup
    compile(warmup, "warmup.py", "exec")
    compile((context / "installed.py").read_text(), "installed.py", "exec")
    # Only the serving package goes in, not the rest of the suite.
    assert sorted(p.name for p in (context / "mlserving" / "mlops_actions").iterdir()) == [
        "__init__.py",
        "serving",
    ]

    labels = image.labels_for(facts, "abc123", "https://github.com/acme/iris", "2026-11-26T00:00Z")
    assert labels["org.opencontainers.image.revision"] == "abc123"
    assert labels["io.mlops-actions.model.version"] == "3"
    assert labels["io.mlops-actions.model.flavor"] == "sklearn"


def test_not_a_model_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="models:/x/1 is not an MLflow model"):
        image.read_model(tmp_path, "models:/x/1", "x", "1")


def fake_docker(directory: Path, version: str, buildx: bool) -> None:
    """A stand-in `docker` that answers only the two questions find_builder asks."""
    script = directory / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = buildx ]; then exit {0 if buildx else 1}; fi\n'
        f'if [ "$1" = version ]; then echo {version}; exit 0; fi\n'
        "exit 2\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize(
    ("version", "buildx", "expected"),
    [
        ("28.2.2", True, ("buildx", "build", "--load")),
        ("20.10.24", False, ("build",)),
    ],
)
def test_builder_choice(
    tmp_path: Path, version: str, buildx: bool, expected: tuple[str, ...]
) -> None:
    fake_docker(tmp_path, version, buildx)
    cli = image.find_builder(["docker"], {**os.environ, "PATH": str(tmp_path)})
    assert cli.argv[1:] == expected
    assert (cli.environment.get("DOCKER_BUILDKIT") == "1") == (not buildx)


def test_no_builder_names_the_fix(tmp_path: Path) -> None:
    fake_docker(tmp_path, "28.2.2", buildx=False)  # a new client without the buildx plugin
    with pytest.raises(ConfigError, match="no Docker CLI here can build with BuildKit") as error:
        image.find_builder(["docker"], {"PATH": str(tmp_path)})
    assert "buildx" in error.value.hint


@pytest.mark.parametrize(
    ("repository", "host"),
    [
        ("ghcr.io/acme/iris", "ghcr.io"),
        ("127.0.0.1:5000/acme/iris", "127.0.0.1:5000"),
        ("localhost/iris", "localhost"),
        ("acme/iris", "docker.io"),
        ("iris", "docker.io"),
    ],
)
def test_registry_of(repository: str, host: str) -> None:
    assert image.registry_of(repository) == host


def test_unrequired_names_seed_distributions_nothing_needs(tmp_path: Path) -> None:
    """setuptools comes with every venv; the image drops it unless a requirement needs it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    script = tmp_path / "unrequired.py"
    script.write_text(image.unrequired_script())
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('setuptools'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if installed.returncode:
        pytest.skip("this Python's venv comes without setuptools")
    found = subprocess.run([str(python), str(script)], capture_output=True, text=True, check=True)
    assert found.stdout.split() == ["setuptools"]
    # A distribution that requires setuptools keeps it.
    site = next((venv / "lib").glob("python3*/site-packages"))
    needy = site / "needs_setuptools-1.0.dist-info"
    needy.mkdir()
    (needy / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: needs-setuptools\nVersion: 1.0\n"
        "Requires-Dist: setuptools>=40; python_version >= '3'\n"
    )
    found = subprocess.run([str(python), str(script)], capture_output=True, text=True, check=True)
    assert found.stdout.split() == []


def test_installed_keeps_what_the_sbom_needs_from_pips_report(tmp_path: Path) -> None:
    """installed.py (run in the image build) against a report shaped like pip's."""
    sha = "2ddfb553fdf02fb784c234c7ba6ccc288296ceabec964ad2eae3777778130bc5"
    report = {
        "version": "1",
        "pip_version": "23.0.1",
        "install": [
            {  # pip 23: both the hashes map and the legacy hash
                "download_info": {
                    "url": "https://files.pythonhosted.org/packages/49/df/packaging-24.0.whl",
                    "archive_info": {"hash": f"sha256={sha}", "hashes": {"sha256": sha}},
                },
                "metadata": {"name": "packaging", "version": "24.0", "description": "x" * 9000},
            },
            {  # an older pip: only the legacy hash; a private index with credentials
                "download_info": {
                    "url": "https://user:t0ken@pypi.example/simple/Zed-1.0.tar.gz",
                    "archive_info": {"hash": "sha256=" + "e" * 64},
                },
                "metadata": {"name": "Zed", "version": "1.0"},
            },
            {  # from version control: no archive, no hash
                "download_info": {
                    "url": "https://github.com/acme/thing",
                    "vcs_info": {"vcs": "git", "commit_id": "abc"},
                },
                "metadata": {"name": "thing", "version": "0.1"},
            },
            {  # an md5 only is no sha256
                "download_info": {
                    "url": "https://x.example/a-1.whl",
                    "archive_info": {"hash": "md5=" + "f" * 32},
                },
                "metadata": {"name": "a", "version": "1"},
            },
        ],
    }
    (tmp_path / "report.json").write_text(json.dumps(report))
    script = tmp_path / "installed.py"
    script.write_text(image.installed_script())
    output = tmp_path / "installed.json"
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "report.json"), str(output)], check=True
    )
    assert json.loads(output.read_text()) == {
        "version": 1,
        "distributions": [
            {"name": "a", "version": "1", "url": "https://x.example/a-1.whl", "sha256": ""},
            {
                "name": "packaging",
                "version": "24.0",
                "url": "https://files.pythonhosted.org/packages/49/df/packaging-24.0.whl",
                "sha256": sha,
            },
            {
                "name": "thing",
                "version": "0.1",
                "url": "https://github.com/acme/thing",
                "sha256": "",
            },
            {
                "name": "Zed",
                "version": "1.0",
                "url": "https://pypi.example/simple/Zed-1.0.tar.gz",
                "sha256": "e" * 64,
            },
        ],
    }
    assert "t0ken" not in output.read_text()
    assert "\n" not in output.read_text()  # compact: it is kept in every image
