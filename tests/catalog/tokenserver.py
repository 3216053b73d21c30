"""A registry token service for tests, as GitLab's and Harbor's registries use one.

It runs in the test's process on 127.0.0.1 and does what the Docker token
specification asks of a token service: ``GET /token?service=S&scope=...``
with HTTP Basic credentials; unknown users and wrong passwords get 401; a
known user gets a JWT granting the intersection of the actions asked for and
the actions the user may do on each repository (possibly none). Tokens are
ES256, signed by a leaf certificate whose chain (``x5c``) ends at a CA the
registry is given as its ``rootcertbundle``: exactly what docker-registry 2.8
checks (issuer, audience = service, ``exp``/``nbf`` with its 60 s leeway, the
chain, the signature, then the ``access`` claims per request).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

SERVICE = "imagefactory-test-registry"
ISSUER = "imagefactory-test-token-service"
#: docker-registry's clock leeway on ``exp`` and ``nbf`` (registry/auth/token/token.go).
LEEWAY = 60


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


@dataclass
class TokenService:
    """The service's users, what it issued, and knobs a test turns.

    ``users`` maps a user name to its password and, per repository, the
    actions it may have (``{"atlas/atlas-wn": {"pull", "push"}}``).
    """

    directory: Path
    users: dict[str, tuple[str, dict[str, set[str]]]]
    #: Seconds a token is valid for (``expires_in``).
    ttl: int = 300
    #: Tokens still to issue already expired but for ``short_life`` seconds of the leeway.
    expire_next: int = 0
    short_life: float = 1.0
    #: Every request: (user or None, the scopes asked for, HTTP status answered).
    requests: list[tuple[str | None, list[str], int]] = field(default_factory=list)
    #: Every token issued, to check none is ever printed.
    issued: list[str] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        self._key = ec.generate_private_key(ec.SECP256R1())
        ca_name = "imagefactory test token CA"
        ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
        leaf = _cert("imagefactory test token signer", self._key, ca_name, ca_key, ca=False)
        self._x5c = [base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()]
        self.rootcertbundle = self.directory / "token-ca.pem"
        self.rootcertbundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self._lock = threading.Lock()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def registry_config(self) -> str:
        """The ``auth:`` section of a docker-registry config that trusts this service."""
        return (
            "auth:\n  token:\n"
            f"    realm: {self.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
            f"    rootcertbundle: {self.rootcertbundle}\n"
        )

    def token(self, user: str, access: list[dict[str, object]]) -> tuple[str, int]:
        now = int(time.time())
        with self._lock:
            short = self.expire_next > 0
            self.expire_next -= 1 if short else 0
        # Already past ``exp``: the registry accepts it only within its leeway.
        exp = now - LEEWAY + int(self.short_life) if short else now + self.ttl
        header = {"typ": "JWT", "alg": "ES256", "x5c": self._x5c}
        claims = {
            "iss": ISSUER,
            "sub": user,
            "aud": SERVICE,
            "exp": exp,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        token = signing_input + "." + _b64url(signature)
        self.issued.append(token)
        return token, max(exp - now, 1)

    def grant(self, user: str, scopes: list[str]) -> list[dict[str, object]]:
        allowed = self.users[user][1]
        access: list[dict[str, object]] = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            granted = sorted(set(actions.split(",")) & allowed.get(name, set()))
            access.append({"type": "repository", "name": name, "actions": granted})
        return access

    def check_basic(self, header: str | None) -> str | None:
        """The user a Basic ``Authorization`` header proves, or ``None``."""
        if not header or not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        known = self.users.get(user)
        if known is None or not secrets.compare_digest(known[0], password):
            return None
        return user


def _handler(service: TokenService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 401:
                self.send_header("WWW-Authenticate", f'Basic realm="{ISSUER}"')
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
            user = service.check_basic(self.headers.get("Authorization"))
            if url.path != "/token" or query.get("service") != [SERVICE]:
                status = 400
                self._answer(status, {"errors": [{"code": "UNSUPPORTED"}]})
            elif user is None:
                status = 401
                self._answer(status, {"errors": [{"code": "UNAUTHORIZED"}]})
            else:
                status = 200
                token, expires_in = service.token(user, service.grant(user, scopes))
                self._answer(
                    status, {"token": token, "access_token": token, "expires_in": expires_in}
                )
            service.requests.append((user, scopes, status))

    return Handler


def serve(service: TokenService) -> Iterator[TokenService]:
    """Run ``service`` on 127.0.0.1 (its ``port`` set) until the generator is closed."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(service))
    service.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
