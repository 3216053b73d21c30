"""The CI system's HTTP side for the template tests, on 127.0.0.1.

It records every request (method, path, query, headers, body) and answers:

* ``POST .../notes`` (GitLab merge request notes) and ``POST .../comments``
  (GitHub issue comments): 201 with a small JSON body;
* ``GET /oidc/token?audience=...`` (GitHub Actions' OIDC token request): the
  token the test set, if the request carries the request token as a bearer.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode())


@dataclass
class FakeApi:
    oidc_token: str = ""
    request_token: str = "gh-oidc-request-token"  # noqa: S105 -- a fake for the test
    requests: list[Request] = field(default_factory=list)

    def start(self) -> FakeApi:
        handler = type("Handler", (_Handler,), {"api": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def posts(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST"]


class _Handler(BaseHTTPRequestHandler):
    api: FakeApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> Request:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = Request(
            self.command,
            parts.path,
            parse_qs(parts.query),
            {k.lower(): v for k, v in self.headers.items()},
            self.rfile.read(length),
        )
        self.api.requests.append(request)
        return request

    def _answer(self, status: int, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        request = self._record()
        if request.path.endswith(("/notes", "/comments")):
            self._answer(201, {"id": len(self.api.requests)})
        else:
            self._answer(404, {"message": "not found"})

    def do_GET(self) -> None:
        request = self._record()
        authorised = request.headers.get("authorization", "").lower() == (
            f"bearer {self.api.request_token}"
        )
        if request.path == "/oidc/token" and authorised and self.api.oidc_token:
            self._answer(200, {"value": self.api.oidc_token})
        else:
            self._answer(403 if request.path == "/oidc/token" else 404, {"message": "no"})
