"""The site's image store: verified images only, read-only, in one layout.

::

    STORE/<vo>/<name>/<version>/    an image directory, as verify and the gate read it:
                                    the disk, labels.json, sbom.cdx.json, attestations
                                    (files 0444, directories 0555, owned by root)
    STORE/.pull/                    pull's private state (0700):
        lock                        pulls queue here
        state.json                  per image: the descriptor it came from; per image
                                    name: the minimum version this site accepts; the
                                    retired images (below)
        metadata/, descriptors/     the TUF client's trusted metadata and descriptors
        partial/                    downloads in progress (resumed by the next pull)
        staging-*/, trash-*/        an image being verified / being removed

An image appears under its final name in one ``rename`` after it was fully
downloaded and verified, and leaves by one ``rename`` into ``trash-*``; a
reader never sees a partial image, whatever kills the pull.

An image pull would remove while a job's overlay (``imagefactory
instantiate``) still has it as its base is *retired* instead: it stays where
it is, so the overlay keeps working, and ``state.json`` says why it left and
since when. Nothing new may start from a retired image (``instantiate`` and
the gate refuse it; a revoked one refuses even the instances made before), and
the next pull or ``instances gc`` removes it once no instance holds it.

Whether an image is held and its removal or retirement happen under the run
directory's lock (:class:`Instances`), which ``instantiate`` also takes to
publish an overlay, after checking again that its base is still installed and
not retired: an overlay never appears over an image between pull's look at
the holders and the image's removal, and none is made over a retired one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from imagefactory.catalog.descriptor import NAME_RE, VERSION_RE, VO_RE
from imagefactory.errors import StoreError
from imagefactory.fsutil import atomic_write, fsync_dir
from imagefactory.model.imagedir import LABELS_NAME

STATE_DIR = ".pull"


class Instances(Protocol):
    """The instances made over store images (the run directory of ``instantiate``)."""

    def locked(self) -> AbstractContextManager[object]:
        """Held around an image's removal or retirement; no overlay is published meanwhile."""
        ...

    def holders(self, image_dir: Path) -> list[str]:
        """The jobs whose overlays have ``image_dir``'s disk as their base."""
        ...


_FORMAT = 1


@dataclass
class StoreState:
    """What pull remembers between runs (``STORE/.pull/state.json``)."""

    #: ``vo/name/version`` -> the sha256 of the descriptor the image was installed from.
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``vo/name`` -> the lowest version this site still accepts (never decreases).
    minimum: dict[str, str] = field(default_factory=dict)
    #: ``vo/name/version`` -> why pull would have removed it and since when, for an image
    #: kept for the instances using it: ``{"code", "reason", "since", "held_by"}``.
    retired: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        doc = {
            "format": _FORMAT,
            "images": self.images,
            "minimum": self.minimum,
            "retired": self.retired,
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()


class Store:
    """An image store directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.state_dir = self.directory / STATE_DIR
        self.partial_dir = self.state_dir / "partial"

    def create(self) -> None:
        """Make the store's directories (mode 0755, private state 0700) if missing."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            self.state_dir.mkdir(exist_ok=True, mode=0o700)
            self.partial_dir.mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"{self.directory}: cannot create the store: {exc}") from exc
        st = os.stat(self.state_dir)
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise StoreError(f"{self.state_dir}: not a private directory of this user")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def load_state(self) -> StoreState:
        path = self.state_dir / "state.json"
        if not path.exists():
            return StoreState()
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: unreadable pull state: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise StoreError(f"{path}: not a pull state of this version")
        return StoreState(
            dict(doc.get("images", {})),
            dict(doc.get("minimum", {})),
            dict(doc.get("retired", {})),
        )

    def save_state(self, state: StoreState) -> None:
        atomic_write(self.state_dir / "state.json", state.to_bytes(), 0o600)

    def image_dir(self, key: str) -> Path:
        vo, name, version = key.split("/")
        return self.directory / vo / name / version

    def key_of(self, directory: Path) -> str | None:
        """``vo/name/version`` of an image directory of this store (resolved); else ``None``."""
        store = Path(os.path.realpath(self.directory))
        real = Path(os.path.realpath(directory))
        try:
            parts = real.relative_to(store).parts
        except ValueError:
            return None
        if len(parts) != 3:
            return None
        vo, name, version = parts
        if not (VO_RE.fullmatch(vo) and NAME_RE.fullmatch(name) and VERSION_RE.fullmatch(version)):
            return None
        return "/".join(parts)

    def retired(self) -> dict[str, dict[str, Any]]:
        """The retired images (see the module's docstring); nothing when pull never ran."""
        if not self.state_dir.exists():
            return {}
        return self.load_state().retired

    def remove_unheld_retired(self, instances: Instances) -> list[str]:
        """Remove every retired image no instance holds any more (under both locks)."""
        if not self.state_dir.is_dir():
            return []
        removed: list[str] = []
        with self.locked(), instances.locked():
            state = self.load_state()
            for key in sorted(state.retired):
                if instances.holders(self.image_dir(key)):
                    continue
                self.remove(key)
                state.retired.pop(key)
                state.images.pop(key, None)
                removed.append(key)
            if removed:
                self.save_state(state)
        return removed

    def version_dirs(self) -> dict[str, Path]:
        """Every ``vo/name/version`` directory of the store, with labels.json or not.

        Pull installs an image by one rename of a complete directory, so a
        version directory without labels.json was not made by pull; callers
        that explain the store (``select --explain``) name it rather than skip it.
        """
        out: dict[str, Path] = {}
        for vo_dir in _subdirs(self.directory):
            if not VO_RE.fullmatch(vo_dir.name):
                continue
            for name_dir in _subdirs(vo_dir):
                if not NAME_RE.fullmatch(name_dir.name):
                    continue
                for version_dir in _subdirs(name_dir):
                    if VERSION_RE.fullmatch(version_dir.name):
                        out[f"{vo_dir.name}/{name_dir.name}/{version_dir.name}"] = version_dir
        return out

    def installed(self) -> dict[str, Path]:
        """Every image directory of the store (one holding labels.json), by ``vo/name/version``."""
        return {
            key: path for key, path in self.version_dirs().items() if (path / LABELS_NAME).is_file()
        }

    def clean_leftovers(self) -> None:
        """Remove staging and trash directories of killed pulls (holding the lock)."""
        for path in self.state_dir.iterdir():
            if path.name.startswith(("staging-", "trash-")):
                rmtree_readonly(path)

    def staging(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="staging-", dir=self.state_dir))

    @staticmethod
    def seal(staging: Path) -> None:
        """Make a staged image's files read-only (and root's), before it is verified."""
        for path in staging.iterdir():
            if os.geteuid() == 0:
                os.chown(path, 0, 0, follow_symlinks=False)
            os.chmod(path, 0o444, follow_symlinks=False)

    def install(self, staging: Path, key: str) -> Path:
        """Rename the sealed, verified ``staging`` to its place in the store."""
        final = self.image_dir(key)
        os.chmod(staging, 0o555)
        if final.exists():
            self.remove(key)  # which also removes the parents it leaves empty
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        os.rename(staging, final)
        fsync_dir(final.parent)
        return final

    def remove(self, key: str) -> None:
        """Take an image out of the store: one rename away, then delete."""
        final = self.image_dir(key)
        if not final.exists():
            return
        trash = Path(tempfile.mkdtemp(prefix="trash-", dir=self.state_dir))
        os.rename(final, trash / "image")
        fsync_dir(final.parent)
        rmtree_readonly(trash)
        for parent in (final.parent, final.parent.parent):
            with contextlib.suppress(OSError):
                parent.rmdir()  # only when empty


def _subdirs(path: Path) -> list[Path]:
    try:
        entries = list(path.iterdir())
    except OSError:
        return []
    return sorted(
        p for p in entries if not p.name.startswith(".") and stat.S_ISDIR(os.lstat(p).st_mode)
    )


def rmtree_readonly(path: Path) -> None:
    """Remove a tree that may hold read-only directories."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    for root, dirs, _files in os.walk(path):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, d), 0o700)
    shutil.rmtree(path, ignore_errors=True)
