"""labels.json as a model: validated at construction, an exact round trip, capped reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from imagefactory.errors import FileAccessError, LabelError
from imagefactory.model.imagedir import MAX_METADATA_BYTES
from imagefactory.model.labels import Labels
from tests.labels.labels_helpers import labels_for, recipe


def test_round_trip_keeps_every_field_and_types_the_decisive_ones() -> None:
    data, _ = labels_for(recipe())
    data["extra"] = {"site.example/queue": "atlas-long"}
    labels = Labels.from_dict(data)
    assert labels.to_dict() == data
    assert Labels.from_dict(json.loads(labels.to_json())) == labels
    assert (labels.name, labels.version, labels.vos) == ("atlas-wn-debian12", "1.0", ("atlas",))
    assert (labels.distro, labels.release, labels.arch) == ("debian", "12", "x86_64")
    assert labels.disk_format == "qcow2"
    assert labels.get("extra.site.example/queue") is None  # dotted paths split on dots
    assert labels.get("extra")["site.example/queue"] == "atlas-long"
    assert labels.expires is not None
    assert labels.expires > labels.created
    changed = labels.to_dict()
    changed["os"]["arch"] = "i386"
    assert labels.arch == "x86_64"  # the model is not a view of the caller's dict


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["os"].update(arch="amd64"), r"\.os\.arch"),
        (lambda d: d.pop("disk"), "'disk' is a required property"),
        (lambda d: d.update(surprise=1), "surprise"),
    ],
)
def test_invalid_labels_are_refused_naming_the_place(edit: object, message: str) -> None:
    data, _ = labels_for(recipe())
    edit(data)  # type: ignore[operator]
    with pytest.raises(LabelError) as exc:
        Labels.from_dict(data)

    assert re.search(message, exc.value.render()), exc.value.render()


def test_read_refuses_hostile_files_without_a_traceback(tmp_path: Path) -> None:
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(LabelError, match="not valid JSON"):
        Labels.read(nested)
    big = tmp_path / "big.json"
    with big.open("wb") as stream:
        stream.truncate(MAX_METADATA_BYTES + 1)
    with pytest.raises(LabelError, match="larger than"):
        Labels.read(big)
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(LabelError, match="must be a JSON object"):
        Labels.read(listed)
    with pytest.raises(FileAccessError, match="cannot read the labels: no such file"):
        Labels.read(tmp_path / "absent.json")
