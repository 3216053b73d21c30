"""The catalog page in a real browser: Debian's chromium, headless, over HTTP on 127.0.0.1.

What a person sees: every image row laid out, a click on a filter hides and
shows rows (with JavaScript and without), the revoked version is marked with
its reason, markup and script from labels show as text and nothing runs. A
screenshot is kept as a test artefact (under pytest's basetemp, and in
``$IMAGEFACTORY_TEST_ARTEFACTS`` when set).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagefactory.page.write import write_page
from tests.catalog.world import World
from tests.page.browser import Browser
from tests.page.pageworld import IMG, REASON, SCRIPT, STYLE_BREAK, page_world
from tests.store.httpserver import Server

pytestmark = pytest.mark.integration

ROWS = "main > table.catalog > tbody > tr.img"


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = page_world(tmp_path)
    write_page(world.catalog.directory)
    return world


@pytest.fixture
def server(world: World) -> Iterator[Server]:
    server = Server(world.catalog.directory).start()
    yield server
    server.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    browser = Browser(tmp_path / "browser")
    yield browser
    browser.close()


def _keep(shot: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep ``shot`` as a test artefact; print where."""
    kept = [tmp_path_factory.getbasetemp() / "artefacts" / shot.name]
    if os.environ.get("IMAGEFACTORY_TEST_ARTEFACTS"):
        kept.append(Path(os.environ["IMAGEFACTORY_TEST_ARTEFACTS"]) / shot.name)
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, path)
        print(f"screenshot: {path}")


def _visible(browser: Browser) -> list[str]:
    """``vo/name version`` of each row a person can see (laid out, non-zero size)."""
    shown = browser.evaluate(
        f"""JSON.stringify([...document.querySelectorAll({json.dumps(ROWS)})]
            .filter(r => r.offsetParent !== null && r.getBoundingClientRect().height > 0
                         && getComputedStyle(r).visibility === "visible")
            .map(r => r.cells[5].innerText + "/" + r.cells[0].innerText + " "
                      + r.cells[1].innerText.split(/\\s/)[0]))"""
    )
    return sorted(json.loads(shown))


def _filter(browser: Browser, legend: str, text: str) -> None:
    """Click the label ``text`` of the filter group ``legend`` with the mouse."""
    label_for = browser.evaluate(
        f"""[...document.querySelectorAll(".filters fieldset")]
            .find(f => f.querySelector("legend").innerText === {json.dumps(legend)})
            .querySelectorAll("label")
            .values().find(l => l.innerText === {json.dumps(text)}).htmlFor"""
    )
    [node] = browser.nodes(f'label[for="{label_for}"]')
    browser.click(node)
    assert browser.evaluate(f"document.getElementById({json.dumps(label_for)}).checked") is True


ALL = [
    "atlas/atlas-wn 1.0",
    "atlas/atlas-wn 1.1",
    "cms/cms-wn 2.0",
    "lhcb/lhcb-wn 3.0",
]


def test_filters_revocation_and_hostile_labels_as_a_person_sees_them(
    browser: Browser, server: Server, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    browser.open(server.url + "/index.html")
    assert _visible(browser) == ALL

    # Nothing from a label ran or became an element; it all shows as text.
    assert browser.evaluate("typeof window.__pwned") == "undefined"
    assert browser.evaluate("document.querySelectorAll('script, img, iframe, object').length") == 0
    lhcb = browser.evaluate(
        "[...document.querySelectorAll('tr.img')].find(r => r.innerText.includes('lhcb-wn'))"
        ".innerText"
    )
    assert SCRIPT in lhcb
    assert IMG in lhcb
    assert browser.evaluate(
        f"document.querySelector('.filters').innerText.includes({json.dumps(SCRIPT)})"
    )

    # The revoked version is marked, with its reason, where a person looks.
    revoked = browser.evaluate(
        """JSON.stringify((() => { const r = document.querySelector('tr.img.revoked');
            const badge = r.querySelector('.st-revoked'), box = badge.getBoundingClientRect();
            return {row: r.innerText, badge: badge.innerText, w: box.width, h: box.height,
                    bg: getComputedStyle(badge).backgroundColor}; })())"""
    )
    revoked = json.loads(revoked)
    assert revoked["badge"] == "revoked"
    assert revoked["w"] > 0
    assert revoked["h"] > 0
    assert revoked["bg"] == "rgb(185, 28, 28)"
    assert REASON in revoked["row"]
    assert "atlas-wn" in revoked["row"]
    shot = browser.screenshot(tmp_path / "catalog-page.png")
    _keep(shot, tmp_path_factory)

    # Each filter hides the other rows; filters of several groups combine.
    _filter(browser, "OS", "ubuntu 24.04")
    assert _visible(browser) == ["cms/cms-wn 2.0"]
    _filter(browser, "OS", "all")
    assert _visible(browser) == ALL
    _filter(browser, "Arch", "x86_64")
    assert _visible(browser) == ["atlas/atlas-wn 1.0", "atlas/atlas-wn 1.1", "lhcb/lhcb-wn 3.0"]
    _filter(browser, "VO", "atlas")
    assert _visible(browser) == ["atlas/atlas-wn 1.0", "atlas/atlas-wn 1.1"]
    _filter(browser, "Model", "persistent")
    assert _visible(browser) == []
    _filter(browser, "Model", IMG)
    assert _visible(browser) == []
    _filter(browser, "VO", "all")
    assert _visible(browser) == ["lhcb/lhcb-wn 3.0"]

    # Its details open with a click and show the hostile labels as text.
    [summary] = [n for n in browser.nodes("tr.more summary") if browser.box(n) is not None]
    browser.click(summary)
    details = browser.evaluate(
        "[...document.querySelectorAll('tr.more')].find(r => r.offsetParent)"
        ".querySelector('details').innerText"
    )
    assert STYLE_BREAK in details
    assert "<i>not italic</i>" in details
    assert browser.evaluate("typeof window.__pwned") == "undefined"
    shot = browser.screenshot(tmp_path / "catalog-page-filtered.png", full=True)
    _keep(shot, tmp_path_factory)


def test_the_filter_works_with_javascript_disabled(browser: Browser, server: Server) -> None:
    browser.command("Emulation.setScriptExecutionDisabled", value=True)
    # Scripts are really off: a page's own script does not run.
    browser.open("data:text/html,<title>before</title><script>document.title='ran'</script>")
    [title] = browser.nodes("title")
    assert "before" in browser.text(title)
    browser.open(server.url + "/index.html")

    def shown() -> int:
        return sum(browser.box(n) is not None for n in browser.nodes(ROWS))

    assert shown() == 4
    [badge] = browser.nodes("tr.img.revoked .st-revoked")
    assert browser.box(badge) is not None
    assert "revoked" in browser.text(badge)
    labels = {
        browser.text(n).rsplit('">', 1)[-1].removesuffix("</label>"): n
        for n in browser.nodes(".filters label")
    }
    browser.click(labels["cms"])
    assert shown() == 1
    [row] = [n for n in browser.nodes(ROWS) if browser.box(n) is not None]
    assert "cms-wn" in browser.text(row)
    browser.click(labels["aarch64"])
    assert shown() == 1
    browser.click(labels["non-persistent"])
    assert shown() == 0
