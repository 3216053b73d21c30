"""Pull: a site's verified, root-owned, read-only image store, filled from a catalog.

Not built yet (see the publish/pull issue). The boot gate reads this store.
"""
