"""``disk.compress``: a flag of the disk, in the digest only when set, and only with qcow2."""

from __future__ import annotations

from pathlib import Path

from imagefactory.recipe import load_recipe
from tests.recipe.recipe_helpers import MINIMAL, problems, write


def test_compress_defaults_off_and_leaves_the_digest_as_it_was(tmp_path: Path) -> None:
    plain = load_recipe(write(tmp_path, "a.yaml", MINIMAL))
    explicit = load_recipe(write(tmp_path, "b.yaml", MINIMAL + "disk: {compress: false}\n"))
    assert plain.disk.compress is False
    assert "compress" not in plain.canonical()["disk"]
    # Spelling out the default changes nothing: recipes built before keep their cache key.
    assert explicit.digest == plain.digest


def test_compress_true_is_part_of_what_is_built(tmp_path: Path) -> None:
    plain = load_recipe(write(tmp_path, "a.yaml", MINIMAL))
    packed = load_recipe(write(tmp_path, "b.yaml", MINIMAL + "disk: {compress: true}\n"))
    assert packed.disk.compress is True
    assert packed.canonical()["disk"] == {
        "size": 2 * 1024**3,
        "formats": ["qcow2"],
        "compress": True,
    }
    assert packed.digest != plain.digest


def test_compress_merges_through_extends(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", MINIMAL + "disk: {compress: true, size: 3G}\n")
    child = write(tmp_path, "child.yaml", MINIMAL + "extends: parent.yaml\ndisk: {size: 4G}\n")
    recipe = load_recipe(child)
    assert recipe.disk.compress is True
    assert recipe.disk.size == 4 * 1024**3


def test_compress_without_qcow2_is_refused_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", MINIMAL + "disk:\n  formats: [raw]\n  compress: true\n")
    assert problems(path) == [
        f"{path}:7:13: .disk.compress: true needs qcow2 in formats (formats: raw);"
        " only a qcow2 has compressed clusters (add qcow2 to disk.formats, or drop compress)"
    ]


def test_compress_must_be_a_boolean(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", MINIMAL + 'disk: {compress: "yes"}\n')
    [problem] = problems(path)
    assert f"{path}:5:18: .disk.compress: expected true or false" in problem
