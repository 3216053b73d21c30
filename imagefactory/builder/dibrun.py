"""One ``disk-image-create`` run with progress and apt's errors (the build's and the layer's)."""

from __future__ import annotations

import json
from pathlib import Path

from imagefactory.builder import dib
from imagefactory.builder.context import BuildContext
from imagefactory.errors import BuildError, ImageFactoryError
from imagefactory.run import run


def run_invocation(ctx: BuildContext, call: dib.DibInvocation, cwd: Path, label: str = "") -> None:
    """Run ``call``; progress names the hook and the package (after ``label``).

    A failure quotes apt's own error lines: most failed builds are apt's.
    """
    apt_errors: list[str] = []
    current = [""]
    prefix = f"{label}: " if label else ""

    def on_line(line: str) -> None:
        phase = dib.phase_of(line)
        if phase is not None:
            current[0] = phase
            ctx.progress.status(prefix + phase)
        elif (doing := dib.apt_progress(line)) is not None:
            ctx.progress.status(f"{prefix}{current[0]}: {doing}")
        elif (error := dib.apt_error(line)) is not None and len(apt_errors) < 20:
            apt_errors.append(error)

    try:
        run(
            call.argv,
            env=call.env,
            cwd=cwd,
            logfile=ctx.logfile,
            on_line=on_line,
            echo=ctx.options.verbose,
        )
    except ImageFactoryError as exc:
        said = "".join(f"\n  apt: {e}" for e in apt_errors)
        where = f" in {current[0]}" if current[0] else ""
        raise BuildError(
            f"diskimage-builder failed{' (' + label + ')' if label else ''}{where}{said}",
            hint="the whole output is in build.log, kept under the output's .failed/",
        ) from exc


def read_dpkg_manifest(manifest_dir: Path) -> list[dict[str, str]]:
    """The packages DIB's dpkg manifest lists: name, version, arch."""
    manifests = sorted(manifest_dir.glob("dib-manifest-dpkg-*"))
    if not manifests:
        raise BuildError(f"diskimage-builder wrote no package manifest in {manifest_dir}")
    try:
        data = json.loads(manifests[0].read_text(encoding="utf-8"))
        return [
            {"name": p["package"], "version": p["version"], "arch": p["arch"]}
            for p in data["packages"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"{manifests[0]}: unreadable package manifest: {exc}") from exc
