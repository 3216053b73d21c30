"""Getting bytes from where a catalog lives: a local directory or plain HTTP(S).

Everything fetched is untrusted until its signed length and digests matched:

* a read never asks for more than the signed length plus one byte, so an
  endless body is cut off and refused (``transport-too-long``);
* a body shorter than the signed length is ``transport-truncated``; the
  bytes received are kept, and the next pull resumes after them (an HTTP
  ``Range`` request; a server that ignores it sends everything again);
* every socket operation has a timeout, so a stalled server is
  ``transport-timeout``, not a hang;
* a redirect is followed only to the same scheme, host and port
  (``transport-redirect`` otherwise: no ``file://``, no other host);
* the bytes are hashed while they stream with every digest the caller names
  (sha256 in the reading thread, others on a helper thread), and a mismatch
  deletes them (``transport-digest-mismatch``). What is hashed is what is
  written, from the same buffer; the file is fsync'd before :func:`download`
  returns, with its digests and ``fstat``, so the caller can hand them on
  (pull gives them to verify instead of reading the disk a second time).

Writing starts the kernel's writeback every :data:`WRITEBACK_STEP` bytes
(``sync_file_range``), while the next bytes arrive, so the closing fsync
waits for the last few MiB only instead of the whole file; each step, once on
disk, is dropped from the page cache (``POSIX_FADV_DONTNEED``): nothing reads
it back (verify takes the streamed digest), and a multi-GiB download then
neither fills the cache nor evicts the host's other data to do so.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from imagefactory.digest import ProgressFn
from imagefactory.errors import StoreError, TransportError
from imagefactory.fsutil import Writeback, is_disk_full

#: Bytes per read; large enough that the hashing thread hand-off is noise.
CHUNK = 1024 * 1024
DEFAULT_TIMEOUT = 30.0


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to the same scheme, host and port."""

    def redirect_request(  # noqa: PLR0917 -- urllib's signature
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        old = urllib.parse.urlsplit(req.full_url)
        new = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl))
        if (old.scheme, old.hostname, old.port) != (new.scheme, new.hostname, new.port):
            raise TransportError(
                f"{req.full_url}: redirected to {newurl}, another scheme or host; refused",
                code="transport-redirect",
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(
    _SameOriginRedirects,
    # No proxies from the environment for a site's catalog by default; no file:// handler.
    urllib.request.ProxyHandler({}),
)


class ByteSource(Protocol):
    """Anything a file can be downloaded from: a catalog :class:`Source`, an OCI registry."""

    def url(self, relpath: str) -> str:
        """Where ``relpath`` is, for messages."""
        ...

    def open(self, relpath: str, offset: int = 0) -> tuple[Iterator[bytes], int]:
        """Chunks from ``offset`` on, and the offset they really start at."""
        ...


@dataclass(frozen=True)
class Source:
    """Where a catalog is: ``base`` is a directory path or an ``http(s)://`` URL."""

    base: str
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def parse(cls, where: str, timeout: float = DEFAULT_TIMEOUT) -> Source:
        scheme = urllib.parse.urlsplit(where).scheme
        if scheme in ("http", "https"):
            return cls(where.rstrip("/"), timeout)
        if scheme == "file":
            where = urllib.parse.urlsplit(where).path
        elif scheme:
            raise TransportError(
                f"{where}: unsupported catalog location (a directory, http:// or https://)",
                code="transport-scheme",
            )
        return cls(str(Path(where).resolve()), timeout)

    @property
    def is_http(self) -> bool:
        return self.base.startswith(("http://", "https://"))

    def url(self, relpath: str) -> str:
        """The location of ``relpath`` (a catalog-relative path of plain segments)."""
        parts = relpath.split("/")
        if any(p in ("", ".", "..") for p in parts) or "\\" in relpath or "\0" in relpath:
            raise TransportError(f"{relpath!r}: not a plain relative path", code="transport-path")
        if self.is_http:
            return self.base + "/" + "/".join(urllib.parse.quote(p) for p in parts)
        return str(Path(self.base, *parts))

    def open(self, relpath: str, offset: int = 0) -> tuple[Iterator[bytes], int]:
        """Chunks of ``relpath`` from byte ``offset`` on, and the offset they really start at."""
        return self.open_url(self.url(relpath), offset)

    def open_url(self, url: str, offset: int = 0) -> tuple[Iterator[bytes], int]:
        if self.is_http:
            if not url.startswith(self.base + "/"):
                raise TransportError(
                    f"{url}: outside the catalog {self.base}", code="transport-path"
                )
            return self._open_http(url, offset)
        if url.startswith("file:"):
            url = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
        path = Path(url)
        if Path(self.base) not in path.parents:
            raise TransportError(f"{url}: outside the catalog {self.base}", code="transport-path")
        return self._open_file(path, offset)

    def _open_file(self, path: Path, offset: int) -> tuple[Iterator[bytes], int]:
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise TransportError(f"{path}: not found", code="transport-not-found") from exc
        except OSError as exc:
            raise TransportError(f"{path}: cannot open: {exc.strerror}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise TransportError(f"{path}: not a regular file", code="transport-not-found")

        def chunks() -> Iterator[bytes]:
            # Opened when first read, so an iterator never started holds no descriptor.
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                raise TransportError(f"{path}: cannot open: {exc.strerror}") from exc
            with os.fdopen(fd, "rb") as stream:
                stream.seek(offset)
                while chunk := stream.read(CHUNK):
                    yield chunk

        return chunks(), offset

    def _open_http(self, url: str, offset: int) -> tuple[Iterator[bytes], int]:
        headers = {"User-Agent": "imagefactory", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 -- http(s) only
        try:
            response = _OPENER.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if 300 <= exc.code < 400:  # urllib refused the target (file:, ...) before our handler
                raise TransportError(
                    f"{url}: redirected elsewhere ({exc.reason}); refused",
                    code="transport-redirect",
                ) from exc
            code = "transport-not-found" if exc.code in (403, 404, 410) else "transport-http"
            raise TransportError(f"{url}: HTTP {exc.code} {exc.reason}", code=code) from exc
        except TimeoutError as exc:
            raise TransportError(
                f"{url}: no answer within {self.timeout:g}s", code="transport-timeout"
            ) from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TransportError):
                raise exc.reason from exc
            if isinstance(exc.reason, TimeoutError | socket.timeout):
                raise TransportError(
                    f"{url}: no answer within {self.timeout:g}s", code="transport-timeout"
                ) from exc
            raise TransportError(f"{url}: {exc.reason}", code="transport-unreachable") from exc
        start = offset if offset and response.status == 206 else 0

        def chunks() -> Iterator[bytes]:
            with response:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except TimeoutError as exc:
                        raise TransportError(
                            f"{url}: stalled, nothing received for {self.timeout:g}s",
                            code="transport-timeout",
                        ) from exc
                    except (OSError, http.client.HTTPException) as exc:
                        raise TransportError(
                            f"{url}: connection lost: {exc}", code="transport-truncated"
                        ) from exc
                    if not chunk:
                        return
                    yield chunk

        return chunks(), start

    def read_small(self, relpath: str, max_length: int) -> bytes:
        """A whole small file, refusing more than ``max_length`` bytes."""
        chunks, _ = self.open(relpath)
        data = bytearray()
        for chunk in chunks:
            data += chunk
            if len(data) > max_length:
                raise TransportError(
                    f"{self.url(relpath)}: larger than {max_length} bytes",
                    code="transport-too-long",
                )
        return bytes(data)


class _Hasher:
    """The requested digests over the same chunks: sha256 here, any other on a helper thread."""

    def __init__(self, algorithms: tuple[str, ...] = ("sha256", "sha512")) -> None:
        self.hashes = {name: hashlib.new(name) for name in algorithms}
        self._first = self.hashes["sha256"]
        self._others = [h for name, h in self.hashes.items() if name != "sha256"]
        self._pool = ThreadPoolExecutor(max_workers=1) if self._others else None
        self._pending: Future[None] | None = None

    def _update_others(self, chunk: bytes) -> None:
        for h in self._others:
            h.update(chunk)

    def update(self, chunk: bytes) -> None:
        if self._pool is not None:
            if self._pending is not None:
                self._pending.result()
            self._pending = self._pool.submit(self._update_others, chunk)
        self._first.update(chunk)

    def hexdigests(self) -> dict[str, str]:
        if self._pending is not None:
            self._pending.result()
        self.close()
        return {name: h.hexdigest() for name, h in self.hashes.items()}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


@dataclass(frozen=True)
class Downloaded:
    path: Path
    #: Bytes that came over the transport this time (0 when the partial file was complete).
    transferred: int
    resumed_from: int
    #: The digests of exactly the bytes in ``path`` (all the caller asked for, checked).
    hexdigests: dict[str, str]
    #: ``fstat`` of ``path`` after its last write and fsync: whoever opens it later
    #: compares (device, inode, size, mtime) to know it is this file, unwritten since.
    st: os.stat_result


def download(
    source: ByteSource,
    relpath: str,
    dest: Path,
    length: int,
    *,
    hashes: dict[str, str],
    on_progress: ProgressFn | None = None,
) -> Downloaded:
    """Fetch ``relpath`` into ``dest`` (resuming a partial ``dest``), checked against the catalog.

    ``length`` and ``hashes`` are the signed ones. On success ``dest`` holds
    exactly those bytes (fsync'd). A truncated transfer keeps what arrived;
    every other failure removes ``dest``.
    """
    if "sha256" not in hashes:
        raise TransportError(
            f"{relpath}: the catalog names no sha256 for it", code="transport-path"
        )
    transfer = _Transfer(
        source, relpath, dest, length, progress=on_progress, algorithms=tuple(hashes)
    )
    try:
        transfer.run()
        got = transfer.check(hashes)
    except TransportError as exc:
        if exc.code != "transport-truncated":
            dest.unlink(missing_ok=True)
        raise
    except OSError as exc:
        if is_disk_full(exc):
            dest.unlink(missing_ok=True)
            raise StoreError(
                f"{dest.parent}: no space left for {relpath} ({length} bytes): {exc.strerror}",
                hint="free space in the store's file system; nothing changed in the store",
            ) from exc
        raise StoreError(f"{dest}: cannot write: {exc}") from exc
    finally:
        transfer.hasher.close()
    if transfer.st is None:  # run() returned, so it wrote and fsync'd the file
        raise RuntimeError("download ended without the file's fstat")
    return Downloaded(dest, transfer.received, transfer.offset, got, transfer.st)


class _Transfer:
    """One file's transfer into its partial file, hashed as it goes."""

    def __init__(
        self,
        source: ByteSource,
        relpath: str,
        dest: Path,
        length: int,
        *,
        progress: ProgressFn | None,
        algorithms: tuple[str, ...],
    ) -> None:
        self.source = source
        self.relpath = relpath
        self.dest = dest
        self.length = length
        self.progress = progress
        self.algorithms = tuple(dict.fromkeys(("sha256", *sorted(algorithms))))
        self.hasher = _Hasher(self.algorithms)
        self.offset = 0
        self.done = 0
        self.received = 0
        self.st: os.stat_result | None = None

    def run(self) -> None:
        # One descriptor for all of it: the bytes kept from an earlier pull are
        # hashed through the one the new bytes are written and fsync'd through.
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
        fd = os.open(self.dest, flags, 0o600)
        try:
            kept = os.fstat(fd).st_size
            self.offset = kept if kept <= self.length else 0
            while self.done < self.offset:
                chunk = os.pread(fd, min(CHUNK, self.offset - self.done), self.done)
                if not chunk:
                    break
                self.hasher.update(chunk)
                self.done += len(chunk)
            self.offset = self.done
            if self.done < self.length or self.length == 0:
                chunks, start = self.source.open(self.relpath, self.offset)
                if start != self.offset:  # the server ignored the Range request: start over
                    self.hasher.close()
                    self.hasher = _Hasher(self.algorithms)
                    self.offset = self.done = 0
                os.ftruncate(fd, self.done)
                # The file is not read back (its digests are these), so what is on
                # disk leaves the page cache as it goes.
                writeback = Writeback(fd, self.done, drop=True)
                for chunk in chunks:
                    self._write(fd, chunk)
                    writeback.wrote(self.done)
            os.fsync(fd)
            self.st = os.fstat(fd)
        finally:
            os.close(fd)
        if self.done < self.length:
            raise TransportError(
                f"{self.source.url(self.relpath)}: truncated, {self.done} of {self.length}"
                " bytes; the next pull resumes",
                code="transport-truncated",
            )

    def _write(self, fd: int, chunk: bytes) -> None:
        if self.done + len(chunk) > self.length:
            raise TransportError(
                f"{self.source.url(self.relpath)}: more than the signed {self.length} bytes",
                code="transport-too-long",
            )
        view = memoryview(chunk)
        written = 0
        while written < len(view):
            written += os.pwrite(fd, view[written:], self.done + written)
        self.hasher.update(chunk)  # the very bytes just written
        self.done += len(chunk)
        self.received += len(chunk)
        if self.progress is not None:
            self.progress(self.done, self.length)

    def check(self, hashes: dict[str, str]) -> dict[str, str]:
        got = self.hasher.hexdigests()
        for algo, want in hashes.items():
            if got.get(algo) != want:
                raise TransportError(
                    f"{self.source.url(self.relpath)}: {algo} {got.get(algo)} is not the"
                    f" signed {want}",
                    code="transport-digest-mismatch",
                )
        return got
