"""The catalog page as one static HTML document: a table with CSS-only filters.

No script at all: the filters are radio buttons placed before the table
(``#f-os-1:checked ~ .catalog tr.r:not(.os-1) { display: none }``), so they
work with JavaScript disabled and in every browser; a CSS counter says how many
rows are shown. Details (every label, every file's digests) are ``<details>``
elements.

Every value from the catalog is untrusted (labels come from VO recipes and
images) and goes through :func:`esc` (``html.escape`` with quotes) into element
text or a quoted attribute, never into a ``<style>``, a ``<script>``, a class
name or a URL scheme: the stylesheet and class names use generated tokens
(``os-0``, ``arch-1``), links are catalog-relative paths whose segments the
descriptor parser checked, each percent-encoded. A Content-Security-Policy
allows nothing but the one stylesheet (by its hash): no script, no images,
no requests.
"""

from __future__ import annotations

import base64
import hashlib
import html
from urllib.parse import quote

from imagefactory.page.view import FILTERS, CatalogView, FileView, ImageView


def esc(value: object) -> str:
    """Text for HTML element content or a double-quoted attribute.

    A lone surrogate (JSON can spell one, argv can carry one) is not UTF-8: it
    is shown as its escape (``\\ud800``) instead of making the page unwritable.
    """
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return html.escape(text, quote=True)


def href(prefix: str, relpath: str) -> str:
    """A link to the catalog file ``relpath``; ``prefix`` leads from the page to the catalog."""
    parts = [p for p in prefix.split("/") if p] + relpath.split("/")
    return esc("/".join(quote(p, safe="") for p in parts))


_BASE_CSS = """
:root { color-scheme: light; font-family: "DejaVu Sans", sans-serif; font-size: 14px; }
body { margin: 1rem 1.5rem; color: #1a1a1a; background: #fff; }
h1 { font-size: 1.5rem; margin: 0 0 .3rem; }
.meta { color: #444; margin: 0 0 1rem; }
code, .mono { font-family: "DejaVu Sans Mono", monospace; font-size: .85rem;
  word-break: break-all; }
.f { position: absolute; opacity: 0; width: 1px; height: 1px; margin: 0; }
.filters { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; margin: 0 0 .8rem; }
.filters fieldset { border: 1px solid #bbb; border-radius: 4px; padding: .3rem .6rem; margin: 0; }
.filters legend { font-weight: bold; padding: 0 .3rem; }
.filters label { display: inline-block; padding: .15rem .5rem; margin: .1rem; border-radius: 3px;
  border: 1px solid #999; cursor: pointer; background: #f4f4f4; }
.catalog { border-collapse: collapse; width: 100%; }
.catalog th, .catalog td { border: 1px solid #ccc; padding: .3rem .45rem; text-align: left;
  vertical-align: top; }
.catalog thead th { background: #e8edf3; position: sticky; top: 0; }
main { counter-reset: shown; }
.catalog tbody tr.img { counter-increment: shown; }
.shown::before { content: counter(shown); }
.count { margin: .6rem 0; color: #333; }
tr.revoked td { background: #fde8e8; }
tr.expired td { background: #fff6dd; }
.st { font-weight: bold; padding: .05rem .35rem; border-radius: 3px; white-space: nowrap; }
.st-valid { color: #14532d; background: #dcfce7; }
.st-revoked { color: #fff; background: #b91c1c; }
.st-expired { color: #713f12; background: #fde68a; }
.reason { display: block; color: #7f1d1d; font-weight: bold; margin-top: .2rem; }
.latest { color: #1e3a8a; font-size: .8rem; font-weight: bold; }
.audit-pass { color: #14532d; font-weight: bold; }
.audit-fail { color: #b91c1c; font-weight: bold; }
.problem { color: #b91c1c; }
details summary { cursor: pointer; color: #1e3a8a; }
dl.labels { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .8rem;
  margin: .3rem 0; }
dl.labels dt { font-family: "DejaVu Sans Mono", monospace; font-size: .8rem; color: #444; }
dl.labels dd { margin: 0; word-break: break-all; }
table.files { border-collapse: collapse; margin-top: .3rem; }
table.files td, table.files th { border: 1px solid #ddd; padding: .15rem .3rem; font-size: .8rem; }
td.signer { min-width: 17em; }
tr.more td { border-top: none; padding-top: 0; font-size: .9rem; }
tr.img td, tr.img th { border-bottom: none; }
.refused { border: 1px solid #b91c1c; padding: .5rem 1rem; margin-top: 1rem; }
"""


COLUMNS = 11


def _tokens(view: CatalogView) -> dict[str, dict[str, str]]:
    """For each filter, every value the images have, mapped to a generated token."""
    out: dict[str, dict[str, str]] = {}
    for key, _ in FILTERS:
        values = sorted({image.facet(key) for image in view.images})
        out[key] = {value: f"{key}-{n}" for n, value in enumerate(values)}
    return out


def stylesheet(tokens: dict[str, dict[str, str]]) -> str:
    """The page's CSS: the base rules and one hide rule per filter value (tokens only)."""
    rules = [_BASE_CSS]
    for key, values in tokens.items():
        rules.append(
            f'#f-{key}-all:checked ~ .filters label[for="f-{key}-all"]'
            " { background: #1e3a8a; color: #fff; border-color: #1e3a8a; }"
        )
        rules.append(
            f'#f-{key}-all:focus-visible ~ .filters label[for="f-{key}-all"]'
            " { outline: 2px solid #f59e0b; }"
        )
        for token in values.values():
            rules.append(
                f"#f-{token}:checked ~ .catalog tbody tr.r:not(.{token}) {{ display: none; }}"
            )
            rules.append(
                f'#f-{token}:checked ~ .filters label[for="f-{token}"]'
                " { background: #1e3a8a; color: #fff; border-color: #1e3a8a; }"
            )
            rules.append(
                f'#f-{token}:focus-visible ~ .filters label[for="f-{token}"]'
                " { outline: 2px solid #f59e0b; }"
            )
    return "\n".join(rules) + "\n"


def csp(css: str) -> str:
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    return (
        f"default-src 'none'; style-src 'sha256-{digest}'; img-src 'none'; script-src 'none';"
        " base-uri 'none'; form-action 'none'"
    )


def render(view: CatalogView, prefix: str = "") -> str:
    """The page for ``view``; ``prefix`` leads from the page's directory to the catalog's."""
    tokens = _tokens(view)
    css = stylesheet(tokens)
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp(css))}">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Image catalog</title>",
        f"<style>{css}</style>",
        "</head>",
        "<body>",
        "<main>",
        "<h1>Image catalog</h1>",
        '<p class="meta">',
        f"Catalog version {esc(view.catalog_version)}, verified against root version"
        f" {esc(view.root_version)} (sha256 <code>{esc(view.root_sha256)}</code>)."
        f" Timestamp valid until {esc(view.timestamp_expires)}, targets until"
        f" {esc(view.targets_expires)}. Page made {esc(view.generated)}.",
        "</p>",
    ]
    for key, _ in FILTERS:
        out.append(f'<input type="radio" class="f" name="{key}" id="f-{key}-all" checked>')
        for token in tokens[key].values():
            out.append(f'<input type="radio" class="f" name="{key}" id="f-{token}">')
    out.append('<nav class="filters" aria-label="Filter the images">')
    for key, title in FILTERS:
        out.append(f"<fieldset><legend>{esc(title)}</legend>")
        out.append(f'<label for="f-{key}-all">all</label>')
        for value, token in tokens[key].items():
            out.append(f'<label for="f-{token}">{esc(value)}</label>')
        out.append("</fieldset>")
    out.append("</nav>")
    out += [
        '<table class="catalog">',
        "<thead><tr>",
        *(
            f'<th scope="col">{esc(h)}</th>'
            for h in (
                "Image",
                "Version",
                "Status",
                "OS",
                "Arch",
                "VO",
                "Model",
                "Signed by",
                "Expires",
                "Audit",
                "Disk and SBOM",
            )
        ),
        "</tr></thead>",
        "<tbody>",
    ]
    for image in view.images:
        out.append(_row(image, tokens, prefix))
    out.append("</tbody></table>")
    out.append(
        f'<p class="count"><span class="shown"></span> of {len(view.images)} image versions'
        " shown</p>"
    )
    if not view.images:
        out.append("<p>The catalog holds no images.</p>")
    if view.refused:
        out.append('<section class="refused"><h2>Not shown: entries that do not verify</h2><ul>')
        for path, code, message in view.refused:
            out.append(f"<li><code>{esc(path)}</code>: {esc(code)}: {esc(message)}</li>")
        out.append("</ul></section>")
    out += ["</main>", "</body>", "</html>", ""]
    return "\n".join(out)


def _row(image: ImageView, tokens: dict[str, dict[str, str]], prefix: str) -> str:
    """Two table rows: the image, and under it its details (both hidden by the same filters)."""
    facets = [tokens[key][image.facet(key)] for key, _ in FILTERS]
    classes = ["r", "img", image.status, *facets]
    cells = [
        f'<th scope="row">{esc(image.name)}</th>',
        f"<td>{esc(image.version)}"
        + (' <span class="latest">latest</span>' if image.latest else "")
        + (f"<br>supersedes {esc(image.supersedes)}" if image.supersedes else "")
        + (f"<br>superseded by {esc(image.superseded_by)}" if image.superseded_by else "")
        + "</td>",
        f"<td>{_status(image)}</td>",
        f"<td>{esc(image.os)}" + (f" ({esc(image.codename)})" if image.codename else "") + "</td>",
        f"<td>{esc(image.arch)}</td>",
        f"<td>{esc(image.vo)}</td>",
        f"<td>{esc(image.model)}"
        + (f"<br>root: {esc(image.root_policy)}" if image.root_policy else "")
        + "</td>",
        '<td class="signer">'
        + ("<br>".join(f'<span class="mono">{esc(s)}</span>' for s in image.signers) or "—")
        + "</td>",
        f"<td>{esc(image.expires or '—')}</td>",
        f"<td>{_audit(image)}</td>",
        f"<td>{_disk(image, prefix)}</td>",
    ]
    more = ["r", "more", image.status, *facets]
    return (
        f'<tr class="{" ".join(classes)}">'
        + "".join(cells)
        + f'</tr>\n<tr class="{" ".join(more)}"><td colspan="{COLUMNS}">'
        + _details(image, prefix)
        + "</td></tr>"
    )


def _status(image: ImageView) -> str:
    text = f'<span class="st st-{image.status}">{esc(image.status)}</span>'
    if image.revoked:
        text += f'<span class="reason">{esc(image.revoked_reason)}</span>'
        if image.revoked_at:
            text += f"<small>since {esc(image.revoked_at)}</small>"
    for problem in image.problems:
        text += f'<br><span class="problem">{esc(problem)}</span>'
    return text


def _audit(image: ImageView) -> str:
    audit = image.audit
    if audit is None:
        return "—"
    if audit.passed is True:
        text = '<span class="audit-pass">passed</span>'
    elif audit.passed is False:
        text = '<span class="audit-fail">failed</span>'
    else:
        text = "unknown"
    if audit.summary:
        text += f"<br><small>{esc(audit.summary)}</small>"
    if audit.failed:
        text += "<br><small>failed: " + esc(", ".join(audit.failed)) + "</small>"
    if audit.profile:
        text += f"<br><small>profile {esc(audit.profile)}</small>"
    return text


def _link(file: FileView, prefix: str, text: str) -> str:
    return f'<a href="{href(prefix, file.path)}">{esc(text)}</a>'


def _disk(image: ImageView, prefix: str) -> str:
    disk = image.file("disk")
    parts = []
    if disk is not None:
        parts.append(_link(disk, prefix, disk.path))
        parts.append(f"{esc(image.disk_format or '')} {esc(_size(disk.length))}")
        parts.append(f'sha256 <code class="mono">{esc(disk.sha256)}</code>')
    elif image.revoked:
        parts.append("withdrawn")
    if image.oci_manifest:
        parts.append(f'OCI <code class="mono">{esc(image.oci_manifest)}</code>')
    sbom = image.file("sbom")
    if sbom is not None:
        parts.append(_link(sbom, prefix, "SBOM (CycloneDX)"))
    return "<br>".join(parts) or "—"


def _size(length: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if length >= factor:
            return f"{length / factor:.1f} {unit}"
    return f"{length} B"


def _details(image: ImageView, prefix: str) -> str:
    parts = [
        f"<details><summary>labels and files of {esc(image.name)} {esc(image.version)}</summary>"
    ]
    if image.role:
        parts.append(
            f"<p>signed in role <code>{esc(image.role)}</code>"
            + (f", published {esc(image.published)}" if image.published else "")
            + "</p>"
        )
    if image.files:
        parts.append(
            '<table class="files"><tr><th>file</th><th>kind</th><th>bytes</th><th>digests</th></tr>'
        )
        for f in image.files:
            digests = f'sha256 <code class="mono">{esc(f.sha256)}</code>'
            if f.sha512:
                digests += f'<br>sha512 <code class="mono">{esc(f.sha512)}</code>'
            if f.oci:
                digests += f'<br>OCI <code class="mono">{esc(f.oci)}</code>'
            parts.append(
                f"<tr><td>{_link(f, prefix, f.name)}</td><td>{esc(f.kind)}</td>"
                f"<td>{esc(f.length)}</td><td>{digests}</td></tr>"
            )
        parts.append("</table>")
    if image.labels:
        parts.append('<dl class="labels">')
        for key, value in image.labels:
            parts.append(f"<dt>{esc(key)}</dt><dd>{esc(value)}</dd>")
        parts.append("</dl>")
    parts.append("</details>")
    return "".join(parts)
