"""The catalog page without a browser: what it holds, what it refuses, how it is written."""

from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from imagefactory.attest.keys import load_signer
from imagefactory.catalog.publish import publish
from imagefactory.errors import CatalogError, FileAccessError
from imagefactory.model.imagedir import LayoutError
from imagefactory.page.html import csp, esc
from imagefactory.page.view import load_view
from imagefactory.page.write import write_page
from tests.catalog.world import World
from tests.page.pageworld import HOSTILE_KEY, IMG, REASON, SCRIPT, STYLE_BREAK, page_world


class _Tree(HTMLParser):
    """Every start tag with its attributes, and the text, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        (self.styles if self._in_style else self.text).append(data)


def _parse(text: str) -> _Tree:
    tree = _Tree()
    tree.feed(text)
    tree.close()
    return tree


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return page_world(tmp_path_factory.mktemp("page"))


@pytest.fixture(scope="module")
def page(world: World) -> str:
    return write_page(world.catalog.directory).path.read_text(encoding="utf-8")


def test_every_image_version_with_its_signed_facts(world: World) -> None:
    view = load_view(world.catalog.directory, world.root_json)
    rows = {(i.vo, i.name, i.version): i for i in view.images}
    assert list(rows) == [
        ("atlas", "atlas-wn", "1.1"),
        ("atlas", "atlas-wn", "1.0"),
        ("cms", "cms-wn", "2.0"),
        ("lhcb", "lhcb-wn", "3.0"),
    ]
    new, old, cms = (
        rows["atlas", "atlas-wn", "1.1"],
        rows["atlas", "atlas-wn", "1.0"],
        rows["cms", "cms-wn", "2.0"],
    )
    assert (new.status, new.latest, new.supersedes) == ("valid", True, "1.0")
    assert (old.status, old.revoked_reason, old.superseded_by) == ("revoked", REASON, "1.1")
    # A withdrawn version keeps what it was: the revocation signs its selection labels.
    assert (old.os, old.arch, old.model) == ("debian 12", "x86_64", "non-persistent")
    assert (cms.os, cms.codename, cms.arch, cms.model) == (
        "ubuntu 24.04",
        "noble",
        "aarch64",
        "persistent",
    )
    # The signer is the attestation's key id: the VO's key.
    keyid = load_signer(str(world.vo_keys["atlas"])).public_key.keyid
    assert new.signers == [f"key {keyid}"]
    disk = new.file("disk")
    assert disk is not None
    assert disk.path == f"images/atlas/atlas-wn/1.1/{disk.name}"
    data = (world.catalog.directory / disk.path).read_bytes()
    assert disk.sha256 == hashlib.sha256(data).hexdigest()
    assert disk.sha512 == hashlib.sha512(data).hexdigest()
    assert new.audit is not None
    assert new.audit.passed is True
    assert ("os.distro", "debian") in new.labels
    assert view.refused == []


def test_the_page_shows_each_image_and_marks_the_revoked_one(world: World, page: str) -> None:
    tree = _parse(page)
    rows = [a for t, a in tree.tags if t == "tr" and "img" in (a.get("class") or "").split()]
    assert len(rows) == 4
    assert sum("revoked" in (a.get("class") or "").split() for a in rows) == 1
    text = " ".join(tree.text)
    assert "revoked" in text
    assert REASON in text
    links = [a["href"] or "" for t, a in tree.tags if t == "a"]
    assert "images/atlas/atlas-wn/1.1/sbom.cdx.json" in links
    for link in links:
        assert (world.catalog.directory / link).is_file(), link


def test_markup_in_labels_and_reasons_is_text(page: str) -> None:
    tree = _parse(page)
    # No element a label could have made: the only script-capable or loading tags are absent.
    assert {t for t, _ in tree.tags} <= {
        "html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "p", "code",
        "input", "nav", "fieldset", "legend", "label", "table", "thead", "tbody", "tr", "th",
        "td", "span", "br", "small", "a", "details", "summary", "dl", "dt", "dd", "section",
        "ul", "li", "strong",
    }  # fmt: skip
    assert not any(name.startswith("on") for _, attrs in tree.tags for name in attrs)
    text = "".join(tree.text)
    for hostile in (SCRIPT, IMG, STYLE_BREAK, REASON, HOSTILE_KEY, "&amp; <i>not italic</i>"):
        assert hostile in text, hostile
    # The one stylesheet holds no label value, and is the one the CSP allows.
    [css] = tree.styles
    assert "__pwned" not in css
    assert "lhcb" not in css
    [policy] = [a["content"] for t, a in tree.tags if a.get("http-equiv")]
    assert policy == csp(css)
    assert "script-src 'none'" in (policy or "")
    assert "unsafe-inline" not in (policy or "")


def test_esc_quotes_for_attributes() -> None:
    assert esc("\"><x '") == "&quot;&gt;&lt;x &#x27;"


def test_filters_are_generated_tokens_not_values(page: str) -> None:
    tree = _parse(page)
    radios = [a for t, a in tree.tags if t == "input"]
    ids = [a["id"] or "" for a in radios]
    assert all(re.fullmatch(r"f-(os|arch|vo|model)-(all|\d+)", i or "") for i in ids)
    labels = [a["for"] or "" for t, a in tree.tags if t == "label"]
    assert sorted(labels) == sorted(ids)
    # OS: debian 12, the hostile distro and ubuntu 24.04; each an option of its own.
    assert sum(1 for i in ids if i and i.startswith("f-os-")) == 4


def test_a_descriptor_that_does_not_match_its_signed_hash_is_not_shown(
    tmp_path: Path,
) -> None:
    world = page_world(tmp_path)
    [target] = (world.catalog.targets_dir / "cms" / "cms-wn").iterdir()
    doc = json.loads(target.read_bytes())
    doc["labels"]["os"]["distro"] = "forged"
    target.write_text(json.dumps(doc))
    page = write_page(world.catalog.directory)
    assert [i.name for i in page.view.images] == ["atlas-wn", "atlas-wn", "lhcb-wn"]
    [(path, code, _)] = page.view.refused
    assert (path, code) == ("cms/cms-wn/2.0.json", "catalog-mix-and-match")
    text = page.path.read_text(encoding="utf-8")
    assert "forged" not in text
    assert "cms/cms-wn/2.0.json" in text


def test_metadata_that_does_not_verify_writes_no_page(tmp_path: Path) -> None:
    world = page_world(tmp_path)
    page = write_page(world.catalog.directory).path
    before = page.read_bytes()
    timestamp = world.catalog.metadata_dir / "timestamp.json"
    doc = json.loads(timestamp.read_bytes())
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"  # the signature no longer matches
    timestamp.write_text(json.dumps(doc))
    with pytest.raises(CatalogError) as err:
        write_page(world.catalog.directory)
    assert err.value.code == "catalog-bad-signature"
    assert page.read_bytes() == before
    assert not list(world.catalog.directory.glob(".index.html.*"))


def test_another_root_refuses_the_catalog(tmp_path: Path) -> None:
    world = page_world(tmp_path / "a")
    other = page_world(tmp_path / "b")
    with pytest.raises(CatalogError) as err:
        write_page(world.catalog.directory, root=other.catalog.metadata_dir / "root.json")
    assert err.value.code == "catalog-bad-signature"
    assert not (world.catalog.directory / "index.html").exists()


def test_an_attestation_changed_after_publishing_names_no_signer(tmp_path: Path) -> None:
    world = page_world(tmp_path)
    [att] = (world.catalog.images_dir / "cms/cms-wn/2.0").glob("key-*.dsse.json")
    att.chmod(0o644)
    doc = json.loads(att.read_bytes())
    doc["signatures"][0]["keyid"] = "f" * 64
    att.write_text(json.dumps(doc))
    view = write_page(world.catalog.directory).view
    [cms] = [i for i in view.images if i.name == "cms-wn"]
    assert cms.signers == [f"{att.name}: unconfirmed"]
    assert "not the file the catalog signed" in cms.problems[0]
    assert "f" * 64 not in (world.catalog.directory / "index.html").read_text(encoding="utf-8")


def test_a_page_elsewhere_links_back_into_the_catalog(world: World, tmp_path: Path) -> None:
    out = tmp_path / "site" / "catalog.html"
    out.parent.mkdir()
    write_page(world.catalog.directory, out)
    tree = _parse(out.read_text(encoding="utf-8"))
    links = [a["href"] for t, a in tree.tags if t == "a"]
    assert links
    assert all(link and link.startswith("../") for link in links)
    for link in links:
        assert (out.parent / (link or "")).resolve().is_file()


def test_unwritable_or_missing_places_are_named(world: World, tmp_path: Path) -> None:
    with pytest.raises(FileAccessError, match="is a directory"):
        write_page(world.catalog.directory, tmp_path)
    with pytest.raises(FileAccessError, match="no such file"):
        write_page(world.catalog.directory, tmp_path / "no" / "such" / "page.html")
    with pytest.raises(CatalogError) as err:
        write_page(tmp_path)
    assert err.value.code == "catalog-missing"


def test_an_empty_catalog_says_so(tmp_path: Path) -> None:
    from imagefactory.catalog.repo import Catalog

    catalog = Catalog(tmp_path / "catalog")
    catalog.init()
    page = write_page(catalog.directory)
    assert page.view.images == []
    assert "The catalog holds no images." in page.path.read_text(encoding="utf-8")


def test_publish_of_the_same_image_again_changes_nothing_on_the_page(tmp_path: Path) -> None:
    world = page_world(tmp_path)
    first = write_page(world.catalog.directory).view
    assert not publish(world.catalog, world.root / "src/cms/cms-wn/2.0").changed
    again = write_page(world.catalog.directory).view
    assert [(i.name, i.version, i.status) for i in again.images] == [
        (i.name, i.version, i.status) for i in first.images
    ]


def test_a_revoked_version_a_vo_role_still_lists_is_one_revoked_row(tmp_path: Path) -> None:
    from imagefactory.attest.keys import load_public_key
    from imagefactory.catalog.ops import delegate, revoke

    catalog = page_world(tmp_path).catalog
    world = World(tmp_path / "w", catalog)
    world.root.mkdir()
    key = world.vo_key("alice")
    delegate(catalog, "alice", [load_public_key(Path(f"{key}.pub"))])
    delegate(catalog, "bob", [load_public_key(Path(f"{world.vo_key('bob')}.pub"))])
    world.publish(world.image("alice-wn", "1.0", "alice"), vo_signer="alice")
    revoke(catalog, "alice-wn", "1.0", "leaked key")  # without the VO's key: still listed
    assert catalog.load().roles["vo.alice"].signed.targets
    # bob is delegated but has not published: its role is in no snapshot yet.
    view = write_page(catalog.directory).view
    rows = [i for i in view.images if i.name == "alice-wn"]
    assert [(i.status, i.revoked_reason, i.role) for i in rows] == [
        ("revoked", "leaked key", "vo.alice")
    ]
    assert rows[0].signers == [f"key {load_signer(str(key)).public_key.keyid}"]
    assert not rows[0].latest


def test_a_keyless_signer_shows_its_identity_and_issuer(tmp_path: Path) -> None:
    from imagefactory.attest.sign import sign_keyless
    from tests.fakes.imagedirs import IDENTITY, ISSUER
    from tests.fakes.sigstore_instance import PrivateSigstore
    from tests.page.pageworld import signed_image

    catalog_world = page_world(tmp_path)
    image = signed_image(catalog_world, "atlas-wn", "2.0", "atlas")
    instance = PrivateSigstore("ci")
    token = instance.token(IDENTITY, ISSUER)
    sign_keyless(image, instance.signing_context(), token, check_labels=False)
    catalog_world.publish(image)
    view = write_page(catalog_world.catalog.directory).view
    [row] = [i for i in view.images if (i.name, i.version) == ("atlas-wn", "2.0")]
    keyid = load_signer(str(catalog_world.vo_keys["atlas"])).public_key.keyid
    assert sorted(row.signers) == sorted([f"key {keyid}", f"{IDENTITY} (issuer {ISSUER})"])
    assert (row.latest, row.supersedes) == (True, "1.1")
    text = (catalog_world.catalog.directory / "index.html").read_text(encoding="utf-8")
    assert f"{IDENTITY} (issuer {ISSUER})" in text


def test_an_expired_image_is_marked_and_not_latest(world: World) -> None:
    from datetime import UTC, datetime, timedelta

    later = datetime.now(UTC) + timedelta(days=40)  # the images expire in 29 days
    view = load_view(world.catalog.directory, world.root_json, now=later)
    assert {(i.name, i.version): i.status for i in view.images} == {
        ("atlas-wn", "1.1"): "expired",
        ("atlas-wn", "1.0"): "revoked",
        ("cms-wn", "2.0"): "expired",
        ("lhcb-wn", "3.0"): "expired",
    }
    assert not any(i.latest for i in view.images)


def test_an_expired_catalog_makes_no_page_and_says_how_to_refresh_it(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from imagefactory.catalog.ops import refresh

    world = page_world(tmp_path)
    before = write_page(world.catalog.directory).path.read_bytes()
    world.catalog.clock = lambda: datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    refresh(world.catalog)  # a timestamp valid for a day, signed three days ago
    with pytest.raises(CatalogError) as err:
        write_page(world.catalog.directory)
    assert err.value.code == "catalog-expired"
    assert err.value.hint == (
        f"re-sign it: imagefactory catalog refresh --catalog {world.catalog.directory}"
    )
    assert (world.catalog.directory / "index.html").read_bytes() == before


def test_text_that_is_not_utf8_is_shown_escaped(tmp_path: Path) -> None:
    from imagefactory.catalog.ops import revoke
    from tests.page.pageworld import signed_image

    world = page_world(tmp_path)
    image = signed_image(world, "cms-wn", "2.1", "cms")
    # JSON can spell a lone surrogate: no image directory holding one is read at all.
    labels = image / "labels.json"
    good = labels.read_text()
    labels.write_text(good.replace("atlas-images@example.org", "a\\ud800b"))
    with pytest.raises(LayoutError, match="lone surrogate"):
        world.publish(image)
    labels.write_text(good)
    world.publish(image)
    revoke(world.catalog, "atlas-wn", "1.1", "bad \udcff byte")  # as argv carries a stray byte
    text = write_page(world.catalog.directory).path.read_text(encoding="utf-8")
    assert "bad \\udcff byte" in text
