"""Publish: the signed TUF catalog of image descriptors and the OCI registry transport.

Not built yet (see the publish/pull issue). Above ``attest``, ``verify`` and
``model``; below ``cli``.
"""
