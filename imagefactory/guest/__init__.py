"""Reading and editing a disk image's file systems through libguestfs.

Nothing here mounts a guest file system on the host kernel: every access goes
through the libguestfs appliance. :mod:`.view` defines the small interface the
hardening and the audit use (so tests can fake it), :mod:`.handle` implements
it on a real guestfs handle, :mod:`.facts` reads the observed facts.
"""
