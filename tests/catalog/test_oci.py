"""OCI: push to a real docker-registry on 127.0.0.1, publish its digests, pull by digest.

docker-registry 2.8 has no referrers API, so pushes take the fallback-tag
branch; the native branch runs against a small proxy in front of it that
answers the referrers API and forwards everything else.
"""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from imagefactory.catalog.publish import publish_with_registry
from imagefactory.errors import TransportError
from imagefactory.model.imagedir import load_image_dir
from imagefactory.oci.manifests import (
    ARTIFACT_TYPE,
    CONFIG_TYPE,
    INDEX,
    MANIFEST,
    Blob,
    digest_of,
    fallback_tag,
    referrer_manifest,
)
from imagefactory.oci.registry import Registry, push_image
from tests.catalog.world import World, make_world

KEY = "atlas/atlas-wn/1.0"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def _get(url: str, accept: str = MANIFEST) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_push_lays_the_disk_out_as_distribution_md_says(world: World, registry: str) -> None:
    image = load_image_dir(world.image())
    pushed = push_image(image, Registry(f"{registry}/atlas/atlas-wn"))
    status, body = _get(f"http://{registry}/v2/atlas/atlas-wn/manifests/1.0-raw")
    assert status == 200
    manifest: dict[str, Any] = json.loads(body)
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == CONFIG_TYPE
    assert manifest["config"]["digest"] == pushed.blobs["labels.json"].rpartition("@")[2]
    [layer] = manifest["layers"]
    assert layer["digest"] == "sha256:" + image.labels["disk"]["sha256"]
    assert layer["annotations"]["org.openstack.glance.disk_format"] == "raw"
    assert layer["annotations"]["org.openstack.glance.os_distro"] == "debian"
    assert layer["annotations"]["eu.egi.cloud.tag"] == "1.0"
    assert manifest["annotations"]["org.opencontainers.image.version"] == "1.0"
    assert pushed.referrers_via == "fallback-tag"
    tag = fallback_tag(pushed.manifest)
    status, body = _get(f"http://{registry}/v2/atlas/atlas-wn/manifests/{tag}", INDEX)
    assert status == 200
    index = json.loads(body)
    assert sorted(m["digest"] for m in index["manifests"]) == sorted(pushed.referrers)
    for digest in pushed.referrers:
        _, ref_body = _get(f"http://{registry}/v2/atlas/atlas-wn/manifests/{digest}")
        assert json.loads(ref_body)["subject"]["digest"] == pushed.manifest


def test_publish_with_a_registry_names_every_digest_and_pull_fetches_by_digest(
    world: World, registry: str
) -> None:
    published, pushed = publish_with_registry(world.catalog, world.image(), f"{registry}/atlas")
    descriptor = published.descriptor
    assert descriptor.oci_manifest == f"{registry}/atlas/atlas-wn@{pushed.manifest}"
    assert all(f.oci is not None for f in descriptor.files)
    assert descriptor.to_dict()["oci_referrers"] == pushed.referrers
    # The disks beside the catalog are gone: only the registry has the bytes.
    shutil.rmtree(world.catalog.images_dir)
    result = world.pull(oci=True)
    assert result.by_action("installed") == [KEY]
    assert result.image_bytes > 0


def test_a_registry_serving_other_bytes_for_a_digest_is_refused(
    world: World, registry: str, tmp_path: Path
) -> None:
    published, _ = publish_with_registry(world.catalog, world.image(), f"{registry}/atlas")
    digest = published.descriptor.disk.hashes["sha256"]
    data = tmp_path / "registry-data/docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
    blob = bytearray(data.read_bytes())
    blob[10] ^= 0xFF
    data.write_bytes(bytes(blob))
    result = world.pull(oci=True)
    assert [e.code for e in result.events if e.image == KEY] == ["transport-digest-mismatch"]
    assert world.installed() == []


class _ReferrersProxy:
    """Forwards to the real registry; answers ``/v2/.../referrers/<digest>`` itself."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.asked: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                if "/referrers/" in self.path:
                    proxy.asked.append(self.path)
                    body = json.dumps(
                        {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}
                    ).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", INDEX)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                request = urllib.request.Request(
                    f"http://{proxy.upstream}{self.path}",
                    data=data,
                    headers=headers,
                    method=self.command,
                )
                try:
                    response = urllib.request.urlopen(request, timeout=10)  # noqa: S310
                except urllib.error.HTTPError as exc:
                    response = exc
                with response:
                    body = response.read()
                    self.send_response(response.status)
                    for k, v in response.headers.items():
                        if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                            value = v.replace(f"http://{proxy.upstream}", "")
                            self.send_header(k, value)
                    length = response.headers.get("Content-Length", "0")
                    self.send_header(
                        "Content-Length", length if self.command == "HEAD" else str(len(body))
                    )
                    self.end_headers()
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_HEAD = do_PATCH = _forward

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def native_registry(registry: str) -> Iterator[_ReferrersProxy]:
    proxy = _ReferrersProxy(registry)
    yield proxy
    proxy.httpd.shutdown()
    proxy.httpd.server_close()


def test_a_registry_with_the_referrers_api_gets_no_fallback_tag(
    world: World, native_registry: _ReferrersProxy
) -> None:
    image = load_image_dir(world.image())
    pushed = push_image(image, Registry(f"{native_registry.address}/atlas/atlas-wn"))
    assert pushed.referrers_via == "native"
    assert native_registry.asked == [f"/v2/atlas/atlas-wn/referrers/{pushed.manifest}"]
    status, _ = _get(
        f"http://{native_registry.upstream}/v2/atlas/atlas-wn/manifests/"
        f"{fallback_tag(pushed.manifest)}",
        INDEX,
    )
    assert status == 404


def _put_index(registry: str, tag: str, body: bytes, media_type: str = INDEX) -> None:
    request = urllib.request.Request(
        f"http://{registry}/v2/atlas/atlas-wn/manifests/{tag}",
        data=body,
        method="PUT",
        headers={"Content-Type": media_type},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.status == 201


def test_the_fallback_index_keeps_referrers_other_tools_listed(world: World, registry: str) -> None:
    image = load_image_dir(world.image())
    first = push_image(image, Registry(f"{registry}/atlas/atlas-wn"))
    tag = fallback_tag(first.manifest)
    _, body = _get(f"http://{registry}/v2/atlas/atlas-wn/manifests/{tag}", INDEX)
    index = json.loads(body)
    # Another tool (a scanner, cosign) lists its own referrer of the same manifest.
    repo = Registry(f"{registry}/atlas/atlas-wn")
    scan_type = "application/vnd.example.scan+json"
    report = world.root / "scan.json"
    report.write_bytes(b'{"findings": []}')
    layer = Blob(scan_type, digest_of(report.read_bytes()), report.stat().st_size)
    repo.push_blob(report, layer)
    subject = Blob(
        MANIFEST,
        first.manifest,
        len(_get(f"http://{registry}/v2/atlas/atlas-wn/manifests/{first.manifest}")[1]),
    )
    scan = referrer_manifest(scan_type, subject, layer)
    other = {
        "mediaType": MANIFEST,
        "digest": repo.push_manifest(scan, MANIFEST),
        "size": len(scan),
        "artifactType": scan_type,
    }
    index["manifests"].insert(0, other)
    _put_index(registry, tag, json.dumps(index).encode())

    again = push_image(image, Registry(f"{registry}/atlas/atlas-wn"))

    assert again.manifest == first.manifest
    _, body = _get(f"http://{registry}/v2/atlas/atlas-wn/manifests/{tag}", INDEX)
    merged = [m["digest"] for m in json.loads(body)["manifests"]]
    assert merged[0] == other["digest"]
    assert sorted(merged[1:]) == sorted(first.referrers)  # ours once each, not twice


def test_a_fallback_index_that_is_not_an_index_is_left_alone_and_named(
    world: World, registry: str
) -> None:
    image = load_image_dir(world.image())
    first = push_image(image, Registry(f"{registry}/atlas/atlas-wn"))
    tag = fallback_tag(first.manifest)
    docker_list = "application/vnd.docker.distribution.manifest.list.v2+json"
    garbage = json.dumps({"schemaVersion": 2, "mediaType": docker_list, "manifests": []}).encode()
    _put_index(registry, tag, garbage, docker_list)
    with pytest.raises(TransportError) as err:
        push_image(image, Registry(f"{registry}/atlas/atlas-wn"))
    assert err.value.code == "oci-fallback-index"
    assert tag in err.value.message
    _, body = _get(f"http://{registry}/v2/atlas/atlas-wn/manifests/{tag}", docker_list)
    assert body == garbage
