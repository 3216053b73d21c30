"""Boot test: start an image under qemu and wait for proof that userspace came up."""
