"""The commented starter policy printed by ``imagefactory policy example``."""

EXAMPLE_POLICY = """\
# imagefactory trust policy: which images this site's hypervisors may boot.
# Check it with:   imagefactory policy check site.yaml
# Use it with:     imagefactory verify IMAGE-DIR --policy site.yaml
#
# An image is allowed only if, for every VO its labels name, enough of that
# VO's trusted signers signed the very same statement (disk, labels.json and
# SBOM digests), and its labels satisfy that VO's rules below.

# Disk formats this host boots (qcow2, raw) and the largest virtual disk size.
formats: [qcow2]
max_virtual_size: 64G

vos:
  atlas:
    # Who may sign ATLAS images. A signer is a Sigstore identity (keyless, e.g.
    # a CI pipeline) or a public key (key-based: air-gapped signing, HSM, KMS).
    signers:
      - name: atlas-ci
        sigstore:
          # The certificate identity: exact (identity) or a regular expression
          # matching all of it (identity_pattern); same for issuer / issuer_pattern.
          identity: https://ci.example/atlas/images/.ci/build.yml@refs/heads/main
          issuer: https://token.ci.example
          # 'public-good' or a trusted root JSON file of a private Sigstore
          # instance, relative to this file.
          trust_root: public-good
      - name: atlas-managers
        sigstore:
          identity_pattern: '[a-z.]+@atlas\\.example'
          issuer: https://login.example
      # - name: site-admins
      #   key: keys/site-admins.pub      # from 'imagefactory key generate'
    # How many different signers above must have signed (2 = VO and site co-sign).
    threshold: 1
    distros: [debian, ubuntu]
    # Two OS generations side by side while the VO moves from one to the
    # next: Debian 12 and 13, Ubuntu 22.04 and 24.04. Drop the older one once
    # no job needs it. Empty or absent: any release.
    releases: ["12", "13", "22.04", "24.04"]
    arches: [x86_64]
    models: [non-persistent]           # persistent, non-persistent, library, user-defined
    # Root policies acceptable per model (none, site-admin, user).
    root_policies:
      non-persistent: [none, site-admin]
    max_age: 30d                       # refuse images created longer ago (d or w)
    require_expiry: true               # labels must carry an expiry, not passed
    require_audit: true                # the hardening audit must have passed
    user_defined:
      accept: false                    # user-defined images are refused
      inspect: true                    # if accepted: fresh read-only inspection
      max_age: 7d
    inspect: false                     # inspect every image, not only user-defined
    # Third-party apt repository keys (labels: repositories) the images may
    # trust, by fingerprint; empty or absent: an image that adds one is denied.
    repository_keys: []
"""
