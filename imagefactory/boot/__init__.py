"""Boot test: start an image under qemu and wait for proof that userspace came up."""

#: qemu options every headless run shares: no default devices, no display, no
#: reboot loop (a crash ends qemu), the first serial port on stdout.
HEADLESS_SERIAL = ("-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio")
