"""Instantiate and discard: non-persistent worker nodes as copy-on-write
overlays on the verified store (``select`` chooses the image; see
:mod:`imagefactory.select`).

* :mod:`.rundir` -- the run directory, its lock and job IDs;
* :mod:`.make` -- ``instantiate``: a job's overlay on a verified store image;
* :mod:`.live` -- ``instances``, ``instances gc`` and ``discard``.
"""
