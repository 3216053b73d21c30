"""A publish or a pull in a child process, for the kill -9 and disk-full tests.

``python -m tests.catalog.faultrunner publish CATALOG IMAGE-DIR``
``python -m tests.catalog.faultrunner pull CATALOG ROOT POLICY STORE``
``--fsize N`` first limits the size of any file it writes (RLIMIT_FSIZE; Python
ignores SIGXFSZ, so a write past it fails with EFBIG, as on a full disk).
Prints ``ready`` once imported, then one JSON line: the outcome.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any

from imagefactory.catalog.publish import publish
from imagefactory.catalog.repo import Catalog
from imagefactory.errors import ImageFactoryError
from imagefactory.store.pull import pull
from imagefactory.trust import load_policy


def main(argv: list[str]) -> int:
    if argv[0] == "--fsize":
        limit = int(argv[1])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        argv = argv[2:]
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    out: dict[str, Any]
    try:
        if argv[0] == "publish":
            done = publish(Catalog(Path(argv[1])), Path(argv[2]))
            out = {"ok": True, "changed": done.changed}
        else:
            root = Path(argv[2]).read_bytes()
            result = pull(argv[1], root, load_policy(Path(argv[3])), Path(argv[4]))
            out = {"ok": True, **result.to_dict()}
    except ImageFactoryError as exc:
        out = {
            "ok": False,
            "error": exc.render(),
            "code": getattr(exc, "code", None),
            "type": type(exc).__name__,
        }
    sys.stdout.write(json.dumps(out) + "\n")
    return 0 if out["ok"] else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
