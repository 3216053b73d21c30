"""Bearer tokens from a registry's token service (GitLab's, Harbor's registries).

oras-py's own token flow keeps one token and, when the registry refuses it,
sends the same token again: a token fetched for ``pull`` (the first request of
a push is a HEAD) can then never push, and a token that expired during a long
pull is never renewed. :class:`BearerTokens` replaces that step: every bearer
challenge (``WWW-Authenticate: Bearer realm=...,service=...,scope=...``,
with ``error="invalid_token"`` for an expired one, ``insufficient_scope`` for
a narrower one) is answered with a new token asked for exactly the challenge's
scope, with the registry's credentials as HTTP Basic; oras-py retries the
request once with it.

The credentials go only to a realm over HTTPS (or plain HTTP when the registry
itself is spoken to over HTTP: a local one); anything else is refused, naming
the realm. The token is never logged or shown: a refusal says which service
refused what, and which actions the token granted (read from its claims).

Every refusal is kept in :attr:`BearerTokens.problem`, so the caller's
``oci-unauthorised`` error says why, also when the refusal happened inside
oras-py's upload code.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from typing import Any

import oras.auth
import requests

#: A token service's answer is a small JSON document.
MAX_TOKEN_RESPONSE = 64 * 1024
_PARAM = re.compile(r'([A-Za-z_]+)="([^"]*)"')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """The scheme (lower case) and the parameters of a ``WWW-Authenticate`` header."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in _PARAM.findall(rest)}


def granted(token: str) -> dict[str, list[str]]:
    """What a token's ``access`` claim grants, per repository (for messages; unverified)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        access = claims.get("access", []) if isinstance(claims, dict) else []
        return {
            str(a["name"]): [str(x) for x in a.get("actions", [])]
            for a in access
            if isinstance(a, dict) and a.get("type") == "repository" and "name" in a
        }
    except (IndexError, ValueError, binascii.Error, TypeError, KeyError):
        return {}


class BearerTokens(oras.auth.TokenAuth):  # type: ignore[misc]  # oras-py is untyped
    """oras-py's token backend with a new token for every bearer challenge."""

    def __init__(self, *, allow_http: bool) -> None:
        super().__init__()
        self.allow_http = allow_http
        #: Why the last challenge could not be answered, or what the last token lacked.
        self.problem: str | None = None

    def authenticate_request(
        self, original: requests.Response, headers: dict[str, str] | None, refresh: bool = False
    ) -> tuple[dict[str, str], bool]:
        headers = dict(headers or {})
        self.problem = None
        scheme, params = parse_challenge(original.headers.get("WWW-Authenticate", ""))
        if scheme != "bearer" or not params.get("realm"):
            self.problem = f"answered HTTP {original.status_code} without a bearer challenge"
            return headers, False
        realm, scope = params["realm"], params.get("scope", "")
        token = self._fetch(realm, params.get("service"), scope)
        if token is None:
            return headers, False
        self.token = token
        headers["Authorization"] = f"Bearer {token}"
        return headers, True

    def note_refusal(self, response: requests.Response, *_args: Any, **_kw: Any) -> None:
        """A response hook: keep why the registry refused a request (a token too narrow)."""
        if response.status_code not in (401, 403):
            return
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "bearer" and params.get("error") == "insufficient_scope":
            self.problem = self._lacking(params.get("realm", "?"), params.get("scope", ""))

    def _lacking(self, realm: str, scope: str) -> str:
        _, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        has = granted(self.token or "").get(name, [])
        return (
            f"the token from {realm} grants {', '.join(has) or 'nothing'} on {name},"
            f" and {actions} was asked for"
        )

    def _fetch(self, realm: str, service: str | None, scope: str) -> str | None:
        url = urllib.parse.urlsplit(realm)
        if url.scheme != "https" and not (url.scheme == "http" and self.allow_http):
            self.problem = (
                f"names its token service {realm!r}, which is not https: no credentials"
                " are sent there"
            )
            return None
        params = {k: v for k, v in (("service", service), ("scope", scope)) if v}
        headers = {"Accept": "application/json", "User-Agent": "imagefactory"}
        basic = getattr(self, "_basic_auth", None)
        if basic:
            headers["Authorization"] = f"Basic {basic}"
        try:
            response = self.session.get(
                realm, params=params, headers=headers, stream=True, allow_redirects=False
            )
            with response:
                body = response.raw.read(MAX_TOKEN_RESPONSE + 1, decode_content=True)
        except requests.RequestException as exc:
            self.problem = f"its token service {realm} did not answer: {type(exc).__name__}"
            return None
        if response.status_code != 200:
            who = "the credentials" if basic else "a request without credentials"
            self.problem = f"its token service {realm} refused {who}: HTTP {response.status_code}"
            return None
        token: Any = None
        if len(body) <= MAX_TOKEN_RESPONSE:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str) or not token or not token.isascii() or "\n" in token:
            self.problem = f"its token service {realm} answered without a token"
            return None
        return token
