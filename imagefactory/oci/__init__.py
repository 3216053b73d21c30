"""OCI registries: an image's disk as an OCI 1.1 artifact, attestations as referrers.

``manifests`` builds the manifests byte for byte; ``registry`` pushes and reads
through oras-py, checking every digest.
"""
