"""OCI artifacts that refer to an image: attach (an SBOM, a provenance statement) to an image
digest, list them back, fetch them with their digests checked.

oras-py (`oras.provider.Registry`) carries the transport: its requests session, its token
authentication, the credentials of `docker login` (config.json, credential helpers), blob
upload and download. This module adds what oras-py lacks:

- the OCI 1.1 referrers: an artifact manifest with a `subject`, found again through
  `GET /v2/<name>/referrers/<digest>` where the registry has that API (it says so by answering
  the manifest PUT with an `OCI-Subject` header), else through the referrers tag schema: the
  tag `sha256-<hex>` holds an image index listing every artifact that refers to that digest;
- one request method (`_Transport.do_request`) that answers a Basic challenge (oras-py's token
  backend mistakes its realm for a token server), asks for a new token when a push needs a
  wider scope, retries a refused connection or a 502/503/504 briefly instead of for minutes,
  has a timeout, and turns an unreachable or refusing registry into one domain error;
- digests checked on everything read back.

Distribution 2.8 (Debian's docker-registry) has no referrers API: the tag schema is what the
tests exercise. Updating the tag is a read-modify-write with no lock, like oras and cosign do
it: two writers attaching to the same digest at the same moment can lose one entry. The index
a new one replaces stays in the registry untagged (deleting it needs deletes enabled).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import oras.container  # type: ignore[import-untyped]
import oras.provider  # type: ignore[import-untyped]
import requests

from .errors import EXIT_REJECTED, EXIT_SERVICE, ConfigError, MlopsError, ServiceError
from .image import registry_of

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
CREATED = "org.opencontainers.image.created"

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the size registries accept for a manifest
MAX_BLOB_BYTES = 512 * 1024 * 1024  # an SBOM or a statement is far smaller
TIMEOUT = (10.0, 60.0)  # connect, read (seconds)
ATTEMPTS = 3  # a refused connection or a 502/503/504, then give up
BACKOFF = 0.25  # seconds, doubled per attempt
RETRY_STATUSES = (502, 503, 504)

_DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")


class ArtifactRefused(MlopsError):
    """The registry answered a blob or manifest upload with an error (4xx): the message names
    the registry, the HTTP status and the registry's own error."""

    exit_code = EXIT_SERVICE
    title = "registry refused the artifact"


class DigestMismatch(MlopsError):
    """Bytes read back from a registry are not those their descriptor names: the check that
    reads them says no."""

    exit_code = EXIT_REJECTED
    title = "digest mismatch"


# ----------------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The OCI descriptor: mediaType, digest, size, and artifactType / annotations if set."""
        data: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.artifact_type:
            data["artifactType"] = self.artifact_type
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> Descriptor:
        """A descriptor from JSON; a ServiceError naming `where` if it is not one."""
        if not isinstance(data, dict):
            raise ServiceError(f"{where}: a descriptor is not a JSON object")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        annotations = data.get("annotations") or {}
        if (
            not isinstance(media_type, str)
            or not isinstance(digest, str)
            or not _DIGEST.match(digest)
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or not isinstance(annotations, dict)
        ):
            raise ServiceError(f"{where}: malformed descriptor {json.dumps(data)[:300]}")
        return cls(
            media_type,
            digest,
            size,
            str(data.get("artifactType") or ""),
            {str(k): str(v) for k, v in annotations.items()},
        )


EMPTY_DESCRIPTOR = Descriptor(
    EMPTY_MEDIA_TYPE, "sha256:" + hashlib.sha256(EMPTY_JSON).hexdigest(), len(EMPTY_JSON)
)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """The bytes pushed (and so digested) for a manifest or index: compact JSON."""
    return json.dumps(document, separators=(",", ":")).encode()


def verify_digest(data: bytes, digest: str, size: int | None, what: str) -> None:
    """DigestMismatch unless `data` has that digest (sha256 or sha512) and, if given, size."""
    algorithm, _, expected = digest.partition(":")
    if algorithm not in ("sha256", "sha512"):
        raise DigestMismatch(
            f"{what}: cannot check digest {digest}", "only sha256 and sha512 are supported"
        )
    hint = (
        "the registry served other bytes than were pushed: push it again, and check the "
        "registry (and any proxy in between) for tampering or corruption"
    )
    if size is not None and len(data) != size:
        raise DigestMismatch(f"{what}: {len(data)} bytes, its descriptor says {size}", hint)
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != expected:
        raise DigestMismatch(f"{what}: the content is {algorithm}:{actual}, not {digest}", hint)


def default_insecure(host: str) -> bool:
    """Plain HTTP for a loopback registry (localhost, 127.0.0.0/8, [::1], any port), as Docker
    does; HTTPS elsewhere."""
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def referrers_tag(digest: str) -> str:
    """The referrers tag schema's tag for a subject digest: `sha256:ab…` → `sha256-ab…`."""
    algorithm, _, encoded = digest.partition(":")
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{algorithm[:32]}-{encoded[:64]}")


def artifact_manifest(
    subject: Descriptor,
    artifact_type: str,
    layer: Descriptor,
    annotations: Mapping[str, str],
) -> dict[str, Any]:
    """An OCI 1.1 artifact: an image manifest with the empty config, one layer, a subject."""
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": EMPTY_DESCRIPTOR.as_json(),
        "layers": [Descriptor(layer.media_type, layer.digest, layer.size).as_json()],
        "subject": Descriptor(subject.media_type, subject.digest, subject.size).as_json(),
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return manifest


def merge_index(index: Mapping[str, Any] | None, entry: Descriptor) -> dict[str, Any] | None:
    """The referrers index with `entry` added, keeping every other entry and field; None when
    it is there already (no duplicates)."""
    merged = dict(index or {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
    manifests = list(merged.get("manifests") or [])
    if any(isinstance(m, dict) and m.get("digest") == entry.digest for m in manifests):
        return None
    merged["manifests"] = [*manifests, entry.as_json()]
    return merged


def descriptors_of(index: Mapping[str, Any], where: str) -> list[Descriptor]:
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise ServiceError(f"{where}: not an image index (no manifests list)")
    return [Descriptor.from_json(m, where) for m in manifests]


def same_artifact(
    manifest: Mapping[str, Any], layer: Descriptor, annotations: Mapping[str, str]
) -> bool:
    """Whether an existing artifact manifest carries this payload with these annotations (its
    creation time aside, unless one is asked for)."""
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
        return False
    theirs = manifest.get("annotations") or {}
    if not isinstance(theirs, dict):
        return False
    if CREATED in annotations and theirs.get(CREATED) != annotations[CREATED]:
        return False
    return (
        layers[0].get("digest") == layer.digest
        and layers[0].get("mediaType") == layer.media_type
        and {k: v for k, v in theirs.items() if k != CREATED}
        == {k: v for k, v in annotations.items() if k != CREATED}
    )


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _media_type(response: requests.Response, body: bytes) -> str:
    header = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
    if header in (*IMAGE_MANIFESTS, *INDEXES):
        return header
    try:
        declared = json.loads(body).get("mediaType")
    except (ValueError, AttributeError):
        declared = None
    return declared if isinstance(declared, str) and declared else header


def _quiet_oras() -> None:
    """oras-py logs through `oras.logger` (errors of failed requests, retries, hints): nothing
    of it may reach the job log; our errors say what matters."""
    log = logging.getLogger("oras")
    if not any(isinstance(handler, logging.NullHandler) for handler in log.handlers):
        log.addHandler(logging.NullHandler())
    log.propagate = False


def _docker_config() -> Path:
    """The config.json `docker login` writes: $DOCKER_CONFIG/config.json, else ~/.docker/."""
    directory = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    return Path(directory) / "config.json"


# ----------------------------------------------------------------------------- transport


class _Transport(oras.provider.Registry):  # type: ignore[misc]
    """oras-py's Registry with our request method; every oras call goes through it."""

    def __init__(self, host: str, api_host: str, insecure: bool) -> None:
        super().__init__(hostname=api_host, insecure=insecure, auth_backend="token")
        self.host = host  # as the user wrote it, for messages
        self.api_host = api_host
        self.username = ""
        self.password = ""
        self.authorization = ""
        self.last: requests.Response | None = None

    # The signature is oras-py's: its upload and download methods call this.
    def do_request(
        self,
        url: str,
        method: str = "GET",
        data: Any = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
        stream: bool = False,
    ) -> requests.Response:
        headers = dict(headers or {})
        response = self._send(method, url, data, headers, json, stream)
        if response.status_code == 401 and self._authenticate(response):
            response = self._send(method, url, data, headers, json, stream)
        self.last = response
        if response.status_code in (401, 403):
            raise self._denied(response, method)
        return response

    def _send(
        self, method: str, url: str, data: Any, headers: dict[str, str], body: Any, stream: bool
    ) -> requests.Response:
        for attempt in range(1, ATTEMPTS + 1):
            sent = (
                {**headers, "Authorization": self.authorization} if self.authorization else headers
            )
            try:
                response: requests.Response = self.session.request(
                    method,
                    url,
                    data=data,
                    json=body,
                    headers=sent,
                    stream=stream,
                    verify=self._tls_verify,
                    timeout=TIMEOUT,
                )
            except requests.exceptions.SSLError as error:
                raise ServiceError(
                    f"registry {self.host}: TLS failed ({_reason(error)})",
                    "check its certificate, or point SSL_CERT_FILE / REQUESTS_CA_BUNDLE at the "
                    "CA bundle that signs it; only a loopback registry is spoken to over "
                    "plain HTTP",
                ) from None
            except (requests.ConnectionError, requests.Timeout) as error:
                if attempt == ATTEMPTS:
                    raise ServiceError(
                        f"registry {self.host} is unreachable: {_reason(error)}",
                        "check that it is up and reachable from this runner: host, port, "
                        "network, proxy",
                    ) from None
            else:
                if response.status_code not in RETRY_STATUSES or attempt == ATTEMPTS:
                    return response
                response.close()
            time.sleep(BACKOFF * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _authenticate(self, response: requests.Response) -> bool:
        """Answer a 401's challenge; False when there is nothing new to try."""
        challenge = response.headers.get("Www-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            # oras-py keeps the user:password (given, or from config.json) base64-encoded here.
            basic = getattr(self.auth, "_basic_auth", None)
            authorization = f"Basic {basic}" if basic else ""
        elif scheme == "bearer":
            try:  # oras-py: a token for the challenge's scope, anonymous or with the basic auth
                answer, changed = self.auth.authenticate_request(response, {}, refresh=True)
            except (requests.RequestException, ValueError) as error:
                raise ServiceError(
                    f"registry {self.host}: its token service failed ({_reason(error)})",
                    "check that the registry's token service is reachable from this runner",
                ) from None
            authorization = str(answer.get("Authorization", "")) if changed else ""
        else:
            authorization = ""
        if not authorization or authorization == self.authorization:
            return False
        self.authorization = authorization
        return True

    def has_credentials(self) -> bool:
        return bool(self.username or getattr(self.auth, "_basic_auth", None))

    def _denied(self, response: requests.Response, method: str) -> ConfigError:
        status = response.status_code
        detail = self.registry_message(response)
        path = urllib.parse.urlsplit(response.url).path
        if not self.has_credentials():
            return ConfigError(
                f"registry {self.host} requires authentication (HTTP {status} to {method} "
                f"{path}: {detail}) and no credentials were given",
                "set REGISTRY_USERNAME and REGISTRY_PASSWORD, or run "
                f"`docker login {self.host}` before this step",
            )
        who = f"user {self.username}" if self.username else "the docker login credentials"
        if status == 401:
            return ConfigError(
                f"registry {self.host} refused the credentials of {who} (HTTP 401 to {method} "
                f"{path}: {detail})",
                "check REGISTRY_USERNAME and REGISTRY_PASSWORD, or the `docker login` before "
                "this step: the password or token may be wrong or expired",
            )
        return ConfigError(
            f"registry {self.host} denied {who} access (HTTP {status} to {method} {path}: "
            f"{detail})",
            "check that the account in REGISTRY_USERNAME, or of `docker login`, may push to "
            "and pull from this repository; on ghcr.io a token needs write:packages",
        )

    def registry_message(self, response: requests.Response) -> str:
        """The registry's own error (OCI `errors` JSON, else the start of the body), with any
        credential scrubbed out."""
        text = ""
        try:
            errors = response.json().get("errors")
            if isinstance(errors, list):
                text = "; ".join(
                    f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                    for e in errors
                    if isinstance(e, dict)
                )
        except (ValueError, AttributeError):
            pass
        if not text:
            try:
                text = " ".join(response.text.split())[:300]
            except (requests.RequestException, ValueError):
                text = ""
        text = text or response.reason or "no message"
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return text

    def _secrets(self) -> Iterable[str]:
        for secret in (
            self.password,
            getattr(self.auth, "_basic_auth", None),
            getattr(self.auth, "token", None),
            self.authorization.partition(" ")[2],
        ):
            if isinstance(secret, str) and len(secret) >= 4:
                yield secret


def _reason(error: BaseException) -> str:
    """The short cause of a requests error: `[Errno 111] Connection refused` → that."""
    text = str(error)
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text) or re.search(
        r"\[SSL: [A-Z_]+\] ([^'\")(]+)", text
    )
    if match:
        return match.group(1).strip()
    if isinstance(error, requests.Timeout):
        return "timed out"
    return type(error).__name__


# ----------------------------------------------------------------------------- the client


class OciRegistry:
    """A registry client for images and the OCI artifacts that refer to them.

    With a username, basic credentials (a password or token); without one, those of an
    earlier `docker login` for the host, if any (a password alone is not used). `insecure`
    None: plain HTTP for a loopback host, HTTPS elsewhere."""

    def __init__(
        self, host: str, username: str = "", password: str = "", insecure: bool | None = None
    ) -> None:
        if not host or "/" in host or " " in host:
            raise ConfigError(f"{host!r} is not a registry host", "pass host[:port], e.g. ghcr.io")
        if username and not password:
            raise ConfigError(
                f"registry {host}: a username is given (REGISTRY_USERNAME) but no password",
                "pass the password or token in REGISTRY_PASSWORD, or neither, to use the "
                "credentials of `docker login`",
            )
        _quiet_oras()
        self.host = host
        api_host = "registry-1.docker.io" if host == "docker.io" else host
        self._http = _Transport(
            host, api_host, default_insecure(host) if insecure is None else insecure
        )
        if username:
            self._http.username, self._http.password = username, password
            self._http.auth.set_basic_auth(username, password)
        else:
            self._load_docker_login()

    def _load_docker_login(self) -> None:
        """The credentials of an earlier `docker login` for this host, through oras-py (inline
        `auth`, credHelpers, credsStore), from the one config.json Docker reads."""
        path = _docker_config()
        if not path.is_file():
            return
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"cannot read the docker login credentials in {path}: {type(error).__name__}",
                "fix or remove that file, or pass REGISTRY_USERNAME and REGISTRY_PASSWORD",
            ) from None
        auths = dict(config.get("auths") or {}) if isinstance(config, dict) else {}
        if self.host == "docker.io":
            for key in ("https://index.docker.io/v1/", "index.docker.io", "docker.io"):
                if key in auths:
                    auths.setdefault(self._http.api_host, auths[key])
        self._http.auth._auth_config = {
            "auths": auths,
            "credsStore": config.get("credsStore") if isinstance(config, dict) else None,
            "credHelpers": dict(config.get("credHelpers") or {})
            if isinstance(config, dict)
            else {},
        }
        self._http.auth.load_configs(self._container("_"))

    # --------------------------------------------------------------- images

    def manifest_descriptor(self, repository: str, reference: str) -> Descriptor:
        """The descriptor of the manifest (image, OCI or Docker, or index) a tag or digest
        names."""
        path = self._path(repository)
        _check_reference(reference)
        found = self._get_manifest(path, reference, (*IMAGE_MANIFESTS, *INDEXES))
        if found is None:
            separator = "@" if _DIGEST.match(reference) else ":"
            raise ConfigError(
                f"image {repository}{separator}{reference} is not in registry {self.host}",
                "push it first, or check the repository, tag and digest",
            )
        body, media_type = found
        return Descriptor(media_type, digest_of(body), len(body))

    def image_config(self, repository: str, digest: str) -> dict[str, Any]:
        """The image config JSON (labels: config["config"]["Labels"]); for an index, that of
        its first linux image."""
        path = self._path(repository)
        _check_digest(digest)
        manifest, media_type = self._manifest_json(path, repository, digest)
        if media_type in INDEXES or "manifests" in manifest:
            entries = descriptors_of(manifest, f"index {repository}@{digest}")
            raw = manifest["manifests"]
            linux = [
                entry
                for entry, data in zip(entries, raw, strict=True)
                if (data.get("platform") or {}).get("os") == "linux"
                and (data.get("platform") or {}).get("architecture") != "unknown"
            ]
            if not linux:
                raise ConfigError(
                    f"index {repository}@{digest} lists no linux image",
                    "pass the digest of a linux serving image",
                )
            manifest, media_type = self._manifest_json(path, repository, linux[0].digest)
        if media_type not in IMAGE_MANIFESTS and "config" not in manifest:
            raise ConfigError(
                f"{repository}@{digest} is a {media_type or 'manifest'}, not an image",
                "pass the digest of a serving image",
            )
        config = Descriptor.from_json(manifest.get("config"), f"manifest {repository}@{digest}")
        data = self._get_blob(path, config, f"image config of {repository}@{digest}")
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ServiceError(f"image config of {repository}@{digest} is not a JSON object")
        return parsed

    # --------------------------------------------------------------- artifacts

    def attach(
        self,
        repository: str,
        subject: Descriptor,
        artifact_type: str,
        payload: bytes,
        payload_media_type: str,
        annotations: Mapping[str, str],
    ) -> Descriptor:
        """Push `payload` as an OCI artifact whose subject is `subject`, and make it a referrer
        of it; the artifact manifest's descriptor. Idempotent: an artifact of this type already
        referring to the subject with the same payload and annotations (the creation time
        aside) is returned instead of pushing another."""
        path = self._path(repository)
        _check_digest(subject.digest)
        if not artifact_type or not payload_media_type:
            raise ConfigError("an artifact needs an artifact type and a payload media type")
        wanted = {str(k): str(v) for k, v in annotations.items()}
        layer = Descriptor(payload_media_type, digest_of(payload), len(payload))
        for existing in self.referrers(repository, subject.digest, artifact_type):
            manifest = self._manifest_json(path, repository, existing.digest, missing_ok=True)
            if manifest is not None and same_artifact(manifest[0], layer, wanted):
                return existing
        self._push_blob(path, EMPTY_JSON, EMPTY_MEDIA_TYPE)
        self._push_blob(path, payload, payload_media_type)
        manifest = artifact_manifest(subject, artifact_type, layer, {CREATED: _now(), **wanted})
        body = canonical_json(manifest)
        pushed, supports_referrers = self._put_manifest(path, digest_of(body), body, OCI_MANIFEST)
        artifact = replace(pushed, artifact_type=artifact_type, annotations=manifest["annotations"])
        if not supports_referrers:
            self._add_to_referrers_tag(path, repository, subject.digest, artifact)
        return artifact

    def referrers(
        self, repository: str, subject_digest: str, artifact_type: str = ""
    ) -> list[Descriptor]:
        """The artifacts that refer to a digest, of one type if given; [] when none do."""
        path = self._path(repository)
        _check_digest(subject_digest)
        where = f"referrers of {repository}@{subject_digest}"
        index = self._referrers_api(path, subject_digest, artifact_type)
        if index is None:  # no referrers API: the tag schema
            found = self._manifest_json(
                path, repository, referrers_tag(subject_digest), missing_ok=True
            )
            index = found[0] if found is not None else {"manifests": []}
        found_all = descriptors_of(index, where)
        return [d for d in found_all if not artifact_type or d.artifact_type == artifact_type]

    def fetch(self, repository: str, artifact: Descriptor) -> tuple[dict[str, Any], bytes]:
        """The artifact manifest and its one layer's bytes, both checked against their
        digests and sizes."""
        path = self._path(repository)
        _check_digest(artifact.digest)
        where = f"artifact {repository}@{artifact.digest}"
        found = self._get_manifest(path, artifact.digest, (artifact.media_type or OCI_MANIFEST,))
        if found is None:
            raise ServiceError(
                f"registry {self.host} has no manifest for {where}",
                "it was listed as a referrer but is gone: attach it again",
            )
        body, _ = found
        verify_digest(body, artifact.digest, artifact.size, f"manifest of {where}")
        manifest = _json_object(body, f"manifest of {where}")
        layers = manifest.get("layers")
        if not isinstance(layers, list) or len(layers) != 1:
            raise ServiceError(
                f"{where} has {len(layers) if isinstance(layers, list) else 'no'} layers, "
                "not the one an attached document has",
                "attach the document again with mlops-actions",
            )
        layer = Descriptor.from_json(layers[0], f"manifest of {where}")
        return manifest, self._get_blob(path, layer, f"payload of {where}")

    # --------------------------------------------------------------- primitives

    def push_blob(self, repository: str, data: bytes, media_type: str) -> Descriptor:
        """Upload a blob (skipped when the repository has it); its descriptor."""
        return self._push_blob(self._path(repository), data, media_type)

    def push_manifest(
        self, repository: str, body: bytes, media_type: str, reference: str = ""
    ) -> Descriptor:
        """PUT a manifest or index under a tag, or its digest when no reference is given."""
        path = self._path(repository)
        if reference:
            _check_reference(reference)
        return self._put_manifest(path, reference or digest_of(body), body, media_type)[0]

    def _path(self, repository: str) -> str:
        """The repository's name inside the registry: `127.0.0.1:5000/acme/x` → `acme/x`."""
        host = registry_of(repository)
        if host != self.host:
            raise ConfigError(
                f"repository {repository} is on registry {host}, not {self.host}",
                "pass the full repository, registry host first, e.g. ghcr.io/acme/iris-serving",
            )
        path = repository.removeprefix(f"{host}/")
        if host == "docker.io" and "/" not in path:
            path = f"library/{path}"
        if not _PATH.match(path):
            raise ConfigError(
                f"repository {repository}: {path!r} is not a valid repository name",
                "lowercase letters, digits and . _ - separators, components joined by /, "
                "and no tag or digest",
            )
        return path

    def _container(self, path: str) -> Any:
        """oras-py's Container for a path, built field by field: its parser would take a
        first component with a dot (`my.team/x`) for a registry."""
        container = oras.container.Container("_", registry=self._http.api_host)
        namespace, _, name = path.rpartition("/")
        container.namespace = namespace or None
        container.repository = name
        return container

    def _url(self, path: str, suffix: str) -> str:
        return f"{self._http.prefix}://{self._http.api_host}/v2/{path}/{suffix}"

    def _get_manifest(
        self, path: str, reference: str, accept: Sequence[str]
    ) -> tuple[bytes, str] | None:
        """A manifest's bytes and media type (checked against a digest reference); None when
        the registry has no such manifest."""
        response = self._http.do_request(
            self._url(path, f"manifests/{reference}"),
            "GET",
            headers={"Accept": ", ".join(accept)},
            stream=True,
        )
        with response:
            if response.status_code == 404:
                return None
            self._expect_ok(response, f"reading manifest {reference} of {path}")
            body = _read(response, MAX_MANIFEST_BYTES)
            media_type = _media_type(response, body)
        if len(body) > MAX_MANIFEST_BYTES:
            raise ServiceError(
                f"manifest {reference} of {path} is over {MAX_MANIFEST_BYTES} bytes",
                "that is no manifest this client pushed or reads",
            )
        if _DIGEST.match(reference):
            verify_digest(body, reference, None, f"manifest {path}@{reference}")
        return body, media_type

    def _manifest_json(
        self, path: str, repository: str, reference: str, missing_ok: bool = False
    ) -> Any:
        found = self._get_manifest(path, reference, (*IMAGE_MANIFESTS, *INDEXES))
        if found is None:
            if missing_ok:
                return None
            raise ConfigError(
                f"{repository}@{reference} is not in registry {self.host}",
                "push the image first, or check the repository and digest",
            )
        body, media_type = found
        return _json_object(body, f"manifest {repository}@{reference}"), media_type

    def _get_blob(self, path: str, descriptor: Descriptor, what: str) -> bytes:
        if descriptor.size > MAX_BLOB_BYTES:
            raise ServiceError(f"{what} is {descriptor.size} bytes: too large to read")
        response = self._http.get_blob(self._container(path), descriptor.digest, stream=True)
        with response:
            if response.status_code == 404:
                raise ServiceError(
                    f"registry {self.host} has no blob {descriptor.digest} ({what})",
                    "the artifact is incomplete: attach it again",
                )
            self._expect_ok(response, f"reading {what}")
            data = _read(response, descriptor.size)
        verify_digest(data, descriptor.digest, descriptor.size, what)
        return data

    def _push_blob(self, path: str, data: bytes, media_type: str) -> Descriptor:
        descriptor = Descriptor(media_type, digest_of(data), len(data))
        layer = {"mediaType": media_type, "digest": descriptor.digest, "size": descriptor.size}
        what = f"the blob {descriptor.digest} ({media_type})"
        self._http.last = None
        with tempfile.TemporaryDirectory(prefix="mlops-actions-blob-") as directory:
            blob = Path(directory) / "blob"
            blob.write_bytes(data)
            try:
                response = self._http.upload_blob(str(blob), self._container(path), layer)
            except ValueError:  # oras-py: the upload session (POST) got no Location
                refused = self._http.last
                if refused is None or refused.ok:
                    raise ServiceError(
                        f"registry {self.host} gave no upload location for {what}"
                    ) from None
                raise self._refused(refused, what) from None
        if response.status_code not in (200, 201, 202):
            raise self._refused(response, what)
        return descriptor

    def _put_manifest(
        self, path: str, reference: str, body: bytes, media_type: str
    ) -> tuple[Descriptor, bool]:
        """PUT a manifest; its descriptor and whether the registry indexes its subject itself
        (it answers with an `OCI-Subject` header: the OCI 1.1 referrers API)."""
        response = self._http.do_request(
            self._url(path, f"manifests/{reference}"),
            "PUT",
            data=body,
            headers={"Content-Type": media_type},
        )
        if response.status_code not in (200, 201):
            raise self._refused(response, f"the {media_type} manifest {reference}")
        descriptor = Descriptor(media_type, digest_of(body), len(body))
        stored = response.headers.get("Docker-Content-Digest", descriptor.digest)
        if stored != descriptor.digest:
            raise DigestMismatch(
                f"registry {self.host} stored manifest {reference} of {path} as {stored}, "
                f"not {descriptor.digest}",
                "the registry rewrote the manifest: it cannot hold verifiable artifacts",
            )
        return descriptor, "OCI-Subject" in response.headers

    def _referrers_api(self, path: str, digest: str, artifact_type: str) -> dict[str, Any] | None:
        """GET /v2/<name>/referrers/<digest>, following pages; None when the registry has no
        referrers API (anything but 200 with an image index, 5xx aside)."""
        query = (
            f"?{urllib.parse.urlencode({'artifactType': artifact_type})}" if artifact_type else ""
        )
        url = self._url(path, f"referrers/{digest}{query}")
        merged: dict[str, Any] | None = None
        while url:
            response = self._http.do_request(url, "GET", headers={"Accept": OCI_INDEX})
            if response.status_code >= 500:
                self._expect_ok(response, f"listing the referrers of {path}@{digest}")
            content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
            if response.status_code != 200 or content_type != OCI_INDEX:
                return merged
            page = _json_object(response.content, f"referrers of {path}@{digest}")
            if merged is None:
                merged = page
            else:
                merged["manifests"] = [*merged.get("manifests", []), *page.get("manifests", [])]
            link = response.links.get("next", {}).get("url", "")
            url = urllib.parse.urljoin(response.url, link) if link else ""
        return merged

    def _add_to_referrers_tag(
        self, path: str, repository: str, subject_digest: str, artifact: Descriptor
    ) -> None:
        """Read-modify-write the referrers tag of the subject: its index keeps every entry
        and gains this one, once."""
        tag = referrers_tag(subject_digest)
        found = self._manifest_json(path, repository, tag, missing_ok=True)
        index = None
        if found is not None:
            index, media_type = found
            if media_type != OCI_INDEX or not isinstance(index.get("manifests"), list):
                raise ServiceError(
                    f"tag {tag} of {repository} holds a {media_type or 'manifest'}, not the "
                    f"referrers index of {subject_digest}",
                    "that tag is reserved for the OCI referrers tag schema: delete it",
                )
        merged = merge_index(index, artifact)
        if merged is not None:
            self._put_manifest(path, tag, canonical_json(merged), OCI_INDEX)

    def _expect_ok(self, response: requests.Response, doing: str) -> None:
        if response.status_code != 200:
            raise ServiceError(
                f"registry {self.host} answered HTTP {response.status_code} to {doing}: "
                f"{self._http.registry_message(response)}",
                "check that the registry is healthy; retry the job",
            )

    def _refused(self, response: requests.Response, what: str) -> MlopsError:
        status = response.status_code
        message = self._http.registry_message(response)
        if status >= 500:
            return ServiceError(
                f"registry {self.host} failed storing {what} (HTTP {status}: {message})",
                "check that the registry is healthy; retry the job",
            )
        return ArtifactRefused(
            f"registry {self.host} refused {what} (HTTP {status}: {message})",
            "the registry may not accept OCI artifacts (OCI image-spec 1.1 manifests with an "
            "artifactType and subject): use a registry that does, or turn attestations off",
        )


def _check_digest(digest: str) -> None:
    if not _DIGEST.match(digest):
        raise ConfigError(
            f"{digest!r} is not a digest", "pass sha256:<64 hex digits>, as `docker push` prints"
        )


def _check_reference(reference: str) -> None:
    if not (_DIGEST.match(reference) or _TAG.match(reference)):
        raise ConfigError(
            f"{reference!r} is neither a tag nor a digest",
            "a tag is up to 128 letters, digits, _ . -; a digest is sha256:<64 hex digits>",
        )


def _read(response: requests.Response, limit: int) -> bytes:
    """The body, but no more than `limit` + 1 bytes: a registry cannot make us read forever,
    and one byte too many is enough to tell a size mismatch."""
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_content(chunk_size=65536):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            break
    return b"".join(chunks)[: limit + 1]


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ServiceError(f"{what} is not a JSON object")
    return parsed
