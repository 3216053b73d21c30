"""Facts about the machine imagefactory runs on: its tools and versions, and
whether qemu's KVM accelerator really works here. Below every stage."""
