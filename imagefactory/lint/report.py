"""Lint results as text, as a merge-request comment (markdown) or as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from imagefactory.lint import ERROR, LintResult

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
    return "\n".join(lines) + "\n"


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
        if result.labels:
            lines += ["| label | value |", "| --- | --- |"]
            for section, key in _LABEL_ROWS:
                lines.append(f"| {section}.{key} | {_md(_value(result.labels, section, key))} |")
            lines.append(f"| vo | {_md(', '.join(result.labels['vo']))} |")
            lines.append("")
    return "\n".join(lines)


def render_json(results: Sequence[LintResult]) -> str:
    data = {"ok": all(r.ok for r in results), "recipes": [r.to_dict() for r in results]}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
