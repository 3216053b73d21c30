"""A real OCI registry for tests: Debian's docker-registry on 127.0.0.1, as a child process.

It gets its own config (never the package default, which listens on every
interface) and storage under the test's temporary directory.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.catalog.tokenserver import TokenService, serve
from tests.conftest import require_or_skip

CONFIG = """\
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


AUTH = """\
auth:
  htpasswd:
    realm: imagefactory-test
    path: {htpasswd}
"""

#: The user and password of :func:`auth_registry`.
USER, PASSWORD = "vo-robot", "s3cret-token"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a fresh registry, stopped after the test."""
    yield from _serve(tmp_path, "")


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[str]:
    """A registry that wants HTTP Basic credentials (:data:`USER`, :data:`PASSWORD`)."""
    import bcrypt

    htpasswd = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"{USER}:{hashed}\n")
    yield from _serve(tmp_path, AUTH.format(htpasswd=htpasswd))


#: The users of :func:`token_registry`'s token service: a robot that may push and pull,
#: and a site's reader that may only pull.
PULLER, PULLER_PASSWORD = "site-reader", "read-only-token"


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[tuple[str, TokenService]]:
    """A registry that wants a bearer token from a token service (GitLab's, Harbor's way).

    :data:`USER` may push and pull ``atlas/*``; :data:`PULLER` may only pull.
    """
    repos = ("atlas/atlas-wn", "atlas/other")
    users = {
        USER: (PASSWORD, {repo: {"pull", "push"} for repo in repos}),
        PULLER: (PULLER_PASSWORD, {repo: {"pull"} for repo in repos}),
    }
    for service in serve(TokenService(tmp_path, users)):
        for host in _serve(tmp_path, service.registry_config()):
            yield host, service


def _serve(tmp_path: Path, extra: str) -> Iterator[str]:
    binary = shutil.which("docker-registry")
    require_or_skip(binary is not None, "docker-registry is not installed (scripts/setup --test)")
    assert binary is not None
    port = _free_port()
    config = tmp_path / "registry.yml"
    config.write_text(CONFIG.format(root=tmp_path / "registry-data", port=port) + extra)
    log = tmp_path / "registry.log"
    with log.open("wb") as log_stream:
        proc = subprocess.Popen(
            [binary, "serve", str(config)], stdout=log_stream, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):
                    break
            except urllib.error.HTTPError:
                break  # it answers (401: it wants credentials)
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = log.read_text(errors="replace")[-2000:]
                    pytest.fail(f"docker-registry did not start: {err}")
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
