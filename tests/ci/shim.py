"""``imagefactory`` as the CI template tests put it on a job's PATH: the real ``main()``.

Run as ``python -m tests.ci.shim ARGS...`` by a small ``imagefactory`` script the
tests write. It changes nothing but two seams the CI has and a test cannot:

* ``$IMAGEFACTORY_TEST_SIGSTORE`` (a directory): ``sign`` signs keyless with a
  private Sigstore instance made for that call instead of the public-good one, which is
  unreachable offline. Its trusted root is written into that directory, for the
  test to verify the bundle with. The identity token is still found by
  sigstore's own ambient detection in the job's environment (GitLab's
  ``SIGSTORE_ID_TOKEN``, GitHub's token request URL).
* ``$IMAGEFACTORY_TEST_ARCHIVE`` (a JSON file): the archive fingerprint a build
  sees, pinned to the one an earlier build of the session saw (as
  ``tests/integration_images.py`` pins it in-process), so that build's cache
  entry serves the template's build instead of a mirror update forcing a new one.

Every call is appended to ``$IMAGEFACTORY_TEST_LOG`` (JSON lines: argv, exit code).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def _private_sigstore(directory: Path) -> None:
    from sigstore.models import ClientTrustConfig
    from sigstore.sign import SigningContext

    from tests.fakes.sigstore_instance import PrivateSigstore

    instance = PrivateSigstore("ci-template")
    directory.mkdir(parents=True, exist_ok=True)
    instance.write_trusted_root(directory / f"trusted-root-{os.getpid()}.json")
    trust = ClientTrustConfig.from_json(instance.trust_config_json)

    def production(cls: Any, offline: bool = False) -> ClientTrustConfig:
        return trust

    def from_trust_config(cls: Any, config: Any) -> SigningContext:
        return instance.signing_context()

    ClientTrustConfig.production = classmethod(production)  # type: ignore[method-assign,assignment]
    SigningContext.from_trust_config = classmethod(from_trust_config)  # type: ignore[method-assign,assignment]


def _pinned_archive(path: Path) -> None:
    from imagefactory.builder import pipeline

    pinned: dict[str, str] = json.loads(path.read_text())

    def fingerprint(releases: Any) -> dict[str, str]:
        return dict(pinned)

    setattr(pipeline, "release_fingerprint", fingerprint)  # noqa: B010 -- not exported


def main() -> int:
    from imagefactory.cli import main as imagefactory

    argv = sys.argv[1:]
    if os.environ.get("IMAGEFACTORY_TEST_SIGSTORE") and argv[:1] == ["sign"]:
        _private_sigstore(Path(os.environ["IMAGEFACTORY_TEST_SIGSTORE"]))
    if os.environ.get("IMAGEFACTORY_TEST_ARCHIVE"):
        _pinned_archive(Path(os.environ["IMAGEFACTORY_TEST_ARCHIVE"]))
    code: int | str | None = None
    try:
        code = imagefactory(argv)
    except SystemExit as exc:  # argparse: --version, --help, usage errors
        code = exc.code
        raise
    finally:
        log = os.environ.get("IMAGEFACTORY_TEST_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as stream:
                stream.write(json.dumps({"argv": argv, "exit": code}) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
