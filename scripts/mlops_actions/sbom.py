"""A software bill of materials of a serving image, as CycloneDX 1.6 JSON.

    model_digest(model_dir)           the model directory's digest, reproducible in a shell
    read_inventory(client, image_id)  what is inside an image: one short-lived container
    cyclonedx_sbom(...)               inventory + model facts → validated CycloneDX JSON bytes
    parse_sbom(data)                  what verify-image checks: image digest, model, counts

The document is built with cyclonedx-python-lib and checked against the CycloneDX schema before
it leaves this module; reading an image and building the document are separate, so the second
is a pure function that the tests drive with made-up inventories.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from uuid import UUID

from .errors import ConfigError, MlopsError, ServiceError

if TYPE_CHECKING:
    from cyclonedx.model.component import Component
    from cyclonedx.model.license import License
    from cyclonedx.validation.json import JsonStrictValidator

    from .image import ModelFacts

SPEC_VERSION = "1.6"
TOOL_NAME = "mlops-actions"
PROPERTY_PREFIX = "mlops-actions:"
VENV_PYTHON = "/opt/venv/bin/python"
MODEL_TYPE = "machine-learning-model"


class NoPythonInImage(MlopsError):
    title = "no Python in the image"


class InventoryFailed(MlopsError):
    title = "SBOM inventory failed"
    exit_code = ServiceError.exit_code


# ----------------------------------------------------------------------------- the model


def model_digest(model_dir: Path) -> str:
    """`sha256:<hex>` of a model directory: every regular file, by path, with its sha256.

    Anyone can compute the same value in a shell (GNU coreutils, findutils):

        cd <model_dir> && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum \\
            | sha256sum

    That is, the sha256 of sha256sum's listing (`<hex>  ./<path>` lines, sorted by the bytes of
    the path) of the directory's regular files; symbolic links are neither followed nor listed.
    A path with a backslash or a newline is listed the way GNU sha256sum lists it: the line
    starts with a backslash and the name has them escaped as \\\\ and \\n. A directory without
    files has no digest (ConfigError).
    """
    root = bytes(model_dir)
    paths: list[bytes] = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and not os.path.islink(path):
                paths.append(b"." + path[len(root) :])
    if not paths:
        raise ConfigError(
            f"model directory {model_dir} has no files, so it has no digest",
            "download the model again; an MLflow model has at least an MLmodel file",
        )
    listing = hashlib.sha256()
    for relative in sorted(paths):
        listing.update(_sha256sum_line(_file_sha256(os.path.join(root, relative)), relative))
    return "sha256:" + listing.hexdigest()


def _file_sha256(path: bytes) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256sum_line(hex_digest: str, path: bytes) -> bytes:
    """One line of GNU sha256sum's output (text mode), escapes included."""
    if b"\\" in path or b"\n" in path:
        escaped = path.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")
        return b"\\" + hex_digest.encode() + b"  " + escaped + b"\n"
    return hex_digest.encode() + b"  " + path + b"\n"


@dataclass(frozen=True)
class ModelComponentFacts:
    """The model as the SBOM names it."""

    name: str  # registered model name; empty for a model that is not registered
    version: str
    uri: str
    flavor: str
    run_id: str
    mlflow_version: str
    digest: str  # model_digest()

    @classmethod
    def of(cls, facts: ModelFacts, digest: str) -> ModelComponentFacts:
        return cls(
            name=facts.name,
            version=facts.version,
            uri=facts.uri,
            flavor=facts.flavor,
            run_id=facts.run_id,
            mlflow_version=facts.mlflow_version,
            digest=digest,
        )


# ----------------------------------------------------------------------------- the inventory


@dataclass(frozen=True)
class PythonDistribution:
    name: str
    version: str
    license_expression: str = ""  # License-Expression (core metadata 2.4)
    license: str = ""  # the License field, when it is a short name rather than a full text
    license_classifiers: tuple[str, ...] = ()  # e.g. "MIT License" from "License :: OSI ..."
    summary: str = ""
    sha256: str = ""  # of the archive pip installed (installed.json), where known
    url: str = ""  # where pip downloaded it from, without credentials


@dataclass(frozen=True)
class OsPackage:
    name: str
    version: str
    architecture: str = ""
    source: str = ""  # dpkg's Source field or apk's origin
    license: str = ""  # apk records one; dpkg does not


@dataclass(frozen=True)
class OsRelease:
    id: str = ""  # debian, ubuntu, alpine
    version_id: str = ""  # 12, 24.04, 3.20.3
    version_codename: str = ""  # bookworm


@dataclass(frozen=True)
class ImageInventory:
    python: str  # the interpreter that was asked, e.g. /opt/venv/bin/python
    python_version: str
    distributions: tuple[PythonDistribution, ...]
    os_release: OsRelease
    package_type: str  # "deb", "apk", or "" when no package database was readable
    os_packages: tuple[OsPackage, ...]


# Runs inside the image as `python3 -c SCRIPT SCRIPT`: it re-executes itself with the venv's
# Python where there is one, so it sees what the server sees. It only reads files; the host
# parses what it prints.
INVENTORY_SCRIPT = r"""
import json, os, re, sys
venv = '/opt/venv/bin/python'
if sys.prefix != '/opt/venv' and os.access(venv, os.X_OK):
    os.execv(venv, [venv, '-c', sys.argv[1], sys.argv[1]])
import importlib.metadata as metadata

def read(path, keys=None):
    try:
        with open(path, encoding='utf-8', errors='replace') as file:
            if keys is None:
                return file.read()
            return ''.join(l for l in file if l.strip() == '' or l.startswith(keys))
    except OSError:
        return None

seen, distributions = set(), []
for distribution in metadata.distributions():
    meta = distribution.metadata
    name = meta['Name']
    key = re.sub(r'[-_.]+', '-', name or '').lower()
    if not name or key in seen:
        continue
    seen.add(key)
    distributions.append({
        'name': name, 'version': meta['Version'] or '',
        'license_expression': meta['License-Expression'] or '',
        'license': (meta['License'] or '')[:300],
        'classifiers': [c for c in meta.get_all('Classifier') or [] if c.startswith('License ::')],
        'summary': meta['Summary'] or '',
    })
keys = ('Package:', 'Status:', 'Version:', 'Architecture:', 'Source:')
dpkg = read('/var/lib/dpkg/status', keys)
status_d = '/var/lib/dpkg/status.d'  # distroless images: one file per package
if os.path.isdir(status_d):
    dpkg = (dpkg or '') + ''.join(
        '\n' + (read(os.path.join(status_d, name), keys) or '')
        for name in sorted(os.listdir(status_d)) if '.' not in name)
print(json.dumps({
    'python': sys.executable,
    'python_version': '.'.join(map(str, sys.version_info[:3])),
    'distributions': distributions,
    'installed': read('/opt/mlserving/installed.json'),  # image.INSTALLED_IN_IMAGE
    'dpkg': dpkg,
    'apk': read('/lib/apk/db/installed', ('P:', 'V:', 'A:', 'L:', 'o:')),
    'os_release': read('/etc/os-release') or read('/usr/lib/os-release'),
}))
"""


def read_inventory(client: Any, image_id: str, timeout: float = 120) -> ImageInventory:
    """What is inside an image: its Python distributions (those /opt/venv/bin/python sees, or
    python3's in an image without /opt/venv), with the archive hashes pip recorded at build
    time, its dpkg or apk packages and its /etc/os-release. Runs one container without
    network, with the entrypoint replaced, and removes it."""
    from docker.errors import APIError, ImageNotFound

    try:
        container = client.containers.create(
            image_id,
            entrypoint=["python3"],
            command=["-c", INVENTORY_SCRIPT, INVENTORY_SCRIPT],
            network_disabled=True,
            read_only=True,
            environment={"PYTHONDONTWRITEBYTECODE": "1"},
        )
    except ImageNotFound:
        raise ConfigError(f"image {image_id} not found in the Docker engine") from None
    except APIError as error:
        raise ServiceError(f"could not create a container of {image_id}: {error}") from None
    try:
        try:
            container.start()
        except APIError as error:
            if re.search(r"executable file not found|no such file or directory", str(error)):
                raise NoPythonInImage(
                    f"image {image_id} has no Python: neither {VENV_PYTHON} nor python3 on its "
                    "PATH, so its Python distributions cannot be listed for the SBOM",
                    "build the image from a base image with Python 3 (the generated "
                    "Dockerfile installs into /opt/venv)",
                ) from None
            raise ServiceError(f"could not start a container of {image_id}: {error}") from None
        try:
            status = container.wait(timeout=timeout)
        except Exception as error:  # requests' ReadTimeout or a connection error
            raise InventoryFailed(
                f"listing what is inside {image_id} did not finish within {timeout:.0f} s: {error}"
            ) from None
        output = container.logs(stdout=True, stderr=False)
        if int(status.get("StatusCode", 1)) != 0:
            errors = container.logs(stdout=False, stderr=True).decode(errors="replace")
            raise InventoryFailed(
                f"listing what is inside {image_id} failed (exit {status.get('StatusCode')}): "
                + (errors.strip().splitlines() or ["no error output"])[-1][:300]
            )
    finally:
        try:
            container.remove(force=True)
        except Exception as error:  # the inventory is read; a leftover container is no failure
            print(f"warning: could not remove the inventory container: {error}")
    try:
        data = json.loads(output)
    except ValueError:
        raise InventoryFailed(
            f"listing what is inside {image_id} printed no JSON ({len(output)} bytes)",
            "the Docker engine's log driver must keep container output (json-file or local)",
        ) from None
    return inventory_from_output(data)


def inventory_from_output(data: Mapping[str, Any]) -> ImageInventory:
    """The inventory from what INVENTORY_SCRIPT printed."""
    installed = _installed_index(data.get("installed"))
    distributions = []
    for raw in data.get("distributions") or ():
        name, version = str(raw.get("name", "")), str(raw.get("version", ""))
        recorded = installed.get((normalize(name), version), {})
        distributions.append(
            PythonDistribution(
                name=name,
                version=version,
                license_expression=str(raw.get("license_expression") or "").strip(),
                license=_license_name(str(raw.get("license") or "")),
                license_classifiers=tuple(
                    c.rsplit("::", 1)[1].strip()
                    for c in raw.get("classifiers") or ()
                    if c.count("::") >= 2
                ),
                summary=str(raw.get("summary") or "").strip(),
                sha256=recorded.get("sha256", ""),
                url=_without_credentials(recorded.get("url", "")),
            )
        )
    distributions.sort(key=lambda d: normalize(d.name))
    os_release = parse_os_release(data.get("os_release") or "")
    if data.get("dpkg"):
        package_type, packages = "deb", parse_dpkg_status(data["dpkg"])
    elif data.get("apk"):
        package_type, packages = "apk", parse_apk_installed(data["apk"])
    else:
        package_type, packages = "", []
    return ImageInventory(
        python=str(data.get("python", "")),
        python_version=str(data.get("python_version", "")),
        distributions=tuple(distributions),
        os_release=os_release,
        package_type=package_type,
        os_packages=tuple(sorted(packages, key=lambda p: (p.name, p.architecture))),
    )


def normalize(name: str) -> str:
    """A distribution name as PEP 503 and the pypi purl type compare it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_index(text: object) -> dict[tuple[str, str], dict[str, str]]:
    """installed.json (image.installed_script) by (normalized name, version)."""
    if not isinstance(text, str):
        return {}
    try:
        document = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(document, dict) or document.get("version") != 1:
        return {}
    index = {}
    for entry in document.get("distributions") or ():
        if isinstance(entry, dict) and entry.get("name"):
            key = (normalize(str(entry["name"])), str(entry.get("version", "")))
            sha256 = str(entry.get("sha256") or "").lower()
            index[key] = {
                "sha256": sha256 if re.fullmatch(r"[0-9a-f]{64}", sha256) else "",
                "url": str(entry.get("url") or ""),
            }
    return index


def _license_name(text: str) -> str:
    """The License field when it names a license; many distributions put the whole text."""
    text = text.strip()
    if not text or "\n" in text or len(text) > 100 or text.upper() in {"UNKNOWN", "NONE"}:
        return ""
    return text


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _stanzas(text: str) -> Iterable[dict[str, str]]:
    """RFC 822-like stanzas separated by blank lines; continuation lines are dropped."""
    stanza: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if stanza:
                yield stanza
            stanza = {}
        elif not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            stanza[key] = value.strip()
    if stanza:
        yield stanza


def parse_dpkg_status(text: str) -> list[OsPackage]:
    """The installed packages of /var/lib/dpkg/status (or distroless' status.d files)."""
    packages = []
    for stanza in _stanzas(text):
        status = stanza.get("Status", "install ok installed").split()
        if not stanza.get("Package") or status[-1:] != ["installed"]:
            continue
        packages.append(
            OsPackage(
                name=stanza["Package"],
                version=stanza.get("Version", ""),
                architecture=stanza.get("Architecture", ""),
                source=stanza.get("Source", ""),
            )
        )
    return packages


def parse_apk_installed(text: str) -> list[OsPackage]:
    """The packages of Alpine's /lib/apk/db/installed (P: name, V: version, A: arch, ...)."""
    packages = []
    for stanza in _stanzas(text):
        if stanza.get("P"):
            packages.append(
                OsPackage(
                    name=stanza["P"],
                    version=stanza.get("V", ""),
                    architecture=stanza.get("A", ""),
                    source=stanza.get("o", ""),
                    license=stanza.get("L", ""),
                )
            )
    return packages


def parse_os_release(text: str) -> OsRelease:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            values[key] = value
    return OsRelease(
        id=values.get("ID", "").lower(),
        version_id=values.get("VERSION_ID", ""),
        version_codename=values.get("VERSION_CODENAME", ""),
    )


def requirements_lock(inventory: ImageInventory) -> str:
    """`name==version --hash=sha256:<hex>` lines of the image's Python distributions (the hash
    where pip recorded one): what the build resolved, sorted by name."""
    lines = []
    for distribution in inventory.distributions:
        line = f"{normalize(distribution.name)}=={distribution.version}"
        if distribution.sha256:
            line += f" --hash=sha256:{distribution.sha256}"
        lines.append(line)
    return "".join(f"{line}\n" for line in sorted(lines))


# ----------------------------------------------------------------------------- CycloneDX


def cyclonedx_sbom(
    inventory: ImageInventory,
    model: ModelComponentFacts,
    image_repository: str,
    image_digest: str,
    tool_version: str,
    *,
    timestamp: datetime | None = None,
    serial_number: UUID | None = None,
) -> bytes:
    """The CycloneDX 1.6 JSON SBOM of the image `image_repository@image_digest`: the image as
    metadata.component, then every Python distribution, every OS package, the operating
    system and the model. Validated against the schema; an invalid document is a bug
    (RuntimeError). `timestamp` and `serial_number` default to now and a random UUID."""
    from cyclonedx.model import ExternalReference, ExternalReferenceType, Property, XsUri
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.tool import ToolRepository
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    if not re.fullmatch(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}", image_digest):
        raise ValueError(f"image digest {image_digest!r} is not <algorithm>:<hex>")
    image_purl = PackageURL(
        type="oci",
        name=image_repository.rsplit("/", 1)[-1],
        version=image_digest,
        qualifiers={"repository_url": image_repository},
    )
    image_properties = {
        "python": f"{inventory.python} {inventory.python_version}".strip(),
        "os": " ".join(filter(None, (inventory.os_release.id, inventory.os_release.version_id))),
    }
    image_component = Component(
        type=ComponentType.CONTAINER,
        name=image_repository,
        version=image_digest,
        purl=image_purl,
        bom_ref=image_purl.to_string(),
        properties=_properties(Property, image_properties),
    )
    tool = Component(type=ComponentType.APPLICATION, name=TOOL_NAME, version=tool_version)
    components: list[Component] = []
    for distribution in inventory.distributions:
        purl = PackageURL(
            type="pypi", name=normalize(distribution.name), version=distribution.version
        )
        references = []
        if distribution.url:
            references.append(
                ExternalReference(
                    type=ExternalReferenceType.DISTRIBUTION,
                    url=XsUri(_without_credentials(distribution.url)),
                )
            )
        components.append(
            Component(
                type=ComponentType.LIBRARY,
                name=distribution.name,
                version=distribution.version or None,
                description=distribution.summary or None,
                purl=purl,
                bom_ref=purl.to_string(),
                hashes=_sha256(distribution.sha256),
                licenses=_python_licenses(distribution),
                external_references=references,
            )
        )
    release = inventory.os_release
    distro = f"{release.id}-{release.version_id}" if release.id and release.version_id else ""
    for package in inventory.os_packages:
        qualifiers = {"arch": package.architecture, "distro": distro}
        purl = PackageURL(
            type=inventory.package_type,
            namespace=release.id or ("alpine" if inventory.package_type == "apk" else "debian"),
            name=package.name,
            version=package.version,
            qualifiers={key: value for key, value in qualifiers.items() if value},
        )
        components.append(
            Component(
                type=ComponentType.LIBRARY,
                name=package.name,
                version=package.version or None,
                purl=purl,
                bom_ref=purl.to_string(),
                licenses=_licenses([package.license] if package.license else [], True),
                properties=_properties(Property, {"source-package": package.source}),
            )
        )
    if release.id:
        components.append(
            Component(
                type=ComponentType.OPERATING_SYSTEM,
                name=release.id,
                version=release.version_id or None,
                description=release.version_codename or None,
                bom_ref=f"os:{release.id}@{release.version_id}",
            )
        )
    components.append(_model_component(model))
    bom = Bom(
        metadata=BomMetaData(
            component=image_component,
            tools=ToolRepository(components=[tool]),
            timestamp=timestamp,
        ),
        components=components,
        serial_number=serial_number,
    )
    bom.register_dependency(image_component, components)
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    error = schema_error(text)
    if error:
        raise RuntimeError(f"the generated SBOM is not valid CycloneDX {SPEC_VERSION}: {error}")
    return text.encode("utf-8")


def _model_component(model: ModelComponentFacts) -> Component:
    from cyclonedx.model import Property
    from cyclonedx.model.component import Component, ComponentType
    from packageurl import PackageURL

    # The mlflow purl type: pkg:mlflow/<registered name>@<version>. The tracking server's URL
    # (repository_url) stays out: it may carry credentials and means nothing outside.
    purl = (
        PackageURL(type="mlflow", name=model.name, version=model.version or None)
        if model.name
        else None
    )
    properties = {
        "model-uri": model.uri,
        "flavor": model.flavor,
        "run-id": model.run_id,
        "mlflow-version": model.mlflow_version,
        "model-digest": model.digest,
    }
    return Component(
        type=ComponentType.MACHINE_LEARNING_MODEL,
        name=model.name or model.uri or "model",
        version=model.version or None,
        purl=purl,
        bom_ref=purl.to_string() if purl else "model",
        hashes=_sha256(model.digest.removeprefix("sha256:")),
        properties=_properties(Property, properties),
    )


def _properties(property_type: Any, values: Mapping[str, str]) -> list[Any]:
    """`mlops-actions:<key>` properties, the empty ones left out."""
    return [
        property_type(name=PROPERTY_PREFIX + key, value=value)
        for key, value in values.items()
        if value
    ]


def _sha256(hex_digest: str) -> list[Any]:
    from cyclonedx.model import HashAlgorithm, HashType

    if not re.fullmatch(r"[0-9a-fA-F]{64}", hex_digest):
        return []
    return [HashType(alg=HashAlgorithm.SHA_256, content=hex_digest.lower())]


def _python_licenses(distribution: PythonDistribution) -> list[License]:
    """License-Expression, else the License field, else the license classifiers."""
    if distribution.license_expression:
        return _licenses([distribution.license_expression], True)
    if distribution.license:
        return _licenses([distribution.license], True)
    names = [c for c in distribution.license_classifiers if c.lower() != "osi approved"]
    return _licenses(sorted(set(names)), False)


def _licenses(texts: list[str], expression_allowed: bool) -> list[License]:
    """Licenses through the library's factory: an SPDX id, an SPDX expression (only alone:
    CycloneDX takes one expression or a list of licenses) or, failing both, a named license."""
    from cyclonedx.contrib.license.exceptions import InvalidSpdxLicenseException
    from cyclonedx.contrib.license.factories import LicenseFactory

    factory = LicenseFactory()
    if len(texts) == 1 and expression_allowed:
        return [factory.make_from_string(texts[0])]
    licenses: list[License] = []
    for text in texts:
        try:
            licenses.append(factory.make_with_id(text))
        except InvalidSpdxLicenseException:
            licenses.append(factory.make_with_name(text))
    return licenses


def schema_error(text: str, version: str = SPEC_VERSION) -> str:
    """The first schema error of a CycloneDX JSON document, in one line; "" when it is valid.

    The library's strict validator (its schema, registry and Draft 7 checks). Formats are
    checked by what jsonschema finds installed: the suite leaves out rfc3987-syntax, whose IRI
    parser takes half a second per URL (half a minute for an image's wheels) and makes every
    `import jsonschema` take seconds (cyclonedx-python-lib#862, jsonschema#1392)."""
    found = _library_validator(version).validate_str(text)
    return _describe(found.data) if found is not None else ""


@cache
def _library_validator(version: str) -> JsonStrictValidator:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.from_version(version))


# ----------------------------------------------------------------------------- reading one


@dataclass(frozen=True)
class ParsedSbom:
    spec_version: str
    tool_version: str
    image_repository: str
    image_digest: str
    model_name: str
    model_version: str
    model_uri: str
    model_digest: str
    components: int  # all of them, the model's included
    python_packages: int
    python_packages_hashed: int
    os_packages: int


def parse_sbom(data: bytes) -> ParsedSbom:
    """What verify-image checks in an SBOM made by cyclonedx_sbom. ValueError when it is not
    JSON, not valid CycloneDX (1.5 or later), or has no machine-learning-model component."""
    from packageurl import PackageURL

    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"the SBOM is not JSON: {error}") from None
    if not isinstance(document, dict) or document.get("bomFormat") != "CycloneDX":
        raise ValueError("the SBOM is not a CycloneDX document (no bomFormat: CycloneDX)")
    spec = str(document.get("specVersion", ""))
    if spec not in {"1.5", "1.6"}:
        raise ValueError(
            f"the SBOM is CycloneDX {spec or 'without specVersion'}; 1.5 or 1.6 is wanted "
            "(machine-learning-model components came with 1.5)"
        )
    invalid = schema_error(data.decode("utf-8"), spec)
    if invalid:
        raise ValueError(f"the SBOM is not valid CycloneDX {spec}: {invalid}")
    metadata = document.get("metadata") or {}
    image = metadata.get("component") or {}
    image_purl = _purl(image.get("purl"), PackageURL)
    tools = (metadata.get("tools") or {}).get("components") or []
    tool_version = next((t.get("version", "") for t in tools if t.get("name") == TOOL_NAME), "")
    components = document.get("components") or []
    models = [c for c in components if c.get("type") == MODEL_TYPE]
    if not models:
        raise ValueError(
            f"the SBOM has no {MODEL_TYPE} component: it does not say which model the image serves"
        )
    model = models[0]
    properties = {p.get("name"): p.get("value", "") for p in model.get("properties") or []}
    sha256 = next((h["content"] for h in model.get("hashes") or [] if h["alg"] == "SHA-256"), "")
    purls = [str(c.get("purl", "")) for c in components]
    python = [c for c in components if str(c.get("purl", "")).startswith("pkg:pypi/")]
    return ParsedSbom(
        spec_version=spec,
        tool_version=str(tool_version),
        image_repository=str(image_purl.qualifiers.get("repository_url", "")) if image_purl else "",
        image_digest=str(image_purl.version if image_purl else image.get("version", "")),
        model_name=str(model.get("name", "")),
        model_version=str(model.get("version", "")),
        model_uri=str(properties.get(PROPERTY_PREFIX + "model-uri", "")),
        model_digest=f"sha256:{sha256}"
        if sha256
        else str(properties.get(PROPERTY_PREFIX + "model-digest", "")),
        components=len(components),
        python_packages=len(python),
        python_packages_hashed=sum(1 for c in python if c.get("hashes")),
        os_packages=sum(1 for p in purls if p.startswith(("pkg:deb/", "pkg:apk/", "pkg:rpm/"))),
    )


def _purl(text: object, purl_type: Any) -> Any:
    try:
        return purl_type.from_string(str(text)) if text else None
    except ValueError:
        return None


def _describe(error: Any) -> str:
    """A jsonschema error in one line: where and what."""
    path = "/".join(str(part) for part in getattr(error, "absolute_path", ())) or "(root)"
    message = str(getattr(error, "message", error))
    return f"at {path}: {message[:300]}"


def sbom_summary(sbom_bytes: bytes) -> str:
    """A Markdown line for the job summary: what the SBOM lists."""
    parsed = parse_sbom(sbom_bytes)
    model = f"`{parsed.model_name or parsed.model_uri}`" + (
        f" version {parsed.model_version}" if parsed.model_version else ""
    )
    return (
        f"**SBOM** (CycloneDX {parsed.spec_version}): {parsed.python_packages} Python "
        f"distributions ({parsed.python_packages_hashed} with the archive's SHA-256), "
        f"{parsed.os_packages} OS packages, model {model} "
        f"(`{parsed.model_digest[:19] + '…' if parsed.model_digest else 'no digest'}`)"
    )
