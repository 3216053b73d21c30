"""The annotations EGI's registry sync reads, in the names Glance uses."""

from __future__ import annotations

from typing import Any

import pytest

from imagefactory.oci.manifests import disk_layer_annotations


def _labels(arch: str) -> dict[str, Any]:
    return {
        "image": {"version": "1.0"},
        "disk": {"format": "qcow2"},
        "os": {"arch": arch, "distro": "debian", "version": "12"},
    }


@pytest.mark.parametrize(
    ("arch", "glance"), [("x86_64", "x86_64"), ("i386", "i686"), ("aarch64", "aarch64")]
)
def test_the_architecture_is_glances_name(arch: str, glance: str) -> None:
    annotations = disk_layer_annotations(_labels(arch), "disk.qcow2")
    assert annotations["org.openstack.glance.architecture"] == glance
    assert annotations["org.openstack.glance.os_version"] == "12"
