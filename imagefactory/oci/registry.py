"""An OCI registry through oras-py: push an image directory, fetch blobs by digest.

oras-py does the transport and auth (token handshakes, chunked uploads); the
manifests are built in :mod:`imagefactory.oci.manifests` and every digest is
checked here: a pushed blob must exist with its digest and size, a pushed
manifest must come back as the bytes we sent. Reading a blob goes through
:func:`imagefactory.store.transport.download` like any other download (capped
at the signed length, hashed while it streams), by the digest the catalog's
descriptor names -- never by a tag.

A registry reached at ``127.0.0.1`` or ``localhost`` is spoken to over plain
HTTP (tests, a site-local mirror); any other over HTTPS unless ``insecure``.
"""

from __future__ import annotations

import json
import os
import tempfile
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import requests.adapters

from imagefactory.errors import TransportError
from imagefactory.model.imagedir import ImageDir
from imagefactory.oci.credentials import PASSWORD_VAR, USER_VAR, Credentials, find_credentials
from imagefactory.oci.manifests import (
    CONFIG_TYPE,
    DISK_TYPES,
    EMPTY,
    EMPTY_TYPE,
    INDEX,
    MANIFEST,
    Blob,
    digest_of,
    disk_layer_annotations,
    disk_manifest,
    fallback_tag,
    referrer_manifest,
    referrer_type,
    referrers_index,
)
from imagefactory.oci.tokens import BearerTokens

#: Larger blobs go up in chunks (oras-py's POST, PATCH..., PUT) instead of one read.
CHUNKED_ABOVE = 64 * 1024 * 1024
CHUNK = 1024 * 1024


def _local(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    return name in ("127.0.0.1", "localhost", "[::1]")


@dataclass
class Pushed:
    """What a push put where: every digest, to go into the catalog's descriptor."""

    repository: str
    manifest: str
    #: file name -> ``repository@digest`` of its blob.
    blobs: dict[str, str] = field(default_factory=dict)
    #: referrer manifests (attestations, SBOM) -> their digests.
    referrers: list[str] = field(default_factory=list)
    #: ``native`` (the registry's referrers API) or ``fallback-tag``.
    referrers_via: str = "fallback-tag"

    def oci_refs(self) -> dict[str, str]:
        return {**self.blobs, "manifest": f"{self.repository}@{self.manifest}"}


#: What an older tool may have left under a fallback tag (seen, so it is not overwritten).
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


class _Timeouts(requests.adapters.HTTPAdapter):
    """Every request of the session gets ``timeout`` unless it names its own."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def send(self, request: Any, **kw: Any) -> requests.Response:  # type: ignore[override]
        if kw.get("timeout") is None:
            kw["timeout"] = self._timeout
        response: requests.Response = super().send(request, **kw)
        return response


class Registry:
    """One repository of a registry: ``host[:port]/path/name``.

    The first request asks ``/v2/`` how the registry authenticates (nothing,
    HTTP Basic, or a token service) and sets oras-py up for it with the
    :mod:`credentials <imagefactory.oci.credentials>` found for the host;
    every later request, oras-py's uploads included, goes through that one
    session, with the timeout.
    """

    def __init__(
        self,
        reference: str,
        *,
        insecure: bool | None = None,
        timeout: float = 30.0,
        credentials: Credentials | None = None,
    ):
        host, _, path = reference.partition("/")
        if not host or not path or "@" in path or ":" in path:
            raise TransportError(
                f"{reference!r}: an OCI repository is HOST[:PORT]/PATH (no tag or digest)",
                code="oci-reference",
            )
        self.host = host
        self.path = path
        self.repository = reference
        self.insecure = _local(host) if insecure is None else insecure
        self.scheme = "http" if self.insecure else "https"
        self.timeout = timeout
        self.credentials = credentials if credentials is not None else find_credentials(host)
        self._oras: Any = None
        self._tokens: BearerTokens | None = None

    @property
    def oras(self) -> Any:
        """oras-py's registry client, set up for this registry's authentication."""
        if self._oras is None:
            self._oras = self._connect()
        return self._oras

    def _connect(self) -> Any:
        import oras.provider

        url = f"{self.scheme}://{self.host}/v2/"
        try:
            probe = requests.get(url, timeout=self.timeout)
        except requests.Timeout as exc:
            raise TransportError(
                f"{url}: no answer within {self.timeout:g}s", code="transport-timeout"
            ) from exc
        except requests.RequestException as exc:
            raise TransportError(f"{url}: {exc}", code="transport-unreachable") from exc
        challenge = probe.headers.get("WWW-Authenticate", "") if probe.status_code == 401 else ""
        scheme = challenge.partition(" ")[0].lower()
        if scheme not in ("", "basic", "bearer"):
            raise self._unauthorised(f"asks for {scheme!r} authentication, which is not supported")
        if scheme == "basic" and self.credentials is None:
            raise self._unauthorised("asks for a user name and password and none was found")
        client = oras.provider.Registry(
            hostname=self.host,
            insecure=self.insecure,
            auth_backend="basic" if scheme == "basic" else "token",
        )
        if scheme != "basic":
            # oras-py's own token backend re-sends a refused token; ours asks for a new one.
            tokens = BearerTokens(allow_http=self.insecure)
            tokens.session, tokens.prefix = client.session, self.scheme
            tokens._tls_verify = client.auth._tls_verify
            client.auth = self._tokens = tokens
            client.session.hooks["response"].append(tokens.note_refusal)
        # oras-py retries every failed request five times, sleeping 3 to 83 s between
        # tries (131 s in all): a refusal or a stalled registry would look like a hang.
        # Every request here is tried once, with the session's timeout.
        client.do_request = types.MethodType(oras.provider.Registry.do_request.__wrapped__, client)
        if self.credentials is not None:
            client.auth.set_basic_auth(self.credentials.username, self.credentials.password)
        adapter = _Timeouts(self.timeout)
        client.session.mount("http://", adapter)
        client.session.mount("https://", adapter)
        return client

    def _unauthorised(self, why: str, detail: object = None) -> TransportError:
        problem = self._tokens.problem if self._tokens is not None else None
        if problem is None and detail is not None:
            problem = str(detail)
        if self.credentials is not None:
            given = f" (credentials from {self.credentials.source})"
        else:
            given = (
                f" (no credentials found: ${USER_VAR}, $REGISTRY_AUTH_FILE and"
                " ~/.docker/config.json name none for it)"
            )
        return TransportError(
            f"registry {self.host} {why}{': ' + problem if problem else ''}{given}",
            code="oci-unauthorised",
            hint=f"set {USER_VAR} and {PASSWORD_VAR} (a CI job maps its registry token onto"
            " them), or log in with docker login / podman login; pushing needs push"
            " permission on the repository",
        )

    # -- low level -----------------------------------------------------------------

    def _url(self, kind: str, reference: str) -> str:
        return f"{self.scheme}://{self.host}/v2/{self.path}/{kind}/{reference}"

    def _request(self, method: str, url: str, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        try:
            response: requests.Response = self.oras.do_request(url, method, headers=headers, **kw)
        except ValueError as exc:  # oras-py: "Cannot respond to request for authentication."
            raise self._unauthorised("refused the request", exc) from exc
        except requests.Timeout as exc:
            raise TransportError(
                f"{url}: no answer within {self.timeout:g}s", code="transport-timeout"
            ) from exc
        except requests.RequestException as exc:
            raise TransportError(f"{url}: {exc}", code="transport-unreachable") from exc
        if response.status_code in (401, 403):
            response.close()
            raise self._unauthorised(f"refused {method} {url}: HTTP {response.status_code}")
        return response

    def push_blob(self, path: Path, blob: Blob) -> None:
        """Upload ``path`` as ``blob`` (unless the registry has it), then check it is there."""
        try:
            response = self.oras.upload_blob(
                str(path),
                self.oras.get_container(self.repository),
                blob.to_dict(),
                do_chunked=blob.size > CHUNKED_ABOVE,
            )
        except ValueError as exc:
            raise self._unauthorised("refused the blob upload", exc) from exc
        except requests.RequestException as exc:
            raise TransportError(f"{self.repository}: blob upload failed: {exc}") from exc
        if response.status_code in (401, 403):
            raise self._unauthorised(f"refused the blob upload: HTTP {response.status_code}")
        if response.status_code not in (200, 201, 202):
            raise TransportError(
                f"{self.repository}: blob {blob.digest} refused: HTTP {response.status_code}"
            )
        head = self._request("HEAD", self._url("blobs", blob.digest))
        size = head.headers.get("Content-Length")
        if head.status_code != 200 or (size is not None and int(size) != blob.size):
            raise TransportError(
                f"{self.repository}: blob {blob.digest} is not in the registry with its size"
                f" {blob.size} after the upload",
                code="transport-digest-mismatch",
            )

    def push_manifest(self, data: bytes, media_type: str, reference: str | None = None) -> str:
        """PUT ``data`` as a manifest (by tag, or by its digest); returns its checked digest."""
        digest = digest_of(data)
        response = self._request(
            "PUT",
            self._url("manifests", reference or digest),
            data=data,
            headers={"Content-Type": media_type},
        )
        if response.status_code not in (200, 201):
            raise TransportError(
                f"{self.repository}: manifest refused: HTTP {response.status_code}"
                f" {response.text[:300]}"
            )
        echoed = response.headers.get("Docker-Content-Digest")
        if echoed is not None and echoed != digest:
            raise TransportError(
                f"{self.repository}: the registry stored the manifest as {echoed}, not {digest}",
                code="transport-digest-mismatch",
            )
        back = self.get_manifest(digest, media_type)
        if back != data:
            raise TransportError(
                f"{self.repository}: manifest {digest} reads back as other bytes",
                code="transport-digest-mismatch",
            )
        return digest

    def get_manifest(self, reference: str, media_type: str = MANIFEST) -> bytes:
        response = self._request(
            "GET", self._url("manifests", reference), headers={"Accept": media_type}
        )
        if response.status_code != 200:
            raise TransportError(
                f"{self.repository}: manifest {reference}: HTTP {response.status_code}",
                code="transport-not-found" if response.status_code == 404 else "transport-http",
            )
        data = response.content
        if reference.startswith("sha256:") and digest_of(data) != reference:
            raise TransportError(
                f"{self.repository}: manifest {reference} has another digest",
                code="transport-digest-mismatch",
            )
        return data

    def fallback_index(self, tag: str) -> list[dict[str, Any]]:
        """The referrers already listed under a fallback tag (none if the tag is not there).

        Other tools (cosign, a scanner) may have listed their referrers of the
        same manifest there: the index is extended, never replaced. An index
        that cannot be understood is refused rather than overwritten.
        """
        try:
            data = self.get_manifest(tag, f"{INDEX}, {DOCKER_LIST}, {MANIFEST}")
        except TransportError as exc:
            if exc.code == "transport-not-found":
                return []
            raise
        problem = _index_problem(data)
        if problem is not None:
            raise TransportError(
                f"{self.repository}:{tag}: the referrers fallback index there is not an OCI"
                f" image index ({problem}); it was left as it is",
                code="oci-fallback-index",
                hint="look at what wrote it; delete the tag if it is garbage, then publish again",
            )
        manifests: list[dict[str, Any]] = json.loads(data)["manifests"]
        return manifests

    def referrers_api(self, subject: str) -> bool:
        """Whether the registry answers the OCI 1.1 referrers API (404: it does not)."""
        response = self._request("GET", self._url("referrers", subject), headers={"Accept": INDEX})
        return response.status_code == 200

    # -- reading blobs (a download source) ---------------------------------------

    def url(self, relpath: str) -> str:
        return self._url("blobs", relpath.rpartition("@")[2])

    def open(self, relpath: str, offset: int = 0) -> tuple[Iterator[bytes], int]:
        """Chunks of the blob ``REPOSITORY@DIGEST`` from ``offset`` on (a Range request)."""
        repository, _, digest = relpath.rpartition("@")
        if repository != self.repository or not digest.startswith("sha256:"):
            raise TransportError(
                f"{relpath}: not a blob of {self.repository} by digest", code="transport-path"
            )
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self._request("GET", self.url(relpath), headers=headers, stream=True)
        if response.status_code not in (200, 206):
            response.close()
            raise TransportError(
                f"{self.url(relpath)}: HTTP {response.status_code}",
                code="transport-not-found" if response.status_code == 404 else "transport-http",
            )
        start = offset if response.status_code == 206 else 0

        def chunks() -> Iterator[bytes]:
            with response:
                try:
                    yield from response.iter_content(CHUNK)
                except requests.RequestException as exc:
                    code = "transport-timeout" if "timed out" in str(exc) else "transport-truncated"
                    raise TransportError(f"{self.url(relpath)}: {exc}", code=code) from exc

        return chunks(), start


def _index_problem(data: bytes) -> str | None:
    """Why ``data`` is not an OCI image index whose entries have digests; ``None`` if it is."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        return f"not JSON: {exc}"
    if not isinstance(doc, dict) or doc.get("mediaType", INDEX) != INDEX:
        kind = doc.get("mediaType") if isinstance(doc, dict) else type(doc).__name__
        return f"media type {kind!r}"
    manifests = doc.get("manifests")
    if not isinstance(manifests, list) or not all(
        isinstance(m, dict) and isinstance(m.get("digest"), str) for m in manifests
    ):
        return "no list of manifests with digests"
    return None


def push_image(image: ImageDir, registry: Registry) -> Pushed:
    """Push the disk manifest, then each attestation and the SBOM as its referrer."""
    labels = image.labels
    fmt = image.declared_format
    disk = Blob(
        DISK_TYPES[fmt],
        "sha256:" + str(labels["disk"]["sha256"]),
        image.disk.stat().st_size,
        disk_layer_annotations(labels, image.disk.name),
    )
    config = Blob(
        CONFIG_TYPE, digest_of(image.labels_path.read_bytes()), image.labels_path.stat().st_size
    )
    registry.push_blob(image.disk, disk)
    registry.push_blob(image.labels_path, config)
    manifest = disk_manifest(labels, config, disk)
    tag = f"{labels['image']['version']}-{fmt}"
    manifest_digest = registry.push_manifest(manifest, MANIFEST, tag)
    pushed = Pushed(registry.repository, manifest_digest)
    pushed.blobs[image.disk.name] = f"{registry.repository}@{disk.digest}"
    pushed.blobs[image.labels_path.name] = f"{registry.repository}@{config.digest}"
    subject = Blob(MANIFEST, manifest_digest, len(manifest))
    with tempfile.NamedTemporaryFile(prefix="oci-empty-", delete=False) as empty:
        empty.write(EMPTY)
    try:
        registry.push_blob(Path(empty.name), Blob(EMPTY_TYPE, digest_of(EMPTY), len(EMPTY)))
    finally:
        os.unlink(empty.name)
    listed: list[tuple[Blob, str]] = []
    for path in [image.sbom, image.audit, *image.attestations()]:
        data = path.read_bytes()
        kind = referrer_type(path.name)
        layer = Blob(
            kind, digest_of(data), len(data), {"org.opencontainers.image.title": path.name}
        )
        registry.push_blob(path, layer)
        ref = referrer_manifest(kind, subject, layer)
        ref_digest = registry.push_manifest(ref, MANIFEST)
        pushed.blobs[path.name] = f"{registry.repository}@{layer.digest}"
        pushed.referrers.append(ref_digest)
        listed.append((Blob(MANIFEST, ref_digest, len(ref)), kind))
    if registry.referrers_api(manifest_digest):
        pushed.referrers_via = "native"
    else:
        tag = fallback_tag(manifest_digest)
        present = registry.fallback_index(tag)
        registry.push_manifest(referrers_index(listed, present), INDEX, tag)
    return pushed
