"""Lint results as text, as a merge-request comment (markdown) or as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from imagefactory.lint import ERROR, LintResult
from imagefactory.lint.published import CatalogDiff

_LABEL_ROWS = (
    ("image", "name"),
    ("image", "version"),
    ("os", "distro"),
    ("os", "version"),
    ("os", "codename"),
    ("os", "arch"),
    ("trust", "model"),
    ("trust", "root_policy"),
    ("trust", "fs_access"),
    ("audit", "profile"),
    ("image", "expires"),
)


def _value(labels: dict[str, Any], section: str, key: str) -> str:
    value = labels.get(section, {}).get(key)
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return "-" if value is None else str(value)


def render_text(results: Sequence[LintResult]) -> str:
    lines: list[str] = []
    for result in results:
        state = "ok" if result.ok else "FAIL"
        lines.append(f"{result.recipe}: {state}")
        for f in result.findings:
            where = f"{f.where}: " if f.where else ""
            lines.append(f"  {f.severity}: {where}[{f.code}] {f.message}")
        if result.labels:
            lines.append("  labels:")
            for section, key in _LABEL_ROWS:
                lines.append(f"    {section}.{key}: {_value(result.labels, section, key)}")
            lines.append(f"    vo: {', '.join(result.labels['vo'])}")
        if result.catalog is not None:
            lines += ["  " + line for line in _catalog_text(result.catalog)]
    return "\n".join(lines) + "\n"


def _catalog_text(diff: CatalogDiff) -> list[str]:
    published = diff.published
    if published is None:
        return [f"catalog {diff.catalog}: not published yet (a new image)"]
    lines = [f"against {published.version} published in {diff.catalog}:"]
    for c in diff.labels:
        lines.append(f"  label {c.label}: {c.old or '-'} -> {c.new or '-'}")
    lines += [f"  package added: {name}" for name in diff.added]
    lines += [f"  package removed: {name}" for name in diff.removed]
    lines += [f"  package {v.change}: {v.package} {v.old} -> {v.new}" for v in diff.versions]
    if not diff.changed:
        lines.append("  no label or requested package changes")
    return lines


def _md(text: str) -> str:
    """A value made safe inside a markdown table cell: no markup, no pipes, no HTML."""
    out = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = out.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for char in "`*_[]#!":
        out = out.replace(char, "\\" + char)
    return out


def render_markdown(results: Sequence[LintResult]) -> str:
    """A merge-request comment: the findings first, then a table of the labels."""
    lines: list[str] = []
    failed = [r for r in results if not r.ok]
    head = "recipe lint: " + (
        f"{len(failed)} of {len(results)} recipe(s) would be refused" if failed else "all clear"
    )
    lines += [f"### {head}", ""]
    for result in results:
        mark = "✅" if result.ok else "❌"
        lines += [f"#### {mark} {_md(result.recipe.name)}", ""]
        if result.findings:
            lines += ["| severity | code | where | finding |", "| --- | --- | --- | --- |"]
            for f in sorted(result.findings, key=lambda f: f.severity != ERROR):
                lines.append(
                    f"| {f.severity} | {_md(f.code)} | {_md(f.where or '')} | {_md(f.message)} |"
                )
            lines.append("")
        if result.labels and result.catalog is not None and result.catalog.published:
            lines += _labels_diff_markdown(result.labels, result.catalog)
            lines += _packages_markdown(result.catalog)
        elif result.labels:
            lines += ["| label | value |", "| --- | --- |"]
            for section, key in _LABEL_ROWS:
                lines.append(f"| {section}.{key} | {_md(_value(result.labels, section, key))} |")
            lines.append(f"| vo | {_md(', '.join(result.labels['vo']))} |")
            lines.append("")
            if result.catalog is not None:
                lines += [f"Not in the catalog {_md(result.catalog.catalog)} yet: a new image.", ""]
    return "\n".join(lines)


def _labels_diff_markdown(labels: dict[str, Any], diff: CatalogDiff) -> list[str]:
    """The labels, old -> new: every usual row, and every other label that changes."""
    published = diff.published
    if published is None:
        return []
    changed = {c.label: c for c in diff.labels}
    version = _md(published.version)
    lines = [
        f"| label | published {version} | this recipe | |",
        "| --- | --- | --- | --- |",
    ]
    rows = [f"{section}.{key}" for section, key in _LABEL_ROWS if key != "expires"] + ["vo"]
    rows += [label for label in changed if label not in rows]
    for label in rows:
        section, _, key = label.partition(".")
        if label in changed:
            old, new, mark = changed[label].old or "-", changed[label].new or "-", "changed"
        elif label == "vo":
            old = new = ", ".join(labels["vo"])
            mark = ""
        else:
            old = new = _value(labels, section, key)
            mark = ""
        lines.append(f"| {_md(label)} | {_md(old)} | {_md(new)} | {mark} |")
    return [*lines, ""]


def _packages_markdown(diff: CatalogDiff) -> list[str]:
    published = diff.published
    if published is None:
        return []
    if published.packages is None:
        return ["The catalog has no SBOM for this image: no package diff.", ""]
    if not any(p.role for p in published.packages.values()):
        return ["The catalog's SBOM marks no package roles: no package diff.", ""]
    lines = [f"**Requested packages** against {_md(published.version)}:", ""]
    rows = [(name, "-", "requested", "added") for name in diff.added]
    rows += [(name, published.packages[name].version, "-", "removed") for name in diff.removed]
    rows += [(v.package, v.old, v.new, v.change) for v in diff.versions]
    if rows:
        lines += ["| package | published | this recipe | change |", "| --- | --- | --- | --- |"]
        lines += [f"| {_md(a)} | {_md(b)} | {_md(c)} | {d} |" for a, b, c, d in rows]
        lines.append("")
    else:
        lines += ["No requested package added, removed or re-pinned.", ""]
    if diff.unchanged:
        lines += [
            f"{len(diff.unchanged)} requested packages are kept unpinned: the build installs"
            " the archive's current version of each (dependencies are not predicted).",
            "",
        ]
    return lines


def render_json(results: Sequence[LintResult]) -> str:
    data = {"ok": all(r.ok for r in results), "recipes": [r.to_dict() for r in results]}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
