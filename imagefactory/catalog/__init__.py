"""Publish: the signed image catalog, a TUF repository of image descriptors.

``descriptor`` (what a catalog says about one image), ``repo`` (the TUF
repository and its transactions), ``publish``, ``ops`` (list, revoke,
refresh, delegate), ``versions`` (how versions order). The OCI registry
transport is ``imagefactory.oci``. Above ``attest``, ``verify`` and
``model``; below ``cli``.
"""
