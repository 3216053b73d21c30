"""``imagefactory gate -- PROGRAM ...``: check a hypervisor command, then become it.

Only a program the settings name (:attr:`Settings.hypervisors`, absolute
paths, compared after resolving links) is run, by its absolute path, so
neither ``$PATH`` nor a look-alike name picks another binary. A qemu command is
read with qemu's option table and its disks are bound to descriptors
(:mod:`.bind`); ``xl`` keeps opening its disks by path, so for it the store
directories must be root's (:mod:`.dirs`, checked in :mod:`.check`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagefactory.gate.bind import bind_qemu
from imagefactory.gate.check import GateConfig, check_disks
from imagefactory.gate.qemu import parse_qemu
from imagefactory.gate.text import shown
from imagefactory.gate.xl import parse_xl, sealed_config
from imagefactory.run import replace_process

#: Exit code of a refusal (as verify's deny).
EXIT_REFUSED = 1


@dataclass(frozen=True)
class Refusal:
    """Why the gate did not run the command: the text for stderr."""

    message: str


def resolve_hypervisor(program: str, allowed: Sequence[Path]) -> Path | None:
    """``program``'s absolute path if it is one of ``allowed`` (links resolved), else ``None``."""
    found = shutil.which(program) if "/" not in program else program
    if found is None:
        return None
    real = os.path.realpath(found)
    for candidate in allowed:
        if os.path.realpath(candidate) == real:
            return Path(real)
    return None


def gate_command(  # noqa: RET503 -- replace_process never returns
    command: Sequence[str], config: GateConfig, hypervisors: Sequence[Path]
) -> Refusal:
    """Check ``command`` and exec it when allowed; returns only with a refusal."""
    program = resolve_hypervisor(command[0], hypervisors)
    if program is None:
        names = ", ".join(str(h) for h in hypervisors) or "none"
        return Refusal(
            f"imagefactory gate: refusing command {shown(command[0])}: not a hypervisor the"
            f" settings name (gate.hypervisors: {names})"
        )
    argv = [str(program), *command[1:]]
    subject = f"command {program.name}"
    if program.name == "xl":
        xl = parse_xl(argv)
        result = check_disks(xl.disks, config, xl.refusals)
        if not result.allowed or xl.config is None:
            return Refusal(result.render(subject))
        # xl reads the bytes the gate checked, never the file again (a FIFO or a
        # swapped file would give it others).
        fd = sealed_config(xl.config)
        replace_process([argv[0], "create", *xl.flags, "-f", f"/proc/self/fd/{fd}"], pass_fds=[fd])
    with bind_qemu(parse_qemu(argv), config) as bound:
        if not bound.result.allowed:
            return Refusal(bound.result.render(subject))
        replace_process(bound.argv, pass_fds=bound.fds)
