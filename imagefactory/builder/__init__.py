"""The build stage: recipe -> diskimage-builder OS tree -> bootable disk image.

Modules, in pipeline order:

* :mod:`.element`  -- the recipe as a generated diskimage-builder element
* :mod:`.dib`      -- the exact ``disk-image-create`` command line and environment
* :mod:`.assemble` -- OS tree -> partitioned, bootable disk (no device-mapper needed)
* :mod:`.cache`    -- content-addressed cache of finished builds
* :mod:`.output`   -- the staging directory and the atomic publish of results
* :mod:`.pipeline` -- the flat list of named steps that ties them together
"""
