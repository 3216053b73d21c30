"""A static HTTP server on 127.0.0.1 for a catalog directory, with Range and faults.

Tests run it on a thread and set :attr:`Server.faults` (URL path suffix ->
fault); ``bench/pull.py`` runs it as a child process (``python -m
tests.store.httpserver DIR``, which prints the port). Faults:

* ``("endless",)``           -- the file, then endless bytes;
* ``("truncate", n)``        -- only the first ``n`` bytes, once (then served whole);
* ``("stall", n, seconds)``  -- ``n`` bytes, then silence for ``seconds``;
* ``("redirect", url)``      -- 302 to ``url``;
* ``("status", code)``       -- that HTTP status.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

CHUNK = 1024 * 1024


class Server:
    """The server, its root directory, its faults and a log of requests."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.faults: dict[str, tuple[Any, ...]] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.bytes_sent = 0
        handler = type("Handler", (_Handler,), {"server_state": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread: threading.Thread | None = None

    def start(self) -> Server:
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def fault_for(self, path: str) -> tuple[Any, ...] | None:
        for suffix, fault in self.faults.items():
            if path.endswith(suffix):
                if fault[0] == "truncate":
                    del self.faults[suffix]
                return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    server_state: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        state = self.server_state
        path = unquote(urlsplit(self.path).path)
        state.requests.append((path, self.headers.get("Range")))
        fault = state.fault_for(path)
        if fault is not None and fault[0] == "redirect":
            self.send_response(302)
            self.send_header("Location", fault[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault is not None and fault[0] == "status":
            self.send_error(fault[1])
            return
        file = (state.root / path.lstrip("/")).resolve()
        if state.root not in file.parents or not file.is_file():
            self.send_error(404)
            return
        size = file.stat().st_size
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = min(int(rng[6:-1]), size)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        endless = fault is not None and fault[0] == "endless"
        if endless:
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(size - start))
        self.end_headers()
        limit = size - start
        if fault is not None and fault[0] in ("truncate", "stall"):
            limit = max(0, min(limit, fault[1] - start))
        with file.open("rb") as stream:
            stream.seek(start)
            sent = 0
            try:
                while sent < limit and (chunk := stream.read(min(CHUNK, limit - sent))):
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    state.bytes_sent += len(chunk)
                if fault is not None and fault[0] == "stall":
                    self.wfile.flush()
                    time.sleep(fault[2])
                while endless:
                    self.wfile.write(b"\0" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                return
        if fault is not None and fault[0] == "truncate":
            self.close_connection = True


def main() -> None:
    server = Server(Path(sys.argv[1]))
    sys.stdout.write(f"{server.port}\n")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.httpd.serve_forever()
    os._exit(0)


if __name__ == "__main__":
    main()
