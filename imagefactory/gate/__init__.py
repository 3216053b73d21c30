"""The boot gate: nothing boots on a hypervisor host unless verify allows it.

* :mod:`.disks`   -- from a disk path the hypervisor would open to the image
  directory that vouches for it (the disk itself, or the base of a qcow2
  overlay), inside the configured image store only.
* :mod:`.check`   -- verify every disk of one start request (verified cache on).
* :mod:`.libvirt` -- the libvirt hook (``/etc/libvirt/hooks/qemu``): the domain
  XML at ``prepare``; a non-zero exit refuses the start, stderr says why.
* :mod:`.qemu`    -- ``imagefactory gate -- qemu-system-x86_64 ...``: the disks of a
  qemu command line, then the command itself.
"""
