"""``select``: the best verified image of the site's store for a batch job.

A batch system's prologue asks for an image by its labels
(``--require 'distro=debian,release>=12,arch=x86_64,vo=atlas'``); select
reads the store and the site policy, never the network, and answers with
the chosen image in the form the batch system reads. The room's modules, in
import order:

* :mod:`~imagefactory.select.requirements` -- the ``--require`` grammar: keys,
  vocabularies, version comparison, errors at their column;
* :mod:`~imagefactory.select.ranks`        -- the ranks (``newest``, ...);
* :mod:`~imagefactory.select.candidates`   -- every store image with what stops
  it being used (unreadable, not installed by pull, revoked, expired, refused
  by the policy, changed since verified);
* :mod:`~imagefactory.select.choose`       -- match, rank, and explain every image;
* :mod:`~imagefactory.select.adaptors`     -- HTCondor ClassAd attributes and job
  ``Requirements``, OpenStack Glance image properties.
"""
