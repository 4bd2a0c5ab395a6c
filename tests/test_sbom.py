"""The SBOM of a serving image: the model digest against the shell pipeline it documents, the
CycloneDX document built from made-up inventories (checked against the schema), its parser,
and one real image whose inventory is compared with pip and dpkg run inside it."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import ssl
import subprocess
import tarfile
import time
import urllib.request
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from packageurl import PackageURL

from mlops_actions import sbom
from mlops_actions.errors import ConfigError, MlopsError
from tests.conftest import unique_name

DIGEST = "sha256:" + "c" * 64
MODEL_DIGEST = "sha256:" + "b" * 64
WHEEL_SHA = "a" * 64
WHEN = datetime(2026, 11, 26, tzinfo=timezone.utc)
SERIAL = UUID("12345678-1234-5678-1234-567812345678")


# ----------------------------------------------------------------------------- model digest


def shell_digest(directory: Path) -> str:
    """The pipeline model_digest's docstring tells users to run."""
    done = subprocess.run(
        [
            "bash",
            "-c",
            'cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum',
            "_",
            str(directory),
        ],
        capture_output=True,
        check=True,
    )
    return "sha256:" + done.stdout.split()[0].decode()


def test_model_digest_is_the_shell_pipeline_on_odd_names(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "nested" / "deeper").mkdir(parents=True)
    (model / "empty-dir").mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "nested" / "a file with spaces.txt").write_text("spaces")
    (model / "nested" / "deeper" / "ünïcødé 模型.bin").write_bytes(bytes(range(256)) * 10)
    (model / ".hidden").write_text("hidden files count")
    (model / "empty").write_bytes(b"")
    (model / "back\\slash").write_text("sha256sum escapes this name")
    (model / "new\nline").write_text("and this one")
    (model / "B-upper").write_text("C-locale order: upper case before lower case")
    (model / "a-lower").write_text("lower")
    with open(bytes(model) + b"/latin1-\xe9", "wb") as file:  # a name that is not UTF-8
        file.write(b"bytes")
    (model / "link-to-file").symlink_to(model / "MLmodel")  # find -type f skips links
    (model / "link-to-dir").symlink_to(model / "nested")
    digest = sbom.model_digest(model)
    assert digest == shell_digest(model)
    assert len(digest) == len("sha256:") + 64

    (model / "nested" / "a file with spaces.txt").write_text("changed")
    assert sbom.model_digest(model) not in (digest, "")
    assert sbom.model_digest(model) == shell_digest(model)
    changed = sbom.model_digest(model)
    (model / "a-lower").rename(model / "a-renamed")
    assert sbom.model_digest(model) not in (changed, digest)
    assert sbom.model_digest(model) == shell_digest(model)


def test_a_directory_without_files_has_no_digest(tmp_path: Path) -> None:
    (tmp_path / "only-a-dir").mkdir()
    with pytest.raises(ConfigError, match="has no files"):
        sbom.model_digest(tmp_path)


# ----------------------------------------------------------------------------- inventories


def deb_inventory(*distributions: sbom.PythonDistribution) -> sbom.ImageInventory:
    return sbom.ImageInventory(
        python="/opt/venv/bin/python",
        python_version="3.11.2",
        distributions=distributions
        or (
            sbom.PythonDistribution(
                "scikit_learn",
                "1.7.2",
                license_expression="BSD-3-Clause",
                summary="A set of python modules for machine learning",
                sha256=WHEEL_SHA,
                url="https://files.pythonhosted.org/packages/x/scikit_learn-1.7.2.whl",
            ),
            sbom.PythonDistribution("bare", "0.1"),  # no hash, no license, no URL
            sbom.PythonDistribution("odd-license", "2.0", license="Apache 2.0 with a twist"),
            sbom.PythonDistribution(
                "classified", "3.0", license_classifiers=("MIT License", "OSI Approved")
            ),
            sbom.PythonDistribution("dual", "1.0", license_expression="MIT OR Apache-2.0"),
            sbom.PythonDistribution("Zope.Interface", "7.0"),
        ),
        os_release=sbom.OsRelease("debian", "12", "bookworm"),
        package_type="deb",
        os_packages=(
            sbom.OsPackage("libc6", "2.36-9+deb12u10", "amd64", "glibc"),
            sbom.OsPackage("python3", "3.11.2-1+b1", "amd64", "python3-defaults (3.11.2-1)"),
        ),
    )


def apk_inventory() -> sbom.ImageInventory:
    return sbom.ImageInventory(
        python="/usr/bin/python3",
        python_version="3.12.8",
        distributions=(sbom.PythonDistribution("numpy", "2.2.0", license="BSD-3-Clause"),),
        os_release=sbom.OsRelease("alpine", "3.21.0", ""),
        package_type="apk",
        os_packages=(
            sbom.OsPackage("musl", "1.2.5-r8", "x86_64", "musl", "MIT"),
            sbom.OsPackage("busybox", "1.37.0-r8", "x86_64", "busybox", "GPL-2.0-only"),
            sbom.OsPackage("ssl_client", "1.37.0-r8", "x86_64", "busybox", "GPL 2 and stuff"),
        ),
    )


MODEL = sbom.ModelComponentFacts(
    name="iris",
    version="3",
    uri="models:/iris@champion",
    flavor="sklearn",
    run_id="0123456789abcdef",
    mlflow_version="3.1.0",
    digest=MODEL_DIGEST,
)


def build(
    inventory: sbom.ImageInventory | None = None,
    model: sbom.ModelComponentFacts = MODEL,
    repository: str = "ghcr.io/acme/iris-serving",
) -> dict[str, Any]:
    data = sbom.cyclonedx_sbom(inventory or deb_inventory(), model, repository, DIGEST, "0.1.0")
    assert_valid(data)
    document: dict[str, Any] = json.loads(data)
    return document


@cache
def library_validator() -> Any:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.V1_6)


def assert_valid(data: bytes) -> None:
    """Checked again here by the library's own validator, as it is (its IRI check included)."""
    assert library_validator().validate_str(data.decode()) is None


def by_purl(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["purl"]: c for c in document["components"] if "purl" in c}


# ----------------------------------------------------------------------------- the document


def test_sbom_of_a_debian_image() -> None:
    document = build()
    assert document["bomFormat"] == "CycloneDX"
    assert document["specVersion"] == "1.6"
    image = document["metadata"]["component"]
    assert image["type"] == "container"
    assert image["purl"] == (
        f"pkg:oci/iris-serving@{DIGEST}?repository_url=ghcr.io/acme/iris-serving"
    )
    parsed = PackageURL.from_string(image["purl"])
    assert (parsed.type, parsed.name, parsed.version) == ("oci", "iris-serving", DIGEST)
    assert parsed.qualifiers == {"repository_url": "ghcr.io/acme/iris-serving"}
    assert document["metadata"]["tools"]["components"] == [
        {"name": "mlops-actions", "type": "application", "version": "0.1.0"}
    ]

    components = by_purl(document)
    sklearn = components["pkg:pypi/scikit-learn@1.7.2"]
    assert (sklearn["name"], sklearn["type"]) == ("scikit_learn", "library")
    assert sklearn["hashes"] == [{"alg": "SHA-256", "content": WHEEL_SHA}]
    assert sklearn["licenses"] == [{"license": {"id": "BSD-3-Clause"}}]
    assert sklearn["externalReferences"] == [
        {
            "type": "distribution",
            "url": "https://files.pythonhosted.org/packages/x/scikit_learn-1.7.2.whl",
        }
    ]
    assert sklearn["description"].startswith("A set of python modules")
    bare = components["pkg:pypi/bare@0.1"]
    assert not {"hashes", "licenses", "externalReferences"} & set(bare)
    # An unparsable license string is a named license, never an error.
    assert components["pkg:pypi/odd-license@2.0"]["licenses"] == [
        {"license": {"name": "Apache 2.0 with a twist"}}
    ]
    assert components["pkg:pypi/classified@3.0"]["licenses"] == [
        {"license": {"name": "MIT License"}}
    ]
    assert components["pkg:pypi/dual@1.0"]["licenses"] == [{"expression": "MIT OR Apache-2.0"}]
    assert "pkg:pypi/zope-interface@7.0" in components  # normalized as the purl spec says

    libc = components["pkg:deb/debian/libc6@2.36-9%2Bdeb12u10?arch=amd64&distro=debian-12"]
    assert libc["version"] == "2.36-9+deb12u10"
    assert {"name": "mlops-actions:source-package", "value": "glibc"} in libc["properties"]
    purl = PackageURL.from_string(libc["purl"])
    assert (purl.namespace, purl.name, purl.version) == ("debian", "libc6", "2.36-9+deb12u10")
    assert purl.qualifiers == {"arch": "amd64", "distro": "debian-12"}
    system = [c for c in document["components"] if c["type"] == "operating-system"]
    assert system == [
        {
            "bom-ref": "os:debian@12",
            "description": "bookworm",
            "name": "debian",
            "type": "operating-system",
            "version": "12",
        }
    ]

    model = components["pkg:mlflow/iris@3"]
    assert model["type"] == "machine-learning-model"
    assert (model["name"], model["version"]) == ("iris", "3")
    assert model["hashes"] == [{"alg": "SHA-256", "content": "b" * 64}]
    assert {p["name"]: p["value"] for p in model["properties"]} == {
        "mlops-actions:model-uri": "models:/iris@champion",
        "mlops-actions:flavor": "sklearn",
        "mlops-actions:run-id": "0123456789abcdef",
        "mlops-actions:mlflow-version": "3.1.0",
        "mlops-actions:model-digest": MODEL_DIGEST,
    }
    # The image contains every component.
    (image_dependency,) = [d for d in document["dependencies"] if d["ref"] == image["bom-ref"]]
    assert len(image_dependency["dependsOn"]) == len(document["components"]) == 6 + 2 + 1 + 1


def test_sbom_of_an_alpine_image() -> None:
    components = by_purl(build(apk_inventory()))
    musl = components["pkg:apk/alpine/musl@1.2.5-r8?arch=x86_64&distro=alpine-3.21.0"]
    assert musl["licenses"] == [{"license": {"id": "MIT"}}]
    assert {"name": "mlops-actions:source-package", "value": "musl"} in musl["properties"]
    assert components["pkg:apk/alpine/busybox@1.37.0-r8?arch=x86_64&distro=alpine-3.21.0"][
        "licenses"
    ] == [{"license": {"id": "GPL-2.0-only"}}]
    assert components["pkg:apk/alpine/ssl_client@1.37.0-r8?arch=x86_64&distro=alpine-3.21.0"][
        "licenses"
    ] == [{"license": {"name": "GPL 2 and stuff"}}]
    assert "pkg:pypi/numpy@2.2.0" in components
    assert not any(purl.startswith("pkg:deb/") for purl in components)


@pytest.mark.parametrize(
    "name",
    [
        'fraud "v2" model',
        "it's a model",
        "modèle ünïcødé 模型 🚀",
        "100% #1 model?&a=b",
        "two  spaces, a comma; and a semicolon",
    ],
)
def test_odd_model_names_keep_the_purl_and_the_document_valid(name: str) -> None:
    model = sbom.ModelComponentFacts(**{**MODEL.__dict__, "name": name})
    data = sbom.cyclonedx_sbom(deb_inventory(), model, "ghcr.io/acme/x", DIGEST, "0.1.0")
    assert_valid(data)
    (component,) = [
        c for c in json.loads(data)["components"] if c["type"] == "machine-learning-model"
    ]
    assert component["name"] == name
    purl = PackageURL.from_string(component["purl"])
    assert (purl.type, purl.name, purl.version) == ("mlflow", name, "3")
    assert not {" ", '"'} & set(component["purl"])
    parsed = sbom.parse_sbom(data)
    assert (parsed.model_name, parsed.model_version) == (name, "3")


def test_an_unregistered_model_is_named_by_its_uri() -> None:
    model = sbom.ModelComponentFacts(
        **{**MODEL.__dict__, "name": "", "version": "", "uri": "runs:/abc/model"}
    )
    document = build(model=model)
    (component,) = [c for c in document["components"] if c["type"] == "machine-learning-model"]
    assert component["name"] == "runs:/abc/model"
    assert not {"purl", "version"} & set(component)


def test_credentials_in_a_url_never_reach_the_document() -> None:
    leaky = sbom.PythonDistribution(
        "private", "1.0", url="https://user:s3cr3t-token@pypi.example/private-1.0.whl"
    )
    text = json.dumps(build(deb_inventory(leaky)))
    assert "s3cr3t-token" not in text
    assert "https://pypi.example/private-1.0.whl" in text


def test_same_inputs_same_bytes_when_time_and_serial_are_given() -> None:
    first = sbom.cyclonedx_sbom(
        deb_inventory(), MODEL, "ghcr.io/a/b", DIGEST, "0.1.0", timestamp=WHEN, serial_number=SERIAL
    )
    again = sbom.cyclonedx_sbom(
        deb_inventory(), MODEL, "ghcr.io/a/b", DIGEST, "0.1.0", timestamp=WHEN, serial_number=SERIAL
    )
    assert first == again
    assert json.loads(first)["serialNumber"] == f"urn:uuid:{SERIAL}"
    fresh = sbom.cyclonedx_sbom(deb_inventory(), MODEL, "ghcr.io/a/b", DIGEST, "0.1.0")
    assert json.loads(fresh)["serialNumber"] != json.loads(first)["serialNumber"]


def test_a_digest_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="is not <algorithm>:<hex>"):
        sbom.cyclonedx_sbom(deb_inventory(), MODEL, "ghcr.io/a/b", "latest", "0.1.0")


# ----------------------------------------------------------------------------- parsing


def test_parse_reads_what_verify_image_checks() -> None:
    data = sbom.cyclonedx_sbom(deb_inventory(), MODEL, "ghcr.io/acme/iris", DIGEST, "0.1.0")
    parsed = sbom.parse_sbom(data)
    assert parsed == sbom.ParsedSbom(
        spec_version="1.6",
        tool_version="0.1.0",
        image_repository="ghcr.io/acme/iris",
        image_digest=DIGEST,
        model_name="iris",
        model_version="3",
        model_uri="models:/iris@champion",
        model_digest=MODEL_DIGEST,
        components=10,
        python_packages=6,
        python_packages_hashed=1,
        os_packages=2,
    )
    summary = sbom.sbom_summary(data)
    assert "6 Python distributions (1 with the archive's SHA-256)" in summary
    assert "2 OS packages" in summary
    assert "`iris` version 3" in summary
    assert "sha256:bbbbbbbbbbbb…" in summary


def test_parse_refuses_what_is_not_an_sbom_of_a_model() -> None:
    good = json.loads(sbom.cyclonedx_sbom(deb_inventory(), MODEL, "ghcr.io/a/b", DIGEST, "0.1"))
    with pytest.raises(ValueError, match="the SBOM is not JSON"):
        sbom.parse_sbom(b"{not json")
    with pytest.raises(ValueError, match="the SBOM is not JSON"):
        sbom.parse_sbom(b"\xff\xfe")
    with pytest.raises(ValueError, match="not a CycloneDX document"):
        sbom.parse_sbom(b'{"spdxVersion": "SPDX-2.3"}')
    with pytest.raises(ValueError, match=r"CycloneDX 1\.4; 1\.5 or 1\.6 is wanted"):
        sbom.parse_sbom(json.dumps({**good, "specVersion": "1.4"}).encode())

    invalid = copy.deepcopy(good)
    invalid["components"][0]["type"] = "banana"
    with pytest.raises(ValueError, match=r"not valid CycloneDX 1\.6: at components/0/type"):
        sbom.parse_sbom(json.dumps(invalid).encode())

    without_model = copy.deepcopy(good)
    without_model["components"] = [
        c for c in good["components"] if c["type"] != "machine-learning-model"
    ]
    with pytest.raises(ValueError, match="no machine-learning-model component"):
        sbom.parse_sbom(json.dumps(without_model).encode())


# ----------------------------------------------------------------------------- inventory parts

DPKG_STATUS = """\
Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u10

Package: python3
Status: install ok installed
Architecture: amd64
Source: python3-defaults (3.11.2-1)
Version: 3.11.2-1+b1

Package: removed-but-configured
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: libc6
Status: install ok installed
Architecture: i386
Source: glibc
Version: 2.36-9+deb12u10
"""

APK_INSTALLED = """\
C:Q1abc=
P:musl
V:1.2.5-r8
A:x86_64
L:MIT
o:musl

P:busybox
V:1.37.0-r8
A:x86_64
L:GPL-2.0-only
o:busybox
"""


def test_dpkg_status_lists_installed_packages_only() -> None:
    packages = sbom.parse_dpkg_status(DPKG_STATUS)
    assert [(p.name, p.architecture) for p in packages] == [
        ("libc6", "amd64"),
        ("python3", "amd64"),
        ("libc6", "i386"),
    ]
    assert packages[1].source == "python3-defaults (3.11.2-1)"


def test_apk_database() -> None:
    assert sbom.parse_apk_installed(APK_INSTALLED) == [
        sbom.OsPackage("musl", "1.2.5-r8", "x86_64", "musl", "MIT"),
        sbom.OsPackage("busybox", "1.37.0-r8", "x86_64", "busybox", "GPL-2.0-only"),
    ]


def test_os_release_quoting() -> None:
    release = sbom.parse_os_release(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
        'VERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n# comment\n'
    )
    assert release == sbom.OsRelease("debian", "12", "bookworm")
    assert sbom.parse_os_release("ID='alpine'\nVERSION_ID=3.21.0\n") == sbom.OsRelease(
        "alpine", "3.21.0", ""
    )


def test_inventory_joins_what_pip_recorded() -> None:
    installed = {
        "version": 1,
        "distributions": [
            {
                "name": "Scikit_Learn",
                "version": "1.7.2",
                "url": "https://f/s.whl",
                "sha256": WHEEL_SHA,
            },
            {"name": "pandas", "version": "2.0.0", "url": "https://f/p.whl", "sha256": "d" * 64},
            {"name": "leaky", "version": "1", "url": "https://u:pw@f/l.whl", "sha256": "nothex"},
        ],
    }
    inventory = sbom.inventory_from_output(
        {
            "python": "/opt/venv/bin/python",
            "python_version": "3.11.2",
            "distributions": [
                {"name": "scikit-learn", "version": "1.7.2", "license": "BSD 3-Clause"},
                # Reinstalled at another version after the build: pip's hash is not its own.
                {"name": "pandas", "version": "2.3.3", "license": "BSD\n\nCopyright ..."},
                {"name": "leaky", "version": "1", "license": "UNKNOWN"},
                {
                    "name": "setuptools",
                    "version": "66.1.1",
                    "classifiers": ["License :: OSI Approved :: MIT License"],
                },
            ],
            "installed": json.dumps(installed),
            "dpkg": DPKG_STATUS,
            "apk": None,
            "os_release": "ID=debian\nVERSION_ID=12\n",
        }
    )
    found = {d.name: d for d in inventory.distributions}
    assert (found["scikit-learn"].sha256, found["scikit-learn"].url) == (
        WHEEL_SHA,
        "https://f/s.whl",
    )
    assert found["scikit-learn"].license == "BSD 3-Clause"
    assert (found["pandas"].sha256, found["pandas"].license) == ("", "")  # a text, not a name
    assert (found["leaky"].sha256, found["leaky"].url, found["leaky"].license) == (
        "",
        "https://f/l.whl",
        "",
    )
    assert found["setuptools"].license_classifiers == ("MIT License",)
    assert (inventory.package_type, len(inventory.os_packages)) == ("deb", 3)
    assert inventory.os_release == sbom.OsRelease("debian", "12", "")
    assert sbom.requirements_lock(inventory) == (
        "leaky==1\npandas==2.3.3\n"
        f"scikit-learn==1.7.2 --hash=sha256:{WHEEL_SHA}\nsetuptools==66.1.1\n"
    )


def test_inventory_script_compiles_and_reads_what_the_build_writes() -> None:
    from mlops_actions import image

    compile(sbom.INVENTORY_SCRIPT, "inventory", "exec")
    assert f"'{image.INSTALLED_IN_IMAGE}'" in sbom.INVENTORY_SCRIPT
    assert f"'{sbom.VENV_PYTHON}'" in sbom.INVENTORY_SCRIPT


# ----------------------------------------------------------------------------- a real image

CA_BUNDLE = os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().cafile or ""


def run_in(client: Any, image_id: str, argv: list[str], **options: Any) -> bytes:
    """Run a command in the image with its entrypoint replaced; its standard output."""
    output: bytes = client.containers.run(
        image_id,
        entrypoint=argv[:1],
        command=argv[1:],
        network_disabled=True,
        remove=True,
        stderr=False,
        **options,
    )
    return output


@pytest.mark.docker
def test_inventory_of_the_iris_image_matches_pip_and_dpkg(
    docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    import pip

    from tests.conftest import save_iris_model
    from tests.test_image import build_model_image

    model = save_iris_model(tmp_path / "model", 1.0)
    image_id, facts = build_model_image(
        model, "7", f"{unique_name('iris-sbom')}:7", base_image, tmp_path
    )

    started = time.perf_counter()
    inventory = sbom.read_inventory(docker_client, image_id)
    read_seconds = time.perf_counter() - started
    assert not docker_client.containers.list(all=True, filters={"ancestor": image_id})

    # Python: exactly what pip, run from the host's copy (the image has none), lists.
    pip_dir = Path(pip.__file__).parent
    listed = json.loads(
        run_in(
            docker_client,
            image_id,
            ["/opt/venv/bin/python", "-m", "pip", "list", "--format", "json"],
            volumes={str(pip_dir): {"bind": "/mnt/pip/pip", "mode": "ro"}},
            environment={"PYTHONPATH": "/mnt/pip:/opt/mlserving"},
        )
    )
    assert inventory.python.startswith("/opt/venv/bin/python")  # python3 on its PATH
    assert {(sbom.normalize(d.name), d.version) for d in inventory.distributions} == {
        (sbom.normalize(d["name"]), d["version"]) for d in listed
    }
    assert len(inventory.distributions) > 20
    # Every distribution pip downloaded has the archive's sha256; only the venv's seeds lack one.
    from_pypi = [d for d in inventory.distributions if "pythonhosted.org" in d.url]
    assert len(from_pypi) >= len(inventory.distributions) - 2
    assert all(len(d.sha256) == 64 for d in from_pypi)
    unhashed = {sbom.normalize(d.name) for d in inventory.distributions if not d.sha256}
    assert unhashed <= {"setuptools", "wheel", "pip"}
    # ... and it is the sha256 of the very archive: download one and hash it.
    sample = min(from_pypi, key=lambda d: (d.name != "six", d.name != "packaging", d.name))
    context = ssl.create_default_context(cafile=CA_BUNDLE or None)
    with urllib.request.urlopen(sample.url, timeout=60, context=context) as response:
        assert hashlib.sha256(response.read()).hexdigest() == sample.sha256
    assert any(d.license or d.license_expression or d.license_classifiers for d in from_pypi)

    # OS packages: what dpkg-query lists, python3 among them.
    queried = run_in(
        docker_client,
        image_id,
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Architecture}\n"],
    )
    rows = {tuple(line.split("\t")) for line in queried.decode().splitlines()}
    assert inventory.package_type == "deb"
    assert {(p.name, p.version, p.architecture) for p in inventory.os_packages} == rows
    assert len(inventory.os_packages) == len(
        run_in(docker_client, image_id, ["dpkg-query", "-W"]).decode().splitlines()
    )
    assert "python3" in {p.name for p in inventory.os_packages}
    assert inventory.os_release == sbom.OsRelease("debian", "12", "bookworm")

    # What installed.json adds to the image.
    sizes = run_in(
        docker_client,
        image_id,
        ["stat", "-c", "%s %n", "/opt/mlserving/installed.json", "/opt/mlserving/installed.py"],
    ).decode()
    added = sum(int(line.split()[0]) for line in sizes.splitlines())
    assert added < 32_000, sizes

    digest = sbom.model_digest(model)
    assert digest == shell_digest(model)
    started = time.perf_counter()
    import jsonschema  # noqa: F401  (the CLI imports it at start-up, in config.py)

    import_seconds = time.perf_counter() - started
    started = time.perf_counter()
    data = sbom.cyclonedx_sbom(
        inventory,
        sbom.ModelComponentFacts.of(facts, digest),
        "localhost:5000/acme/iris-sbom",
        image_id,
        "0.1.0",
    )
    build_seconds = time.perf_counter() - started
    parsed = sbom.parse_sbom(data)
    assert parsed.image_digest == image_id
    assert (parsed.model_name, parsed.model_version, parsed.model_digest) == ("iris", "7", digest)
    assert parsed.model_uri == "models:/iris/7"
    assert parsed.python_packages == len(inventory.distributions)
    assert parsed.python_packages_hashed == len(from_pypi)
    assert parsed.os_packages == len(inventory.os_packages)
    print(
        f"\ninventory read {read_seconds:.2f} s, SBOM built and validated {build_seconds:.2f} s "
        f"(after importing jsonschema, {import_seconds:.2f} s): "
        f"{len(data)} bytes, {parsed.components} components "
        f"({parsed.python_packages} Python, {parsed.os_packages} deb); "
        f"installed.json + installed.py add {added} bytes ({sizes.strip()!r})"
    )


@pytest.mark.docker
def test_an_image_without_python_is_named(docker_client: Any, tmp_path: Path) -> None:
    tarball = tmp_path / "rootfs.tar"
    readme = tmp_path / "README"
    readme.write_text("an image with no interpreter at all\n")
    with tarfile.open(tarball, "w") as archive:
        archive.add(readme, arcname="README")
    repository = unique_name("mlops-actions-test/no-python")
    docker_client.api.import_image(src=str(tarball), repository=repository, tag="1")
    image = f"{repository}:1"
    try:
        with pytest.raises(sbom.NoPythonInImage, match=f"image {image} has no Python") as error:
            sbom.read_inventory(docker_client, image)
        assert isinstance(error.value, MlopsError)
        assert "base image with Python" in error.value.hint
        assert not docker_client.containers.list(all=True, filters={"ancestor": image})
    finally:
        docker_client.images.remove(image, force=True)
