"""Exports of labels.json: OCI annotations and a HEPiX image-list entry."""

from __future__ import annotations

from typing import Any

from imagefactory.model.labels import Labels

#: The project's annotation namespace (beside the standard org.opencontainers.image.*).
NAMESPACE = "imagefactory"


def oci_annotations(model: Labels) -> dict[str, str]:
    """Annotations for an OCI manifest carrying the disk (all values are strings)."""
    labels = model.to_dict()
    image, disk, os_, trust = labels["image"], labels["disk"], labels["os"], labels["trust"]
    vos = ",".join(labels["vo"])
    out = {
        "org.opencontainers.image.title": image["name"],
        "org.opencontainers.image.version": image["version"],
        "org.opencontainers.image.created": image["created"],
        "org.opencontainers.image.revision": labels["recipe"]["digest"],
        "org.opencontainers.image.description": (
            f"{os_['distro']} {os_['version']} {os_['arch']} worker node for {vos}"
        ),
        f"{NAMESPACE}.uuid": image["uuid"],
        f"{NAMESPACE}.expires": image["expires"],
        f"{NAMESPACE}.os.distro": os_["distro"],
        f"{NAMESPACE}.os.version": os_["version"],
        f"{NAMESPACE}.os.arch": os_["arch"],
        f"{NAMESPACE}.os.kernel": os_["kernel"],
        f"{NAMESPACE}.disk.format": disk["format"],
        f"{NAMESPACE}.disk.virtual-size": str(disk["virtual_size"]),
        f"{NAMESPACE}.disk.sha512": disk["sha512"],
        f"{NAMESPACE}.disk.boot-mode": disk["boot_mode"],
        f"{NAMESPACE}.vo": vos,
        f"{NAMESPACE}.trust.model": trust["model"],
        f"{NAMESPACE}.trust.root-policy": trust["root_policy"],
        f"{NAMESPACE}.trust.fs-access": ",".join(trust["fs_access"]),
        f"{NAMESPACE}.trust.contextualisation": trust["contextualisation"],
        f"{NAMESPACE}.audit.profile": labels["audit"]["profile"],
        f"{NAMESPACE}.audit.passed": str(labels["audit"]["passed"]).lower(),
        f"{NAMESPACE}.packages.manifest-sha256": labels["packages"]["manifest_sha256"],
        f"{NAMESPACE}.sbom.sha256": labels["sbom"]["sha256"],
    }
    if labels["endorser"]["contact"]:
        out["org.opencontainers.image.vendor"] = labels["endorser"]["contact"]
        out[f"{NAMESPACE}.endorser"] = labels["endorser"]["contact"]
    if labels["packages"]["patch_date"]:
        out[f"{NAMESPACE}.packages.patch-date"] = labels["packages"]["patch_date"]
    return out


def image_list_entry(model: Labels, uri: str | None = None) -> dict[str, Any]:
    """One ``hv:image`` entry of a HEPiX image list (vmcaster/vmcatcher keys)."""
    labels = model.to_dict()
    image, disk, os_ = labels["image"], labels["disk"], labels["os"]
    entry: dict[str, Any] = {
        "dc:identifier": image["uuid"],
        "dc:title": image["name"],
        "dc:description": (
            f"{os_['distro']} {os_['version']} ({os_['codename']}) {os_['arch']}, "
            f"root policy {labels['trust']['root_policy']}, model {labels['trust']['model']}"
        ),
        "hv:version": image["version"],
        "hv:format": disk["format"],
        "hv:size": disk["size"],
        "hv:virtualsize": disk["virtual_size"],
        "sl:os": os_["distro"],
        "sl:osname": os_["distro"],
        "sl:osversion": os_["version"],
        "sl:arch": os_["arch"],
        "sl:checksum:sha512": disk["sha512"],
        "ad:vo": ",".join(labels["vo"]),
        "dc:date:created": image["created"],
        "dc:date:expires": image["expires"],
    }
    if labels["endorser"]["contact"]:
        entry["ad:user:email"] = labels["endorser"]["contact"]
    if uri is not None:
        entry["hv:uri"] = uri
    return {"hv:image": entry}
