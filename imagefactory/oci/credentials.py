"""Registry credentials: where a push (or a pull from a private registry) gets them.

In order, the first that names the registry's host wins:

1. ``IMAGEFACTORY_REGISTRY_USER`` and ``IMAGEFACTORY_REGISTRY_PASSWORD`` (a CI
   job maps its own variables onto these: GitLab's ``CI_REGISTRY_USER`` and
   ``CI_REGISTRY_PASSWORD``, a robot account's token);
2. the containers auth file named by ``REGISTRY_AUTH_FILE`` (podman, skopeo);
3. ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json`` (``docker
   login``): an ``auths`` entry for the host with an inline ``auth``.

Credential helpers and stores (``credHelpers``, ``credsStore``) are not run:
they are programs named by a file, and the inline entries cover CI and
``docker login`` without a desktop keyring. The password never appears in a
message, a ``repr`` or JSON output.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from imagefactory.errors import UsageError
from imagefactory.fsutil import read_bounded

USER_VAR = "IMAGEFACTORY_REGISTRY_USER"
PASSWORD_VAR = "IMAGEFACTORY_REGISTRY_PASSWORD"  # noqa: S105 -- a variable name
_MAX_CONFIG = 1024 * 1024


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or token) for one registry, and where they came from."""

    username: str
    password: str = field(repr=False)
    source: str


def find_credentials(
    host: str, environ: Mapping[str, str] | None = None, home: Path | None = None
) -> Credentials | None:
    """The credentials for ``host`` (``name[:port]``), or ``None`` when nothing names it."""
    env = os.environ if environ is None else environ
    user, password = env.get(USER_VAR), env.get(PASSWORD_VAR)
    if user or password:
        if not (user and password):
            missing = PASSWORD_VAR if user else USER_VAR
            raise UsageError(
                f"{USER_VAR if user else PASSWORD_VAR} is set but {missing} is not",
                hint="set both, or neither (then the docker or containers auth file is read)",
            )
        return Credentials(user, password, f"${USER_VAR}")
    files: list[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    docker = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else None
    home = home if home is not None else Path(env.get("HOME", "~")).expanduser()
    files.append((docker or home / ".docker") / "config.json")
    for path in files:
        found = _from_auth_file(path, host)
        if found is not None:
            return found
    return None


def _from_auth_file(path: Path, host: str) -> Credentials | None:
    try:
        data = json.loads(read_bounded(path, _MAX_CONFIG))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"{path}: cannot read registry credentials: {exc}",
            hint="fix or remove the file (it is read for every registry push and pull)",
        ) from exc
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v2/"):
        entry = auths.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
            try:
                user, sep, password = (
                    base64.b64decode(entry["auth"], validate=True).decode("utf-8").partition(":")
                )
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise UsageError(
                    f"{path}: auths[{key!r}].auth is not base64 of USER:PASSWORD",
                    hint="log in again (docker login / podman login)",
                ) from exc
            if not sep or not user:
                raise UsageError(f"{path}: auths[{key!r}].auth holds no USER:PASSWORD")
            return Credentials(user, password, str(path))
    return None
