"""Push and pull through a registry that wants bearer tokens (GitLab's, Harbor's way).

A real docker-registry on 127.0.0.1 checks the tokens of a real token service
(tests/catalog/tokenserver.py): ES256 JWTs chained to the CA it is given,
scoped to a repository and its actions.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest
import requests

from imagefactory.catalog.publish import publish_with_registry
from imagefactory.errors import TransportError
from imagefactory.oci.credentials import PASSWORD_VAR, USER_VAR
from imagefactory.oci.registry import Registry
from imagefactory.oci.tokens import BearerTokens
from tests.catalog.registry import PASSWORD, PULLER, PULLER_PASSWORD, USER
from tests.catalog.tokenserver import SERVICE, TokenService
from tests.catalog.world import World, make_world


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def _as(monkeypatch: pytest.MonkeyPatch, user: str, password: str) -> None:
    monkeypatch.setenv(USER_VAR, user)
    monkeypatch.setenv(PASSWORD_VAR, password)


def _published(world: World, host: str) -> str:
    _, pushed = publish_with_registry(world.catalog, world.image(), f"{host}/atlas")
    return pushed.manifest


@pytest.mark.usefixtures("no_credentials")
def test_push_and_pull_with_tokens(
    world: World,
    token_registry: tuple[str, TokenService],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    host, service = token_registry
    _as(monkeypatch, USER, PASSWORD)
    manifest = _published(world, host)
    assert manifest.startswith("sha256:")
    assert any(user == USER and status == 200 for user, _, status in service.requests)
    shutil.rmtree(world.catalog.images_dir)  # the disk now comes from the registry only
    _as(monkeypatch, PULLER, PULLER_PASSWORD)
    result = world.pull(oci=True)
    assert result.by_action("installed") == ["atlas/atlas-wn/1.0"]
    # The reader's tokens granted pull, and only pull.
    assert any(user == PULLER and status == 200 for user, _, status in service.requests)
    printed = capsys.readouterr()
    shown = printed.out + printed.err + caplog.text
    assert service.issued
    for token in service.issued:
        assert token not in shown
        assert token.split(".")[2] not in shown
    assert PASSWORD not in shown
    assert PULLER_PASSWORD not in shown


def test_without_credentials_the_token_service_refusal_names_the_registry_and_where_to_put_them(
    world: World, token_registry: tuple[str, TokenService], no_credentials: Path
) -> None:
    host, service = token_registry
    with pytest.raises(TransportError) as err:
        publish_with_registry(world.catalog, world.image(), f"{host}/atlas")
    assert err.value.code == "oci-unauthorised"
    assert host in err.value.message
    assert "no credentials" in err.value.message
    assert f"{service.realm} refused a request without credentials" in err.value.message
    assert USER_VAR in (err.value.hint or "")
    assert list(world.catalog.load().all_targets()) == []


def test_a_wrong_password_is_refused_by_the_token_service_and_never_shown(
    world: World,
    token_registry: tuple[str, TokenService],
    no_credentials: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, service = token_registry
    _as(monkeypatch, USER, "not-the-password")
    with pytest.raises(TransportError) as err:
        publish_with_registry(world.catalog, world.image(), f"{host}/atlas")
    assert err.value.code == "oci-unauthorised"
    assert f"${USER_VAR}" in err.value.message
    assert service.realm in err.value.message
    assert "not-the-password" not in err.value.render()
    assert (USER, [], 401) not in service.requests  # it did ask the token service
    assert all(status == 401 for _, _, status in service.requests)


def test_a_token_that_grants_only_pull_cannot_push(
    world: World,
    token_registry: tuple[str, TokenService],
    no_credentials: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, _ = token_registry
    _as(monkeypatch, PULLER, PULLER_PASSWORD)
    with pytest.raises(TransportError) as err:
        publish_with_registry(world.catalog, world.image(), f"{host}/atlas")
    assert err.value.code == "oci-unauthorised"
    assert "push" in err.value.message
    assert "atlas/atlas-wn" in err.value.message
    assert f"${USER_VAR}" in err.value.message
    assert list(world.catalog.load().all_targets()) == []


def test_an_expired_token_is_renewed_during_a_long_pull(
    world: World,
    token_registry: tuple[str, TokenService],
    no_credentials: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, service = token_registry
    _as(monkeypatch, USER, PASSWORD)
    _published(world, host)
    shutil.rmtree(world.catalog.images_dir)
    # The first token of the pull is good for about a second; the pull takes longer,
    # since the second blob starts 2 s after the first.
    service.expire_next, service.short_life = 1, 1.0
    opened: list[str] = []
    real_open = Registry.open

    def slow_open(self: Registry, relpath: str, offset: int = 0) -> object:
        if len(opened) == 1:
            time.sleep(2.0)
        opened.append(relpath)
        return real_open(self, relpath, offset)

    monkeypatch.setattr(Registry, "open", slow_open)
    before = len(service.issued)
    result = world.pull(oci=True)
    assert result.by_action("installed") == ["atlas/atlas-wn/1.0"]
    assert len(opened) >= 2
    assert len(service.issued) - before >= 2  # the expired token was replaced


def test_credentials_are_never_sent_to_a_plain_http_token_service_of_an_https_registry(
    token_registry: tuple[str, TokenService],
) -> None:
    _, service = token_registry
    tokens = BearerTokens(allow_http=False)
    tokens.session = requests.Session()
    tokens.set_basic_auth(USER, PASSWORD)
    assert tokens._fetch(service.realm, SERVICE, "repository:atlas/atlas-wn:pull") is None
    assert service.requests == []  # nothing was sent
    assert tokens.problem is not None
    assert service.realm in tokens.problem
    assert "not https" in tokens.problem
