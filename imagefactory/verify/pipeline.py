"""``verify``: may this image boot here? The checks, in order.

1. ``layout``     -- the image directory and its labels.json can be read;
2. ``format``     -- :func:`imagefactory.diskformat.check_safe` on the disk's raw
   bytes, before anything else opens it, and OpenStack's format inspector as a
   second opinion that must agree (:mod:`imagefactory.diskinspect`);
3. ``signatures`` -- every attestation against the policy's signers (before any
   hashing: an unsigned directory with a huge sparse disk costs nothing);
4. ``size``       -- the disk's size against the size every valid attestation's
   predicate signs, and the policy's cap, still before hashing;
5. ``digests``    -- every subject streamed and digested with sha256 (one
   pass at the speed of one hash: sha256 binds the bytes; the sha512 the
   labels and a statement may also carry is the signer's word, signed with
   the rest, and not recomputed), compared with labels.json. A caller that
   already hashed the disk's very bytes (``pull``, while they streamed into
   the file it hands over open) passes that digest instead of a second read;
6. ``statement``  -- payload type, statement type, predicate type, every subject
   against the digests of step 5 (each subject must carry a sha256; it is
   the one compared), the predicate against labels.json;
7. ``authority``  -- per VO named by the labels: enough of its own trusted
   signers signed; the endorser the labels name is among them;
8. ``labels``     -- the signed labels against each VO's rules;
9. ``inspection`` -- where the policy asks (user-defined images, or every image
   of a VO), a fresh read-only inspection of the disk whose observed facts
   must match the labels. The inspection itself is a seam: an
   :class:`Inspector` passed in by the caller.

A step that finds a problem ends the run after reporting everything it found
(a later step would only pile up consequences); notes that did not decide the
verdict (a stray attestation next to enough good ones) are kept. Verifying
never writes into the image directory and never runs anything from it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from imagefactory.attest.statement import PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE
from imagefactory.digest import ProgressFn, hash_file
from imagefactory.diskformat import UnsafeImageError, check_safe
from imagefactory.diskinspect import second_opinion
from imagefactory.errors import ImageFactoryError
from imagefactory.model.imagedir import ImageDir, LayoutError, load_image_dir
from imagefactory.trust.model import KeySigner, TrustPolicy, VoPolicy
from imagefactory.verify.labels import check_labels, label, now_utc, valid_until
from imagefactory.verify.signatures import (
    Attestation,
    SignerRef,
    Verifiers,
    check_attestations,
)
from imagefactory.verify.verdict import NOTE, Reason, Verdict
from imagefactory.vocab import WorkerNodeModel


class Inspector(Protocol):
    """A fresh, read-only inspection of a disk (libguestfs; issue 4's labels code).

    Called only after every other check passed, with the disk, its verified
    format and the signed labels (which profile and root policy to audit
    against). Returns observed facts keyed by label path (``os.distro``,
    ``os.version``, ``os.arch``, ``trust.root_policy``, ...); each one given
    must equal the signed label. Raises :class:`~imagefactory.errors.ImageFactoryError`
    (or ``OSError``) when it cannot inspect: the image is then refused.
    """

    def __call__(
        self,
        disk: Path,
        disk_format: str,
        labels: Mapping[str, Any],
        disk_fd: int | None = None,
    ) -> Mapping[str, Any]:
        """``disk_fd``: ``disk`` names this open descriptor (``/proc/PID/fd/N``)."""
        ...


@dataclass
class VerifyOptions:
    inspector: Inspector | None = None
    on_progress: ProgressFn | None = None
    #: The time the verdict is for (tests pin it).
    now: datetime | None = None
    verifiers: Verifiers = field(default_factory=Verifiers)
    #: An open descriptor of the disk: the format check, the digests and the
    #: inspection read through it, not the path, so that what is verified is
    #: what the caller (the boot gate) hands to the hypervisor.
    disk_fd: int | None = None
    #: The disk's digests (``sha256`` at least), computed by the caller over
    #: exactly the bytes behind ``disk_fd`` (only with it): the digest step
    #: takes them instead of reading the disk again. For a caller that hashed
    #: what it wrote, fsync'd it and holds the file open (``pull``).
    disk_digests: Mapping[str, str] | None = None


class _Stop(Exception):
    """A step found a hard failure; the verdict already holds its reasons."""


@dataclass
class _Run:
    verdict: Verdict
    policy: TrustPolicy
    options: VerifyOptions
    image: ImageDir | None = None
    disk_format: str = ""
    digests: dict[str, dict[str, str]] = field(default_factory=dict)
    attestations: list[Attestation] = field(default_factory=list)
    signed_labels: dict[str, Any] = field(default_factory=dict)

    def step(self, name: str, check: Callable[[_Run], list[Reason]]) -> None:
        self.verdict.steps.append(name)
        reasons = check(self)
        self.verdict.reasons += reasons
        if any(r.severity != NOTE for r in reasons):
            raise _Stop


def verify_image(path: Path, policy: TrustPolicy, options: VerifyOptions | None = None) -> Verdict:
    """Verify the image directory at ``path`` against ``policy``; never raises for a bad image."""
    run = _Run(Verdict(Path(path)), policy, options or VerifyOptions())
    with contextlib.suppress(_Stop):
        for name, check in _STEPS:
            run.step(name, check)
    return run.verdict


def _layout(run: _Run) -> list[Reason]:
    try:
        run.image = load_image_dir(run.verdict.image)
    except LayoutError as exc:
        return [Reason("layout", "layout", exc.message)]
    return []


def _image(run: _Run) -> ImageDir:
    if run.image is None:  # steps run in order; layout sets it or stops the run
        raise RuntimeError("verify step ran before the layout step")
    return run.image


def _format(run: _Run) -> list[Reason]:
    image = _image(run)
    try:
        info = check_safe(
            image.disk,
            allowed_formats=[str(f) for f in run.policy.formats],
            declared_format=image.declared_format,
            max_virtual_size=run.policy.max_virtual_size,
            fd=run.options.disk_fd,
        )
    except UnsafeImageError as exc:
        return [Reason("unsafe-disk", "format", p.message, detail=p.code) for p in exc.problems]
    # A second, independent reader of the same bytes must agree (polyglots, MBR/GPT).
    disagree = second_opinion(image.disk, info.format, run.options.disk_fd)
    if disagree:
        return [
            Reason("unsafe-disk", "format", f"{image.disk}: {m}", detail="format-inspector")
            for m in disagree
        ]
    run.disk_format = info.format
    return []


def _digests(run: _Run) -> list[Reason]:
    image = _image(run)
    out: list[Reason] = []
    for path in image.subjects():
        is_disk = path == image.disk
        try:
            hexdigests, size = _subject_digest(run, path, is_disk)
        except OSError as exc:
            out.append(Reason("layout", "digests", f"{path}: cannot read: {exc}"))
            continue
        run.digests[path.name] = hexdigests
        if is_disk:
            out += _compare(path.name, hexdigests, size, image.labels.get("disk"))
        elif path == image.sbom:
            out += _compare(path.name, hexdigests, None, image.labels.get("sbom"))
    return out


def _subject_digest(run: _Run, path: Path, is_disk: bool) -> tuple[dict[str, str], int]:
    """The sha256 of one subject file (and its size): one pass, or the caller's digest."""
    options = run.options
    given = options.disk_digests
    if is_disk and given is not None:
        if options.disk_fd is None or not isinstance(given.get("sha256"), str):
            raise ValueError("disk_digests needs disk_fd and a sha256")  # a caller's bug
        return {"sha256": given["sha256"]}, os.fstat(options.disk_fd).st_size
    progress = options.on_progress if is_disk else None
    fd = options.disk_fd if is_disk else None
    result = hash_file(path, ("sha256",), progress, fd=fd)
    return result.hexdigests, result.size


def _compare(name: str, actual: dict[str, str], size: int | None, claimed: Any) -> list[Reason]:
    if not isinstance(claimed, Mapping):
        return []
    out = []
    for algorithm, value in actual.items():
        if claimed.get(algorithm) != value:
            out.append(
                Reason(
                    "labels-digest-mismatch",
                    "digests",
                    f"{name}: {algorithm} is {value}, labels.json says {claimed.get(algorithm)!r}",
                )
            )
    if size is not None and claimed.get("size") not in (None, size):
        out.append(
            Reason(
                "labels-digest-mismatch",
                "digests",
                f"{name}: size is {size} bytes, labels.json says {claimed.get('size')!r}",
            )
        )
    return out


def _signatures(run: _Run) -> list[Reason]:
    files = _image(run).attestations()
    if not files:
        return [Reason("unsigned", "signatures", "the image directory carries no attestation")]
    result = check_attestations(files, run.policy, run.options.verifiers)
    run.attestations = result.valid
    if run.attestations:
        return [_as_note(r) for r in result.failures]
    return result.failures


def _disk_size(run: _Run) -> int:
    """The disk's size in bytes, through the descriptor when there is one."""
    fd = run.options.disk_fd
    return os.fstat(fd).st_size if fd is not None else os.stat(_image(run).disk).st_size


def _signed_size(run: _Run) -> list[Reason]:
    """Refuse a disk whose size no valid attestation signs, before hashing a byte of it."""
    try:
        size = _disk_size(run)
    except OSError as exc:
        return [Reason("layout", "size", f"{_image(run).disk}: cannot stat: {exc.strerror}")]
    cap = run.policy.max_virtual_size
    if size > cap:
        return [Reason("disk-too-large", "size", f"the disk is {size} bytes, over the cap {cap}")]
    signed: set[Any] = set()
    for attestation in run.attestations:
        if attestation.payload_type != PAYLOAD_TYPE:
            continue  # the statement step names it
        try:
            statement = json.loads(attestation.payload)
            signed.add(statement["predicate"]["disk"]["size"])
        except (ValueError, RecursionError, KeyError, TypeError):
            continue  # the statement step names what is wrong with it
    # No readable signed statement at all: validly signed by a trusted signer, so
    # the statement step (after hashing) reports exactly what is wrong.
    if not signed or size in signed:
        return []
    shown = ", ".join(sorted(repr(v) for v in signed))
    return [
        Reason(
            "labels-digest-mismatch",
            "size",
            f"the disk is {size} bytes; the signed size is {shown} (not hashed)",
        )
    ]


def _as_note(reason: Reason) -> Reason:
    return Reason(reason.code, reason.step, reason.message, NOTE, reason.detail)


def _statement(run: _Run) -> list[Reason]:
    image = _image(run)
    good: list[Attestation] = []
    problems: list[Reason] = []
    for attestation in run.attestations:
        found = _check_statement(attestation, run.digests, image)
        if found:
            problems += found
        else:
            good.append(attestation)
    run.attestations = good
    if good:
        # Equal to every good statement's predicate: from here on, the labels are signed.
        run.signed_labels = image.labels
        return [_as_note(r) for r in problems]
    return problems


def _check_statement(
    attestation: Attestation, digests: dict[str, dict[str, str]], image: ImageDir
) -> list[Reason]:
    name = attestation.file.name

    def reason(code: str, message: str) -> list[Reason]:
        return [Reason(code, "statement", f"{name}: {message}")]

    if attestation.payload_type != PAYLOAD_TYPE:
        return reason("payload-type", f"payload type {attestation.payload_type!r}")
    try:
        statement = json.loads(attestation.payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        return reason("statement-invalid", f"payload is not JSON: {exc}")
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        return reason("statement-invalid", f"not an in-toto Statement v1 ({STATEMENT_TYPE})")
    if statement.get("predicateType") != PREDICATE_TYPE:
        return reason(
            "predicate-type",
            f"predicate type {statement.get('predicateType')!r}, expected {PREDICATE_TYPE}",
        )
    subjects = statement.get("subject")
    by_name: dict[Any, Any] = {}
    if isinstance(subjects, list):
        by_name = {s.get("name"): s.get("digest") for s in subjects if isinstance(s, dict)}
    out: list[Reason] = []
    for path in image.subjects():
        signed = by_name.get(path.name)
        if not isinstance(signed, dict) or not isinstance(signed.get("sha256"), str):
            out += reason("subject-missing", f"no sha256 subject for {path.name}")
            continue
        for algorithm, value in digests[path.name].items():
            if algorithm in signed and signed[algorithm] != value:
                out += reason(
                    "subject-mismatch",
                    f"{path.name}: {algorithm} is {value}, signed {signed[algorithm]}",
                )
    if statement.get("predicate") != image.labels:
        out += reason("predicate-mismatch", "the signed labels differ from labels.json")
    return out


def _authority(run: _Run) -> list[Reason]:
    labels = run.signed_labels
    vos = label(labels, "vo")
    if not isinstance(vos, list) or not vos or not all(isinstance(v, str) for v in vos):
        return [Reason("vo-missing", "authority", f"labels name no VO (vo: {vos!r})")]
    refs: set[SignerRef] = set()
    for attestation in run.attestations:
        refs |= attestation.signers
    out: list[Reason] = []
    for vo_name in vos:
        vo = run.policy.vos.get(vo_name)
        if vo is None:
            known = ", ".join(sorted(run.policy.vos)) or "none"
            out.append(
                Reason("vo-unknown", "authority", f"VO {vo_name!r} is not in the policy ({known})")
            )
            continue
        mine = sorted(name for v, name in refs if v == vo_name)
        if not mine:
            others = ", ".join(f"{name} (VO {v})" for v, name in sorted(refs)) or "nobody"
            out.append(
                Reason(
                    "signer-not-authorised",
                    "authority",
                    f"VO {vo_name}: signed by {others}, none of them trusted for VO {vo_name}",
                )
            )
        elif len(principals := _principals(run, vo)) < vo.threshold:
            # Counted by key (key id, from the key material) or certificate identity,
            # never by policy entry: one key listed under two names is one signer.
            out.append(
                Reason(
                    "threshold-not-met",
                    "authority",
                    f"VO {vo_name}: {len(principals)} distinct trusted key(s) or identities"
                    f" ({', '.join(mine)}), threshold {vo.threshold}",
                )
            )
        run.verdict.signers += [f"{vo_name}: {name}" for name in mine]
    out += _endorser(run)
    return out


def _principals(run: _Run, vo: VoPolicy) -> set[tuple[str, ...]]:
    """The distinct keys and certificate identities that signed for ``vo``."""
    keyids = {s.keyid for s in vo.signers if isinstance(s, KeySigner)}
    out: set[tuple[str, ...]] = set()
    for attestation in run.attestations:
        if not any(v == vo.name for v, _ in attestation.signers):
            continue
        out |= {("key", k) for k in attestation.keyids & keyids}
        who = attestation.identity
        if who is not None:
            out.add(("identity", who.issuer or "", *sorted(who.identities)))
    return out


def _endorser(run: _Run) -> list[Reason]:
    """The endorser the labels name (key id, or identity + issuer) must be an actual signer."""
    endorser = label(run.signed_labels, "endorser")
    if not isinstance(endorser, Mapping):
        return []
    keyid, identity, issuer = (
        endorser.get("keyid"),
        endorser.get("identity"),
        endorser.get("issuer"),
    )
    if keyid is None and identity is None:
        return []
    vos = label(run.signed_labels, "vo")
    vos = set(vos) if isinstance(vos, list) else set()
    for attestation in run.attestations:
        # Only an attestation that counts for a VO of this image can be the endorser's:
        # a key trusted for another VO alone endorses nothing here.
        if not any(v in vos for v, _ in attestation.signers):
            continue
        if keyid is not None and keyid in attestation.keyids:
            return []
        who = attestation.identity
        if (
            identity is not None
            and who is not None
            and identity in who.identities
            and (issuer is None or issuer == who.issuer)
        ):
            return []
    named = f"key {keyid}" if keyid is not None else f"{identity} (issuer {issuer})"
    return [
        Reason(
            "endorser-mismatch",
            "authority",
            f"the labels name the endorser {named}, but no valid attestation is theirs",
        )
    ]


def _labels(run: _Run) -> list[Reason]:
    now = run.options.now or now_utc()
    model = label(run.signed_labels, "trust.model")
    out: list[Reason] = []
    limits = []
    for vo_name in label(run.signed_labels, "vo"):
        vo = run.policy.vos[vo_name]
        out += check_labels(run.signed_labels, vo, now)
        until = valid_until(run.signed_labels, vo, model)
        if until is not None:
            limits.append(until)
    run.verdict.valid_until = min(limits) if limits else None
    return out


def _inspection(run: _Run) -> list[Reason]:
    labels = run.signed_labels
    user_defined = label(labels, "trust.model") == WorkerNodeModel.USER_DEFINED
    wanted = [
        vo_name
        for vo_name in label(labels, "vo")
        if run.policy.vos[vo_name].inspect
        or (user_defined and run.policy.vos[vo_name].user_defined.inspect)
    ]
    if not wanted:
        return []
    inspector = run.options.inspector
    if inspector is None:
        return [
            Reason(
                "inspection-unavailable",
                "inspection",
                f"the policy of VO(s) {', '.join(wanted)} requires a fresh inspection of this"
                " image, and this verifier has no inspector",
            )
        ]
    try:
        disk = _image(run).disk
        if run.options.disk_fd is not None:
            # The same open file, reopened by the inspector's own processes: never the path.
            disk = Path(f"/proc/{os.getpid()}/fd/{run.options.disk_fd}")
        observed = inspector(disk, run.disk_format, labels, disk_fd=run.options.disk_fd)
    except (ImageFactoryError, OSError) as exc:  # an inspection that fails is a refusal
        return [Reason("inspection-mismatch", "inspection", f"inspection failed: {exc}")]
    mismatches = [
        Reason(
            "inspection-mismatch",
            "inspection",
            f"{key}: the disk has {value!r}, the signed labels say {label(labels, key)!r}",
        )
        for key, value in sorted(observed.items())
        if label(labels, key) != value
    ]
    if not mismatches:
        run.verdict.inspected = sorted(observed)
    return mismatches


_STEPS: tuple[tuple[str, Callable[[_Run], list[Reason]]], ...] = (
    ("layout", _layout),
    ("format", _format),
    ("signatures", _signatures),
    ("size", _signed_size),
    ("digests", _digests),
    ("statement", _statement),
    ("authority", _authority),
    ("labels", _labels),
    ("inspection", _inspection),
)
