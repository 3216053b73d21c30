"""Select, instantiate and discard: non-persistent worker nodes as copy-on-write
overlays on the verified store. Not built yet (see the instantiate issue)."""
