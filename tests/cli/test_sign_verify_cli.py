"""The command line: key generate, sign --key, verify (exit 0/1/2, --json), policy example/check."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from imagefactory.attest.claims import claimed_signers
from imagefactory.cli import main
from imagefactory.errors import EXIT_ERROR, EXIT_OK, EXIT_VERDICT
from tests.fakes.imagedirs import make_image, vo_rules, write_policy


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    """A key (``vo-key``, ``vo-key.pub``) and a policy trusting it for VO atlas."""
    code, _, _ = run(capsys, "key", "generate", str(tmp_path / "vo-key"))
    assert code == EXIT_OK
    key = tmp_path / "vo-key"
    vos = {"atlas": vo_rules({"name": "atlas-vo", "key": "vo-key.pub"})}
    policy = write_policy(tmp_path / "site.yaml", vos, formats=["raw", "qcow2"])
    return key, policy


def test_key_generate_writes_private_key_0600(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--json", "key", "generate", str(tmp_path / "k"))
    assert code == EXIT_OK
    info = json.loads(out)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert (tmp_path / "k.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert len(info["keyid"]) == 64
    code, _, err = run(capsys, "key", "generate", str(tmp_path / "k"))
    assert code != EXIT_OK
    assert "refusing to overwrite" in err


def test_sign_and_verify_allow_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], site: tuple[Path, Path]
) -> None:
    key, policy = site
    image = make_image(tmp_path)
    code, out, _ = run(capsys, "sign", str(image), "--key", str(key))
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0] == f"signed {image}"
    assert lines[1].startswith("  by key ")
    named = [line.split()[0] for line in lines[2:-1]]
    assert named == [
        *(p.name for p in image.iterdir() if p.suffix in (".raw", ".qcow2")),
        "labels.json",
        "sbom.cdx.json",
        "audit.json",
    ]
    assert all("sha256:" in line for line in lines[2:-1])
    assert lines[-1].startswith("  attestation: ")
    assert lines[-1].endswith(".dsse.json")
    # What `labels show` lists next to the labels (the fake's labels predate
    # the current schema, so the claims are read directly).
    [claim] = claimed_signers(image)
    assert claim.file == lines[-1].rsplit("/", 1)[1]
    assert claim.signer == lines[1].strip().removeprefix("by ")
    code, out, _ = run(capsys, "verify", "-q", str(image), "--policy", str(policy))
    assert code == EXIT_OK
    assert out.startswith(f"ALLOW: {image}")


def test_sign_with_key_uri(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], site: tuple[Path, Path]
) -> None:
    """A securesystemslib private key URI plus its public key (how HSM/KMS keys are named)."""
    key, policy = site
    image = make_image(tmp_path)
    uri = f"file2:{key}"
    code, _, err = run(capsys, "sign", str(image), "--key", uri)
    assert code == EXIT_VERDICT
    assert "needs its public key" in err
    code, _, _ = run(capsys, "sign", str(image), "--key", uri, "--public-key", str(key) + ".pub")
    assert code == EXIT_OK
    assert run(capsys, "verify", "-q", str(image), "--policy", str(policy))[0] == EXIT_OK


def test_verify_deny_exit_1_with_json_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], site: tuple[Path, Path]
) -> None:
    _, policy = site
    image = make_image(tmp_path)
    code, out, _ = run(capsys, "--json", "verify", str(image), "--policy", str(policy))
    assert code == EXIT_VERDICT
    result = json.loads(out)
    assert result["allowed"] is False
    [verdict] = result["images"]
    assert verdict["verdict"] == "deny"
    assert [r["code"] for r in verdict["reasons"]] == ["unsigned"]


def test_verify_error_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("vos: {atlas: {signers: [], treshold: 1}}\n")
    code, _, err = run(capsys, "verify", str(make_image(tmp_path)), "--policy", str(bad))
    assert code == EXIT_ERROR
    assert "did you mean 'threshold'?" in err
    code, _, _ = run(capsys, "verify", str(tmp_path), "--policy", str(tmp_path / "none.yaml"))
    assert code == EXIT_ERROR


def test_policy_example_passes_policy_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "policy", "example")
    assert code == EXIT_OK
    assert out.startswith("# imagefactory trust policy")
    (tmp_path / "site.yaml").write_text(out)
    code, out, _ = run(capsys, "policy", "check", str(tmp_path / "site.yaml"))
    assert code == EXIT_OK
    assert "ok (atlas (2 signers, threshold 1))" in out


def test_policy_check_reports_every_problem_with_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        "formats: [qcow3]\n"
        "vos:\n"
        "  atlas:\n"
        "    signers:\n"
        "      - name: a\n"
        "        sigstore: {identity: x, issuer: y, trust_root: missing.json}\n"
        "    threshold: 2\n"
        "    modles: [persistent]\n"
    )
    code, out, _ = run(capsys, "--json", "policy", "check", str(path))
    assert code == EXIT_VERDICT
    problems = [(p["line"], p["column"], p["path"], p["hint"]) for p in json.loads(out)["problems"]]
    assert problems == [
        (1, 11, ".formats[0]", "did you mean 'qcow2'?"),
        (
            6,
            56,
            ".vos.atlas.signers[0].sigstore.trust_root",
            None,
        ),
        (7, 16, ".vos.atlas.threshold", None),
        (8, 5, ".vos.atlas.modles", "did you mean 'models'?"),
    ]


def test_an_edited_audit_report_is_denied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], site: tuple[Path, Path]
) -> None:
    key, policy = site
    image = make_image(tmp_path)
    assert run(capsys, "sign", str(image), "--key", str(key))[0] == EXIT_OK
    audit = image / "audit.json"
    audit.write_text(audit.read_text().replace('"passed": true', '"passed": false'))
    code, out, _ = run(capsys, "verify", "-q", str(image), "--policy", str(policy))
    assert code == EXIT_VERDICT
    assert "audit.json: sha256 is" in out


def test_labels_with_a_lone_surrogate_are_refused_by_sign_and_verify(
    tmp_path: Path, site: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    key, policy = site
    image = make_image(tmp_path / "img", "1.0")
    labels = image / "labels.json"
    labels.write_text(labels.read_text().replace('"atlas"', '"atl\\ud800as"', 1))
    for argv in (
        ("sign", str(image), "--key", str(key)),
        ("verify", str(image), "--policy", str(policy)),
    ):
        code, out, err = run(capsys, *argv)
        assert code == EXIT_VERDICT, (argv, out, err)  # bad input, as any unreadable labels.json
        assert "lone surrogate" in out + err  # sign: the error; verify: the DENY reason
        assert "Traceback" not in err
        assert "internal error" not in err
