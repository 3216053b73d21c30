"""A real browser for the page tests: Debian's chromium, headless, driven over DevTools.

The DevTools protocol runs over a pipe (``--remote-debugging-pipe``: chromium
reads commands on fd 3 and writes replies on fd 4, each a JSON message ended by
a NUL byte), so no port is opened and no websocket library is needed. The
browser has its own profile directory under the test's temporary directory.

A missing chromium fails the test (it never skips): ``scripts/setup --test``
installs it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

TIMEOUT = 30.0


class DevToolsError(Exception):
    """A DevTools command failed; ``message`` is the browser's."""


class Browser:
    """One headless chromium and one page (tab) in it."""

    def __init__(self, workdir: Path, *, width: int = 1400, height: int = 900) -> None:
        exe = shutil.which("chromium")
        if exe is None:
            pytest.fail("chromium is not installed: run scripts/setup --test")
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "chromium.log"
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        log_fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        argv = [
            exe,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-sync",
            "--remote-debugging-pipe",
            f"--user-data-dir={workdir / 'profile'}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ")}
        env["HOME"] = str(workdir)
        self.pid = os.posix_spawn(
            exe,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
                (os.POSIX_SPAWN_DUP2, to_browser_r, 3),
                (os.POSIX_SPAWN_DUP2, from_browser_w, 4),
            ],
            setsid=True,
        )
        for fd in (to_browser_r, from_browser_w, log_fd, null):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None
        self._document: int | None = None
        target = self.command("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.command("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.command("Page.enable")
        self.command("Runtime.enable")

    # -- the protocol ------------------------------------------------------------

    def command(self, method: str, **params: Any) -> dict[str, Any]:
        """Send ``method`` (to the page once attached) and wait for its reply."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data) :]
        while True:
            reply = self._receive(TIMEOUT)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise DevToolsError(f"{method}: {reply['error'].get('message')}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def _receive(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(left, 0))
            if not ready:
                raise TimeoutError(f"chromium did not answer in {timeout} s; see {self.log}")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise DevToolsError(f"chromium closed the DevTools pipe; see {self.log}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def wait_event(self, method: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        for i, event in enumerate(self.events):
            if event["method"] == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(max(deadline - time.monotonic(), 0.01))
            if message.get("method") == method:
                return message
            if "method" in message:
                self.events.append(message)

    # -- what a person does and sees ----------------------------------------------

    def open(self, url: str) -> None:
        """Load ``url`` and wait until it has loaded."""
        self.events.clear()
        self._document = None
        result = self.command("Page.navigate", url=url)
        if result.get("errorText"):
            raise DevToolsError(f"{url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (DevTools', not the page's)."""
        reply = self.command("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise DevToolsError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def nodes(self, selector: str) -> list[int]:
        """DOM node ids of ``selector`` (the DOM domain: works with scripts disabled)."""
        if self._document is None:
            # Once per page: asking for the document again invalidates every node id.
            self._document = self.command("DOM.getDocument", depth=0)["root"]["nodeId"]
        ids: list[int] = self.command(
            "DOM.querySelectorAll", nodeId=self._document, selector=selector
        )["nodeIds"]
        return ids

    def box(self, node: int) -> tuple[float, float, float, float] | None:
        """``(x, y, width, height)`` of a node's border box as laid out; ``None``: not rendered."""
        try:
            model = self.command("DOM.getBoxModel", nodeId=node)["model"]
        except DevToolsError:
            return None
        quad = model["border"]
        xs, ys = quad[0::2], quad[1::2]
        return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)

    def text(self, node: int) -> str:
        html: str = self.command("DOM.getOuterHTML", nodeId=node)["outerHTML"]
        return html

    def click(self, node: int) -> None:
        """A real mouse click (press and release) in the middle of ``node``."""
        self.command("DOM.scrollIntoViewIfNeeded", nodeId=node)
        where = self.box(node)
        assert where is not None, "the element to click is not rendered"
        x, y = where[0] + where[2] / 2, where[1] + where[3] / 2
        for kind in ("mousePressed", "mouseReleased"):
            self.command(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )

    def screenshot(self, path: Path, *, full: bool = False) -> Path:
        """A PNG of the viewport, or with ``full`` of the whole page."""
        params: dict[str, Any] = {"format": "png"}
        if full:
            size = self.command("Page.getLayoutMetrics")["cssContentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
            params["clip"]["scale"] = 1
        data = self.command("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(DevToolsError, TimeoutError, OSError):
            self.command("Browser.close")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.1)
        else:
            os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self._to_browser)
        os.close(self._from_browser)
