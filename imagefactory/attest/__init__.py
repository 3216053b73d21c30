"""Attestations of an image directory: what is signed, and the two ways to sign it.

* :mod:`.layout`    -- the image directory: its disk, labels, SBOM and attestation files.
* :mod:`.statement` -- the in-toto Statement v1 over them (predicate = the labels).
* :mod:`.keys`      -- key-based signing: DSSE envelopes with securesystemslib signers
  (a local key file, or a key URI for an HSM or a cloud KMS).
* :mod:`.keyless`   -- keyless signing: Sigstore bundles (v0.3) with sigstore-python.

Verifying is :mod:`imagefactory.verify`; it uses the readers of these modules.
"""
