"""Verify every disk of one start request."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from imagefactory.gate.dirs import untrusted_dir
from imagefactory.gate.disks import DiskRequest, Mapped, Refused, map_disk
from imagefactory.gate.overlay import check_overlay
from imagefactory.gate.retired import retired_problem
from imagefactory.model.reason import printable
from imagefactory.trust import TrustPolicy
from imagefactory.verify.cache import VerifiedCache, verify_cached
from imagefactory.verify.pipeline import VerifyOptions, verify_image
from imagefactory.verify.verdict import Reason, Verdict


@dataclass(frozen=True)
class GateConfig:
    """What a hypervisor host's gate checks against."""

    policy: TrustPolicy
    store: Path
    cache: VerifiedCache | None = None
    #: How to verify: the inspector for images the policy wants inspected.
    options: VerifyOptions = field(default_factory=VerifyOptions)
    #: The hypervisor programs a domain's ``<emulator>`` may name (settings).
    hypervisors: tuple[str, ...] = ()
    #: The host's packaged firmware files an ``<os><loader>`` may name (settings).
    firmware: tuple[str, ...] = ()
    #: Where imagefactory makes overlays (:mod:`.overlay`); ``None``: overlays refused.
    run_dir: Path | None = None


@dataclass
class GateResult:
    #: Problems found before verifying (XML, unmappable disks, direct kernel boot).
    refusals: list[Reason] = field(default_factory=list)
    verdicts: dict[Path, Verdict] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return not self.refusals and all(v.allowed for v in self.verdicts.values())

    def render(self, subject: str) -> str:
        if self.allowed:
            return printable(f"imagefactory gate: {subject}: allowed")
        lines = [printable(f"imagefactory gate: refusing {subject}:")]
        lines += ["  " + r.render() for r in self.refusals]
        for verdict in self.verdicts.values():
            if not verdict.allowed:
                lines.append(printable(f"  image {verdict.image}: denied"))
                lines += ["    " + r.render() for r in verdict.denials]
        return "\n".join(lines)


def _overlay_problem(mapped: Mapped, config: GateConfig) -> str | None:
    """The overlay check of :mod:`.overlay` (libvirt and xl: hashed through a fresh open)."""
    overlay, base = mapped.overlay, mapped.base
    if overlay is None or base is None:
        return None
    try:
        fd = os.open(overlay, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot open: {exc.strerror}"
    try:
        return check_overlay(overlay, fd, base, mapped.base_format, config.run_dir)
    finally:
        os.close(fd)


def check_disks(
    disks: Iterable[DiskRequest], config: GateConfig, refusals: Iterable[Reason] = ()
) -> GateResult:
    """Map every disk to its image directory and verify each directory once."""
    result = GateResult(refusals=list(refusals))
    for request in disks:
        try:
            mapped = map_disk(request, config.store)
        except Refused as exc:
            result.refusals.append(exc.reason)
            continue
        # libvirt and xl open the disk again by path after we return: only a store
        # whose directories nobody but root can change keeps that path meaning this file.
        problem = untrusted_dir(mapped.image_dir, config.store)
        if problem is not None:
            result.refusals.append(Reason("gate-untrusted-dir", "gate", problem))
            continue
        if mapped.overlay is not None:
            why = _overlay_problem(mapped, config)
            if why is not None:
                result.refusals.append(
                    Reason("gate-overlay", "gate", f"{request.where}: {mapped.overlay}: {why}")
                )
                continue
        retired = retired_problem(mapped.image_dir, config.store, mapped.overlay)
        if retired is not None:
            result.refusals.append(Reason("gate-retired", "gate", f"{request.where}: {retired}"))
            continue
        if mapped.image_dir in result.verdicts:
            continue
        if config.cache is not None:
            verdict = verify_cached(mapped.image_dir, config.policy, config.cache, config.options)
        else:
            verdict = verify_image(mapped.image_dir, config.policy, config.options)
        result.verdicts[mapped.image_dir] = verdict
    return result
