"""``key generate`` and ``sign``: signing keys and in-toto attestations."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imagefactory.cli.common import Parser, emit_json, user_path
from imagefactory.errors import EXIT_OK
from imagefactory.settings import Settings


def cmd_key_generate(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.attest.keys import generate_key

    key = generate_key(args.path)
    if args.json:
        emit_json({"private": str(key.private), "public": str(key.public), "keyid": key.keyid})
    else:
        sys.stdout.write(f"{key.private}: private key (keep it secret; mode 0600)\n")
        sys.stdout.write(f"{key.public}: public key, id {key.keyid}\n")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.attest import sign
    from imagefactory.model.imagedir import load_image_dir

    if args.key:
        from imagefactory.attest.keys import load_signer

        signed = sign.sign_with_key(args.image, load_signer(args.key, args.public_key))
    else:
        from sigstore.models import ClientTrustConfig
        from sigstore.sign import SigningContext

        from imagefactory.attest.keyless import identity_token, load_trust_config

        # The image directory first: a typo'd path should not wait for a
        # token or for the trust root's download.
        load_image_dir(args.image)
        token = identity_token(args.identity_token)
        trust = (
            load_trust_config(args.trust_config)
            if args.trust_config
            else production_trust_config(ClientTrustConfig)
        )
        signed = sign.sign_keyless(args.image, SigningContext.from_trust_config(trust), token)
    if args.json:
        emit_json({"ok": True, "image": str(args.image), **signed.to_dict()})
    else:
        sys.stdout.write(f"signed {args.image}\n  by {signed.signer}\n")
        for subject in signed.subjects:
            sys.stdout.write(f"  {subject.name}  sha256:{subject.digests['sha256']}\n")
        sys.stdout.write(f"  attestation: {signed.path}\n")
    return EXIT_OK


def production_trust_config(config: Any) -> Any:
    """The public-good instance's trust config; its TUF download failing is an error, not a bug."""
    from imagefactory.attest.keyless import KeylessError

    try:
        return config.production()
    except Exception as exc:  # sigstore raises several kinds (TUF, network, I/O)
        raise KeylessError(
            f"cannot get the public-good Sigstore trust root: {exc}",
            hint="offline or air-gapped: pass --trust-config, or sign with --key",
        ) from exc


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    key = sub.add_parser("key", help="signing keys")
    ksub = key.add_subparsers(dest="key_command", required=True, parser_class=Parser)
    p = ksub.add_parser(
        "generate", parents=[common], help="make an ECDSA P-256 key pair (PATH, PATH.pub)"
    )
    p.add_argument("path", type=user_path, help="where the private key goes (PATH.pub: public)")
    p.set_defaults(func=cmd_key_generate)

    p = sub.add_parser(
        "sign", parents=[common], help="attest an image directory (keyless, or with --key)"
    )
    p.add_argument("image", type=user_path, help="image directory (disk, labels.json, SBOM)")
    p.add_argument(
        "--key",
        help="private key: a PEM file, or a key URI (file2:, hsm:, gcpkms:, awskms:, ...)",
    )
    p.add_argument("--public-key", type=user_path, help="the public key (PEM) of a key URI")
    p.add_argument(
        "--trust-config",
        type=user_path,
        help="keyless: client trust config of a private Sigstore instance"
        " (default: the public-good instance)",
    )
    p.add_argument(
        "--identity-token",
        help="keyless: an OIDC token (default: the CI job's ambient credential)",
    )
    p.set_defaults(func=cmd_sign)
