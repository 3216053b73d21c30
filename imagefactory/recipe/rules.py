"""The checks behind the field table that a pattern cannot express.

Converters (``to_*``) turn checked text into the stored value; checks
(``check_*``) also see the node and the host's policy; rules (``rule_*``)
look across the fields of one mapping and report at the offending place. Each
raises :class:`~imagefactory.fields.types.Problem` or reports through the
:class:`~imagefactory.fields.types.Checker`.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from imagefactory.fields import values
from imagefactory.fields.types import Checker, Problem, did_you_mean
from imagefactory.fields.yamlsource import Map, Node, Scalar, Seq
from imagefactory.pgpkey import KeyFileError, PublicKey, read_public_key
from imagefactory.vocab import (
    Arch,
    BootMode,
    DiskFormat,
    Distro,
    FsAccess,
    RootPolicy,
    WorkerNodeModel,
)

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

MIN_DISK_SIZE = 1 * GIB
MAX_DISK_SIZE = 64 * GIB
MAX_EXPIRY_DAYS = values.MAX_DAYS
#: A file's content, inline or from a source file.
MAX_FILE_BYTES = 1 * MIB
MAX_SCRIPT_CHARS = 64 * KIB
MAX_PATH_CHARS = 4096
#: Trees the kernel or the init system fill at run time; nothing is installed there.
RUNTIME_TREES = ("/proc", "/sys", "/dev", "/run")

MODE_PATTERN = r"^[0-7]{1,5}$"


def to_size(text: str) -> int:
    """``"2G"`` -> bytes, within the disk size limits."""
    size = values.to_size(text)
    if not MIN_DISK_SIZE <= size <= MAX_DISK_SIZE:
        raise Problem(f"expected a disk size from 1G to 64G, found '{text}'")
    return size


def to_mode(text: str) -> int:
    """``"0644"`` -> 0o644; permission, setuid, setgid and sticky bits only."""
    mode = int(text, 8)
    if mode > 0o7777:
        raise Problem(f"expected a mode from 0000 to 7777, found '{text}'")
    return mode


def mode_hint(raw: str) -> str:
    """For an unquoted mode: YAML reads 0644 as the number 420, and 644 as 644."""
    return f'quote it: "{raw if raw.startswith("0") else "0" + raw}"'


def to_image_path(text: str) -> PurePosixPath:
    """A path inside the image: absolute, normalised, outside the run-time trees."""
    if "\0" in text or "\n" in text:
        raise Problem("expected a path without NUL or newline characters")
    if not text.startswith("/"):
        raise Problem(f"expected an absolute path, found '{text}'")
    parts = text.split("/")[1:]
    if ".." in parts:
        raise Problem(f"expected a path without '..', found '{text}'")
    if text == "/":
        raise Problem("expected a file path, found '/' (the root directory)")
    if "." in parts or "" in parts:
        raise Problem(
            f"expected a normalised path (no '.', '//' or trailing '/'), found '{text}'",
            f"did you mean '{posixpath.normpath(text)}'?",
        )
    for tree in RUNTIME_TREES:
        if text == tree or text.startswith(tree + "/"):
            raise Problem(f"expected a path outside {tree}, which is filled at run time")
    return PurePosixPath(text)


@dataclass(frozen=True)
class SourceFile:
    """A file's content read from next to the recipe."""

    path: Path
    data: bytes


def check_source(value: str, node: Scalar, ck: Checker) -> SourceFile:
    """Read ``source``: a regular file inside the directory of the recipe that names it."""
    return read_beside_recipe(value, node)


def read_beside_recipe(value: str, node: Scalar) -> SourceFile:
    """A regular file inside the directory of the recipe that names it, read once."""
    if value.startswith("/"):
        raise Problem(f"expected a path relative to the recipe's directory, found '{value}'")
    if "\0" in value:
        raise Problem("expected a path without NUL characters")
    top = node.mark.origin.path.parent.resolve()
    if posixpath.normpath(value).split("/")[0] == "..":
        raise Problem(f"expected a path inside the recipe's directory, found '{value}'")
    target = (top / value).resolve()
    if not target.is_relative_to(top):
        raise Problem(
            f"expected a path inside the recipe's directory, found '{value}'"
            " (a symbolic link leads outside it)"
        )
    try:
        # No symlink may be swapped in between the check above and this open.
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise Problem(f"no such file: '{value}'") from None
    except OSError as exc:
        raise Problem(f"cannot read '{value}': {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Problem(f"expected a regular file, found a directory or special file: '{value}'")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise Problem(f"expected a file of at most {MAX_FILE_BYTES} bytes, '{value}' is larger")
    return SourceFile(target, data)


def check_element(value: str, node: Scalar, ck: Checker) -> str:
    """An extra diskimage-builder element must be on the host's allowlist."""
    allowed = sorted(ck.context.allowed_elements)
    if value not in allowed:
        hint = did_you_mean(value, allowed) or "allowed: " + (", ".join(allowed) or "none")
        raise Problem(f"element '{value}' is not allowed by this build host", hint)
    return value


def _entry_value(node: Map, key: str) -> Node | None:
    entry = node.get(key)
    return entry.value if entry else None


def _item(node: Map, key: str, value: str) -> Node:
    """The list item under ``key`` whose text is ``value`` (or the list, or the mapping)."""
    seq = _entry_value(node, key)
    if isinstance(seq, Seq):
        for item in seq.items:
            if isinstance(item, Scalar) and item.value == value:
                return item
    return seq or node


def rule_release(values: dict[str, Any], node: Map, ck: Checker) -> None:
    distro, release = values.get("distro"), values.get("release")
    if not isinstance(distro, Distro) or not isinstance(release, str):
        return
    found = distro.release(release)
    if found is not None:
        values["release"] = found
        return
    names = [name for r in distro.releases for name in (r.version, r.codename)]
    listed = ", ".join(f"{r.version} ({r.codename})" for r in distro.releases)
    where = _entry_value(node, "release") or node
    ck.error(
        where.mark,
        f"expected a {distro} release: {listed}; found '{release}'",
        did_you_mean(release, names),
    )


def rule_arch(values: dict[str, Any], node: Map, ck: Checker) -> None:
    distro, arch = values.get("distro"), values.get("arch")
    if isinstance(distro, Distro) and isinstance(arch, Arch) and not distro.supports(arch):
        supported = ", ".join(a for a in Arch if distro.supports(a))
        where = _entry_value(node, "arch") or node
        ck.error(
            where.mark, f"expected an architecture {distro} supports ({supported}); found '{arch}'"
        )


def rule_services(values: dict[str, Any], node: Map, ck: Checker) -> None:
    enabled = set(values.get("enable", ()))
    for unit in values.get("disable", ()):
        if unit in enabled:
            where = _item(node, "disable", unit)
            ck.error(where.mark, f"unit '{unit}' is both enabled and disabled")


def rule_compress_qcow2(values: dict[str, Any], node: Map, ck: Checker) -> None:
    formats = values.get("formats")
    compress = values.get("compress") is True
    if compress and isinstance(formats, list) and DiskFormat.QCOW2 not in formats:
        where = _entry_value(node, "compress") or node
        listed = ", ".join(str(f) for f in formats) or "none"
        ck.error(
            where.mark,
            f"true needs qcow2 in formats (formats: {listed});"
            " only a qcow2 has compressed clusters",
            "add qcow2 to disk.formats, or drop compress",
        )


def rule_scripts_allowed(values: dict[str, Any], node: Map, ck: Checker) -> None:
    if values.get("scripts") and not ck.context.allow_scripts:
        where = _entry_value(node, "scripts") or node
        ck.error(
            where.mark,
            "scripts are refused by this build host",
            "its policy must set allow_scripts to build recipes with scripts",
        )


def rule_fs_none_alone(values: dict[str, Any], node: Map, ck: Checker) -> None:
    access = values.get("fs_access", ())
    if FsAccess.NONE in access and len(access) > 1:
        others = ", ".join(a for a in access if a is not FsAccess.NONE)
        where = _item(node, "fs_access", FsAccess.NONE)
        ck.error(where.mark, f"'none' cannot be combined with other file-system access ({others})")


def rule_user_root(values: dict[str, Any], node: Map, ck: Checker) -> None:
    policy = values.get("root_policy")
    if not isinstance(policy, RootPolicy) or not policy.user_has_root:
        return
    where_policy = _entry_value(node, "root_policy") or node
    why = f"root_policy is 'user' (line {where_policy.mark.line})"
    for access in values.get("fs_access", ()):
        if access.is_site_filesystem:
            where = _item(node, "fs_access", access)
            ck.error(where.mark, f"user root and site file systems don't mix: '{access}' but {why}")
    model = values.get("model")
    if isinstance(model, WorkerNodeModel) and model.site_managed:
        where = _entry_value(node, "model") or node
        ck.error(where.mark, f"a '{model}' worker node cannot give users root, but {why}")


def rule_boot_arch(values: dict[str, Any], node: Map, ck: Checker) -> None:
    mode, base = values.get("boot"), values.get("base")
    arch = base.get("arch") if isinstance(base, dict) else None
    if not isinstance(mode, BootMode) or not isinstance(arch, Arch) or mode.supported_on(arch):
        return
    where = _entry_value(node, "boot") or node
    other = next(m for m in BootMode if m is not mode and m.supported_on(arch))
    ck.error(
        where.mark,
        f"'{arch}' images do not boot with '{mode}'",
        f"set boot: {other}, or leave it out for the architecture's usual one",
    )


# -- third-party apt repositories ---------------------------------------------------

#: Characters that have no place in a repository URL apt is given (a deb822 line).
_URL_BAD = re.compile(r"[\s\\\"'<>{}|^`\x00-\x1f\x7f]")


def check_repository_url(value: str, node: Scalar, ck: Checker) -> str:
    """An http(s) URL without credentials, query or fragment; returned without a trailing '/'."""
    if _URL_BAD.search(value):
        raise Problem(
            f"expected a URL without spaces, quotes or control characters, found {value!r}"
        )
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise Problem(
            f"expected an http or https URL, found {value!r}",
            "apt repositories are added over http(s); the pinned key verifies what they serve"
            " (file:, cdrom:, ftp: and others are refused)",
        )
    if "@" in parts.netloc:
        raise Problem(
            "expected a URL without credentials (user:password@), found one",
            "recipes are published and signed: put no secrets in them; a site that needs"
            " credentials configures them on the build host",
        )
    if not parts.hostname:
        raise Problem(f"expected a URL with a host name, found {value!r}")
    try:
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError:
        raise Problem(f"expected a URL with a valid port, found {value!r}") from None
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise Problem(f"expected a URL without '?query' or '#fragment', found {value!r}")
    if ".." in parts.path.split("/") or "." in parts.path.split("/"):
        raise Problem(f"expected a URL path without '.' or '..' segments, found {value!r}")
    return value.rstrip("/")


def to_fingerprint(text: str) -> str:
    return text.upper()


def fingerprint_hint(text: str) -> str | None:
    """For a fingerprint written with spaces or a 0x prefix, as gpg prints them."""
    compact = text.replace(" ", "").removeprefix("0x").removeprefix("0X")
    if re.fullmatch(r"[0-9A-Fa-f]{40}", compact):
        return f"write it as 40 hex digits without spaces: '{compact.upper()}'"
    if re.fullmatch(r"[0-9A-Fa-f]{8}|[0-9A-Fa-f]{16}", compact):
        return "a short or long key ID is not a pin: give the full 40-digit fingerprint"
    return None


@dataclass(frozen=True)
class KeyFile:
    """A repository's signing key read from next to the recipe."""

    path: Path
    key: PublicKey


def check_key_file(value: str, node: Scalar, ck: Checker) -> KeyFile:
    """Read ``key.file``: one OpenPGP public key (armored or binary) next to the recipe."""
    source = read_beside_recipe(value, node)
    try:
        return KeyFile(source.path, read_public_key(source.data))
    except KeyFileError as exc:
        raise Problem(
            f"'{value}' is not a usable OpenPGP public key: {exc}",
            "export the repository's signing key alone (gpg --export --armor FINGERPRINT)",
        ) from None


def rule_key_given(values: dict[str, Any], node: Map, ck: Checker) -> None:
    if node.get("file") is None and node.get("fingerprint") is None:
        ck.error(
            node.mark,
            "expected 'file', 'fingerprint' or both: the repository's key must be pinned",
            "a key is never fetched unpinned; give the key file, its fingerprint, or both",
        )
        return
    key, pinned = values.get("file"), values.get("fingerprint")
    if isinstance(key, KeyFile) and isinstance(pinned, str) and key.key.fingerprint != pinned:
        where = _entry_value(node, "fingerprint") or node
        ck.error(
            where.mark,
            f"the key file holds key {key.key.fingerprint}, not the pinned {pinned}",
            "pin the fingerprint of the key the repository signs with, and ship that key",
        )


def repository_fingerprint(values: dict[str, Any]) -> str | None:
    """The pinned fingerprint of a parsed repository entry (from the key file or the pin)."""
    key = values.get("key")
    if not isinstance(key, dict):
        return None
    pinned, file = key.get("fingerprint"), key.get("file")
    if isinstance(pinned, str):
        return pinned
    return file.key.fingerprint if isinstance(file, KeyFile) else None


def rule_repository_allowed(values: dict[str, Any], node: Map, ck: Checker) -> None:
    """The build host lists the repository (by URL and key) as one a recipe may add."""
    url, fingerprint = values.get("url"), repository_fingerprint(values)
    if not isinstance(url, str) or fingerprint is None:
        return
    allowed = ck.context.allowed_repositories
    where = _entry_value(node, "url") or node
    name = values.get("name", "?")
    by_url = [a for a in allowed if a.covers(url)]
    if any(fingerprint in a.fingerprints for a in by_url):
        return
    setting = "build.allowed_repositories"
    if by_url:
        listed = ", ".join(sorted({f for a in by_url for f in a.fingerprints}))
        ck.error(
            where.mark,
            f"repository '{name}': key {fingerprint} is not one this build host allows for"
            f" {url} (allowed: {listed})",
            f"the site adds the fingerprint to the {setting} entry for this URL",
        )
        return
    ck.error(
        where.mark,
        f"repository '{name}' ({url}) is not allowed by this build host",
        f"the site's settings must list it: {setting}: [{{url_prefix: {url},"
        f" fingerprints: [{fingerprint}]}}]"
        + ("" if allowed else " (no repository is allowed now)"),
    )


def rule_repository_suites(values: dict[str, Any], node: Map, ck: Checker) -> None:
    for key in ("suites", "components"):
        if values.get(key) == [] and node.get(key) is not None:
            where = _entry_value(node, key) or node
            ck.error(where.mark, f"expected at least one item in '{key}'")


def rule_repository_arch(values: dict[str, Any], node: Map, ck: Checker) -> None:
    """A repository restricted to some architectures must serve the image's."""
    base = values.get("base")
    arch = base.get("arch") if isinstance(base, dict) else None
    if not isinstance(arch, Arch):
        return
    entry = _entry_value(node, "repositories")
    items: dict[object, Map] = {}
    for node_item in entry.items if isinstance(entry, Seq) else ():
        named = _entry_value(node_item, "name") if isinstance(node_item, Map) else None
        if isinstance(node_item, Map) and isinstance(named, Scalar):
            items[named.value] = node_item
    for repository in values.get("repositories", ()):
        archs = repository.get("arch") or []
        item = items.get(repository.get("name"))
        if archs and arch not in archs and item is not None:
            where = _entry_value(item, "arch") or item
            ck.error(
                where.mark,
                f"repository '{repository.get('name')}' serves {', '.join(archs)},"
                f" not the image's {arch}",
            )


#: Where the element puts each repository's key and sources in the image.
REPOSITORY_KEY_PATH = "/etc/apt/keyrings/{name}.gpg"
REPOSITORY_SOURCES_PATH = "/etc/apt/sources.list.d/{name}.sources"


def rule_repository_files(values: dict[str, Any], node: Map, ck: Checker) -> None:
    """A ``files`` entry may not replace a repository's key or sources (what the labels sign)."""
    taken = {}
    for repository in values.get("repositories", ()):
        name = repository.get("name")
        if isinstance(name, str):
            taken[REPOSITORY_KEY_PATH.format(name=name)] = name
            taken[REPOSITORY_SOURCES_PATH.format(name=name)] = name
    entry = _entry_value(node, "files")
    for item in entry.items if isinstance(entry, Seq) else ():
        path = _entry_value(item, "path") if isinstance(item, Map) else None
        if isinstance(path, Scalar) and path.value in taken:
            ck.error(
                path.mark,
                f"'{path.value}' is where repository '{taken[path.value]}' keeps its pinned"
                " key or sources; a file may not replace it",
                "the repository's key is the one its `key` pins: change it there",
            )
