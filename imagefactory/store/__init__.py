"""Pull: a site's verified, root-owned, read-only image store, filled from a catalog.

``transport`` (capped, resumable, hashed downloads from a directory or HTTP),
``updater`` (the TUF client against a pinned root), ``layout`` (the store on
disk), ``pull``, ``export`` (store list, HEPiX image list). The boot gate
reads this store. Above ``catalog`` and ``verify``; below ``cli``.
"""
