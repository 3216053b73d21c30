"""labels.json as a model: validated when constructed, round-tripped without loss.

:class:`Labels` is what every stage that reads labels uses instead of digging
through dicts by dotted strings: :meth:`Labels.from_dict` checks the document
against the published schema (:mod:`imagefactory.model.labelschema`) and
:meth:`Labels.to_dict` gives back exactly what was read, unknown fields
included (a newer producer's additions survive a round trip). The typed
properties name the fields stages decide on.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from imagefactory.errors import FileAccessError, LabelError
from imagefactory.model.imagedir import LABELS_NAME, MAX_METADATA_BYTES
from imagefactory.model.labelschema import validate_labels


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Labels:
    """A schema-valid labels document."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        validate_labels(data)
        self._data: dict[str, Any] = copy.deepcopy(dict(data))

    @classmethod
    def from_dict(cls, data: Any) -> Labels:
        """Validate ``data`` (raises :class:`LabelError` naming every problem)."""
        if not isinstance(data, Mapping):
            raise LabelError(f"labels must be a JSON object, found {type(data).__name__}")
        return cls(data)

    @classmethod
    def read(cls, path: Path) -> Labels:
        """labels.json of an image directory (or the file itself), capped and validated."""
        path = path / LABELS_NAME if path.is_dir() else path
        try:
            with path.open("rb") as stream:
                raw = stream.read(MAX_METADATA_BYTES + 1)
        except OSError as exc:
            raise FileAccessError.from_os_error(path, "read the labels", exc) from exc
        if len(raw) > MAX_METADATA_BYTES:
            raise LabelError(f"{path}: labels are larger than {MAX_METADATA_BYTES} bytes")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise LabelError(f"{path}: labels are not valid JSON: {exc}") from exc
        try:
            return cls.from_dict(data)
        except LabelError as exc:
            raise LabelError(f"{path}: {exc.message}", hint=exc.hint) from exc

    def to_dict(self) -> dict[str, Any]:
        """The document as read: every field, known or not."""
        return copy.deepcopy(self._data)

    def to_json(self) -> str:
        return json.dumps(self._data, indent=2, sort_keys=False) + "\n"

    def get(self, dotted: str) -> Any:
        """The value at ``a.b.c``, or ``None`` (for fields not modelled below)."""
        value: Any = self._data
        for part in dotted.split("."):
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return copy.deepcopy(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Labels) and other._data == self._data

    def __hash__(self) -> int:
        return hash(json.dumps(self._data, sort_keys=True))

    def __repr__(self) -> str:
        return f"Labels({self.name!r}, {self.version!r})"

    # -- the fields stages decide on (the schema guarantees their types) --------

    @property
    def name(self) -> str:
        return str(self._data["image"]["name"])

    @property
    def version(self) -> str:
        return str(self._data["image"]["version"])

    @property
    def created(self) -> datetime:
        return _time(self._data["image"]["created"])

    @property
    def expires(self) -> datetime | None:
        value = self._data["image"].get("expires")
        return _time(value) if value else None

    @property
    def vos(self) -> tuple[str, ...]:
        return tuple(self._data["vo"])

    @property
    def distro(self) -> str:
        return str(self._data["os"]["distro"])

    @property
    def release(self) -> str:
        return str(self._data["os"]["version"])

    @property
    def arch(self) -> str:
        return str(self._data["os"]["arch"])

    @property
    def model(self) -> str:
        return str(self._data["trust"]["model"])

    @property
    def root_policy(self) -> str:
        return str(self._data["trust"]["root_policy"])

    @property
    def fs_access(self) -> tuple[str, ...]:
        return tuple(self._data["trust"].get("fs_access", ()))

    @property
    def disk_file(self) -> str:
        return str(self._data["disk"]["file"])

    @property
    def disk_format(self) -> str:
        return str(self._data["disk"]["format"])

    @property
    def disk_sha256(self) -> str:
        return str(self._data["disk"]["sha256"])

    @property
    def disk_sha512(self) -> str:
        return str(self._data["disk"]["sha512"])

    @property
    def disk_size(self) -> int:
        return int(self._data["disk"]["size"])

    @property
    def audit_passed(self) -> bool:
        return bool(self._data["audit"]["passed"])
