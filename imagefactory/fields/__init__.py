"""The field-table engine: every YAML document imagefactory reads is checked by it.

A document kind (recipe, site trust policy, host settings, hardening profile)
is one table of :class:`~imagefactory.fields.types.Field` s; the engine reads
the YAML with positions (:mod:`.yamlsource`), checks every value against the
table and reports *every* problem at once, each at ``file:line:column`` with
its key path and a "did you mean" where one fits. Shared value syntaxes
(sizes, durations, VO names) are in :mod:`.values`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagefactory.errors import Diagnostic, DiagnosticsError
from imagefactory.fields.types import Checker, Struct
from imagefactory.fields.yamlsource import Origin, load_document


def load_table(
    path: Path,
    table: Struct,
    error: Callable[[list[Diagnostic]], DiagnosticsError],
    *,
    context: Any = None,
    display: str | None = None,
    empty_ok: bool = False,
) -> dict[str, Any]:
    """Read the YAML document at ``path`` and check it against ``table``.

    Returns the checked values (defaults filled in). Raises ``error(diagnostics)``
    with every problem, sorted by place. With ``empty_ok`` an empty document
    stands for all defaults.
    """
    origin = Origin(display or str(path), path)
    tree, diagnostics = load_document(path, origin, empty_ok=empty_ok)
    ck = Checker(context)
    values: Any = None
    if tree is None and not diagnostics:
        values = table.default_value(None)
    elif tree is not None:
        values = table.parse(tree, ck, partial=False)
        diagnostics += ck.diagnostics
    if diagnostics or not isinstance(values, dict):
        unique = sorted(set(diagnostics), key=lambda d: (d.line, d.column, d.path, d.message))
        raise error(unique)
    return values
