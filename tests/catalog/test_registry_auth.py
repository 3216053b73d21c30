"""Pushing to and pulling from a registry that wants credentials (docker-registry, htpasswd)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from imagefactory.catalog.publish import publish_with_registry
from imagefactory.errors import TransportError, UsageError
from imagefactory.oci.credentials import PASSWORD_VAR, USER_VAR, Credentials, find_credentials
from imagefactory.oci.registry import Registry
from tests.catalog.registry import PASSWORD, USER
from tests.catalog.world import World, make_world


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def test_without_credentials_the_push_is_refused_with_the_way_to_give_them(
    world: World, auth_registry: str, no_credentials: Path
) -> None:
    with pytest.raises(TransportError) as err:
        publish_with_registry(world.catalog, world.image(), f"{auth_registry}/atlas")
    assert err.value.code == "oci-unauthorised"
    assert auth_registry in err.value.message
    assert USER_VAR in (err.value.hint or "")
    assert list(world.catalog.load().all_targets()) == []  # nothing published


def test_credentials_from_the_variables_push_and_pull(
    world: World, auth_registry: str, no_credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(USER_VAR, USER)
    monkeypatch.setenv(PASSWORD_VAR, PASSWORD)
    published, pushed = publish_with_registry(
        world.catalog, world.image(), f"{auth_registry}/atlas"
    )
    assert published.descriptor.oci_manifest == f"{auth_registry}/atlas/atlas-wn@{pushed.manifest}"
    # A site pulling from the private registry uses its credentials the same way.
    import shutil

    shutil.rmtree(world.catalog.images_dir)
    result = world.pull(oci=True)
    assert result.by_action("installed") == ["atlas/atlas-wn/1.0"]


def test_a_wrong_password_is_refused_and_never_shown(
    world: World, auth_registry: str, no_credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(USER_VAR, USER)
    monkeypatch.setenv(PASSWORD_VAR, "not-the-password")
    with pytest.raises(TransportError) as err:
        publish_with_registry(world.catalog, world.image(), f"{auth_registry}/atlas")
    assert err.value.code == "oci-unauthorised"
    assert "not-the-password" not in err.value.render()
    assert f"${USER_VAR}" in err.value.message


def test_docker_login_credentials_are_read(
    world: World, auth_registry: str, no_credentials: Path
) -> None:
    docker = no_credentials / ".docker"
    docker.mkdir()
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {auth_registry: {"auth": token}}}))
    _, pushed = publish_with_registry(world.catalog, world.image(), f"{auth_registry}/atlas")
    assert pushed.manifest.startswith("sha256:")
    assert Registry(f"{auth_registry}/atlas/x").credentials == Credentials(
        USER, PASSWORD, str(docker / "config.json")
    )


def test_an_open_registry_needs_no_credentials(
    world: World, registry: str, no_credentials: Path
) -> None:
    _, pushed = publish_with_registry(world.catalog, world.image(), f"{registry}/atlas")
    assert pushed.referrers


# -- finding credentials (no registry) ------------------------------------------------


def test_the_variables_win_and_half_of_them_is_an_error(tmp_path: Path) -> None:
    env = {USER_VAR: "u", PASSWORD_VAR: "p", "HOME": str(tmp_path)}
    assert find_credentials("r.example:5000", env) == Credentials("u", "p", f"${USER_VAR}")
    with pytest.raises(UsageError, match=PASSWORD_VAR):
        find_credentials("r.example", {USER_VAR: "u"}, tmp_path)


def test_the_containers_auth_file_comes_before_docker_config(tmp_path: Path) -> None:
    def auth(user: str) -> dict[str, object]:
        return {
            "auths": {
                "https://r.example": {"auth": base64.b64encode(f"{user}:pw".encode()).decode()}
            }
        }

    podman = tmp_path / "auth.json"
    podman.write_text(json.dumps(auth("podman")))
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(json.dumps(auth("docker")))
    env = {"REGISTRY_AUTH_FILE": str(podman)}
    found = find_credentials("r.example", env, tmp_path)
    assert found is not None
    assert found.username == "podman"
    assert "pw" not in repr(found)
    found = find_credentials("r.example", {}, tmp_path)
    assert found is not None
    assert found.username == "docker"
    assert find_credentials("other.example", {}, tmp_path) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read registry credentials"),
        (json.dumps({"auths": {"r.example": {"auth": "!!!"}}}), "not base64"),
        (
            json.dumps({"auths": {"r.example": {"auth": base64.b64encode(b"nocolon").decode()}}}),
            "no USER:PASSWORD",
        ),
    ],
)
def test_a_broken_auth_file_names_the_file_and_the_entry(
    tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / ".docker").mkdir()
    path = tmp_path / ".docker" / "config.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message) as err:
        find_credentials("r.example", {}, tmp_path)
    assert str(path) in err.value.message


def test_credential_helpers_are_not_run(tmp_path: Path) -> None:
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(
        json.dumps({"credsStore": "evil", "credHelpers": {"r.example": "evil"}})
    )
    assert find_credentials("r.example", {}, tmp_path) is None
