"""Every recipe setting, defined once.

:data:`RECIPE` is the whole format: names, types, defaults, help, allowed
values, nested mappings and the rules across fields. The validator
(:mod:`fieldtypes`), the merge of ``extends`` (:mod:`extends`), the JSON Schema
and the reference documentation (:mod:`schema`) are all read from it; add or
change a setting here and nowhere else.
"""

from __future__ import annotations

from typing import Any

from imagefactory.fields import values
from imagefactory.fields.types import (
    Choice,
    Field,
    Flag,
    ListOf,
    MapOf,
    Merge,
    OneOrMany,
    Rule,
    Struct,
    Text,
)
from imagefactory.pgpkey import FINGERPRINT_PATTERN
from imagefactory.recipe import rules
from imagefactory.vocab import (
    ARCH_ALIASES,
    Arch,
    BootMode,
    DiskFormat,
    Distro,
    FsAccess,
    RootPolicy,
    ScriptPhase,
    WorkerNodeModel,
)

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
VERSION_PATTERN = r"^(?!.*\.\.)[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$"
PACKAGE_PATTERN = r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$"
UNIT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9:_.@-]{0,255}$"
ELEMENT_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
SCRIPT_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
ACCOUNT_PATTERN = r"^(?:[a-z_][a-z0-9_-]{0,31}|[0-9]{1,10})$"
VO_PATTERN = values.VO_PATTERN
PROFILE_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
EMAIL_PATTERN = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+$"
LABEL_KEY_PATTERN = r"^[a-z0-9][a-z0-9._/-]{0,127}$"
RECIPE_PATH_PATTERN = r"^[^/].*\.ya?ml$"
REPOSITORY_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
SUITE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
COMPONENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

#: Most ``extends`` levels above the top-level recipe.
MAX_EXTENDS_DEPTH = 8


def _base_schema_extra() -> dict[str, Any]:
    """Per distribution: its releases and architectures, from :mod:`imagefactory.vocab`."""
    cases = []
    for distro in Distro:
        releases: list[Any] = []
        for release in distro.releases:
            releases += [release.version, release.codename]
            # An unquoted YAML 12 or 24.04 arrives as a number; its text is the version.
            number = float(release.version)
            releases.append(int(number) if number.is_integer() else number)
        cases.append(
            {
                "if": {"properties": {"distro": {"const": distro.value}}, "required": ["distro"]},
                "then": {
                    "properties": {
                        "release": {"enum": releases},
                        "arch": {"enum": [a.value for a in Arch if distro.supports(a)]},
                    }
                },
            }
        )
    return {"allOf": cases}


RELEASES_TEXT = "; ".join(
    f"{distro}: " + ", ".join(f"`{r.version}` ({r.codename})" for r in distro.releases)
    for distro in Distro
)

BASE = Struct(
    expects="a mapping with distro, release and arch",
    fields=(
        Field("distro", Choice(Distro), "The distribution the image is built from.", required=True),
        Field(
            "release",
            Text(
                "a release version or codename, like '12' or 'bookworm'",
                max_length=32,
                numbers=True,
                allowed_text=RELEASES_TEXT,
            ),
            "The distribution release, by version or codename; both are recorded.",
            required=True,
        ),
        Field(
            "arch",
            Choice(Arch, aliases=ARCH_ALIASES),
            "The CPU architecture of the image.",
            default="x86_64",
        ),
    ),
    rules=(
        Rule("`release` must be a release of `distro`.", rules.rule_release),
        Rule("`arch` must be one `distro` is built for (Ubuntu has no i386).", rules.rule_arch),
    ),
    schema_extra=_base_schema_extra,
)

FILE = Struct(
    expects="a file entry (a mapping with path and content or source)",
    fields=(
        Field(
            "path",
            Text(
                "an absolute path in the image",
                max_length=rules.MAX_PATH_CHARS,
                convert=rules.to_image_path,
            ),
            "Where the file goes in the image: absolute, normalised, not under /proc, /sys,"
            " /dev or /run. A later recipe's entry replaces an extended one's with the same path.",
            required=True,
        ),
        Field(
            "content",
            Text("the file's text", max_length=rules.MAX_FILE_BYTES),
            "The file's text. Give either `content` or `source`.",
        ),
        Field(
            "source",
            Text(
                "a path relative to the recipe",
                max_length=rules.MAX_PATH_CHARS,
                check=rules.check_source,
            ),
            "A file next to the recipe to copy, relative to the directory of the recipe that"
            " names it; it must stay inside that directory (symbolic links included),"
            f" be a regular file and at most {rules.MAX_FILE_BYTES} bytes.",
        ),
        Field(
            "mode",
            Text(
                'an octal mode string like "0644"',
                pattern=rules.MODE_PATTERN,
                convert=rules.to_mode,
                hint_for_number=rules.mode_hint,
            ),
            "The file's permission bits, in octal, quoted.",
            default="0644",
        ),
        Field(
            "owner",
            Text("a user name or number", pattern=ACCOUNT_PATTERN),
            "The owning user.",
            default="root",
        ),
        Field(
            "group",
            Text("a group name or number", pattern=ACCOUNT_PATTERN),
            "The owning group.",
            default="root",
        ),
    ),
    exactly_one=(("content", "source"),),
)

REPOSITORY_KEY = Struct(
    expects="a mapping with file, fingerprint or both",
    fields=(
        Field(
            "file",
            Text(
                "a path relative to the recipe",
                max_length=rules.MAX_PATH_CHARS,
                check=rules.check_key_file,
            ),
            "The repository's OpenPGP public key (armored or binary), a file next to the"
            " recipe like `source`; it must hold exactly one v4 public key.",
        ),
        Field(
            "fingerprint",
            Text(
                "a 40-hex-digit OpenPGP fingerprint",
                pattern=FINGERPRINT_PATTERN,
                convert=rules.to_fingerprint,
                suggest=rules.fingerprint_hint,
            ),
            "The key's v4 fingerprint. With `file`, the file must hold this key; alone, the"
            " key comes from the build host's `build.repository_keys` directory.",
        ),
    ),
    rules=(
        Rule(
            "Give `file`, `fingerprint` or both; with both, the file holds that key.",
            rules.rule_key_given,
        ),
    ),
)

REPOSITORY = Struct(
    expects="a repository entry (a mapping with name, url, suites and key)",
    fields=(
        Field(
            "name",
            Text("a repository name like 'cvmfs'", pattern=REPOSITORY_NAME_PATTERN),
            "The repository's name: the image's `/etc/apt/sources.list.d/NAME.sources` and"
            " `/etc/apt/keyrings/NAME.gpg`. A later recipe's entry replaces an extended"
            " one's with the same name.",
            required=True,
        ),
        Field(
            "url",
            Text(
                "an http(s) URL",
                max_length=2048,
                check=rules.check_repository_url,
            ),
            "The repository's base URL (holding `dists/`): http or https, no credentials,"
            " query or fragment.",
            required=True,
        ),
        Field(
            "suites",
            ListOf(Text("a suite like 'bookworm-prod'", pattern=SUITE_PATTERN)),
            "The suites (distributions) to use.",
            required=True,
        ),
        Field(
            "components",
            ListOf(Text("a component like 'main'", pattern=COMPONENT_PATTERN)),
            "The components of each suite.",
            default=["main"],
        ),
        Field(
            "key",
            REPOSITORY_KEY,
            "The key the repository's Release file must be signed with: the build verifies"
            " it with this key alone before anything is installed, and apt in the image"
            " trusts only this key for this repository (`Signed-By`).",
            required=True,
        ),
        Field(
            "arch",
            ListOf(Choice(Arch, aliases=ARCH_ALIASES)),
            "The architectures the repository serves; an image of another is refused."
            " Unset: the image's.",
        ),
    ),
    rules=(
        Rule("`suites` and `components` are not empty.", rules.rule_repository_suites),
        Rule(
            "The build host's settings allow the repository's URL with its key"
            " (`build.allowed_repositories`; none by default).",
            rules.rule_repository_allowed,
        ),
    ),
)

UNIT = Text("a systemd unit name like 'chrony.service'", pattern=UNIT_PATTERN)

SERVICES = Struct(
    expects="a mapping with enable and disable",
    fields=(
        Field("enable", ListOf(UNIT), "systemd units to enable."),
        Field("disable", ListOf(UNIT), "systemd units to disable."),
    ),
    rules=(Rule("A unit cannot be both enabled and disabled.", rules.rule_services),),
)

SCRIPT = Struct(
    expects="a script entry (a mapping with name, phase and content)",
    fields=(
        Field(
            "name",
            Text("a script name", pattern=SCRIPT_NAME_PATTERN),
            "The script's name.",
            required=True,
        ),
        Field(
            "phase", Choice(ScriptPhase), "The diskimage-builder phase it runs in.", required=True
        ),
        Field(
            "content",
            Text("the script's text", max_length=rules.MAX_SCRIPT_CHARS),
            "The script, run as root inside the image.",
            required=True,
        ),
    ),
)

DISK = Struct(
    expects="a mapping with size, formats and compress",
    fields=(
        Field(
            "size",
            Text("a size like '2G'", pattern=values.SIZE_PATTERN, convert=rules.to_size),
            "The disk size with a K, M, G or T suffix (powers of 1024), from 1G to 64G.",
            default="2G",
        ),
        Field(
            "formats",
            ListOf(Choice(DiskFormat)),
            "The image formats to produce.",
            default=["qcow2"],
        ),
        Field(
            "compress",
            Flag(),
            "Write the qcow2 with compressed clusters (`qemu-img convert -c`, zlib): a smaller"
            " file to publish and pull, the same disk for the guest. The compressed file is"
            " the disk that is audited, labelled, signed and booted. Needs `qcow2` in"
            " `formats` (a raw disk is not compressed); the guest's own writes go to"
            " overlays uncompressed.",
            default=False,
        ),
    ),
    rules=(Rule("`compress` needs `qcow2` in `formats`.", rules.rule_compress_qcow2),),
)

RECIPE = Struct(
    expects="a mapping of recipe keys",
    fields=(
        Field(
            "name",
            Text("a name like 'atlas-wn'", pattern=NAME_PATTERN),
            "The image's name.",
            required=True,
        ),
        Field(
            "version",
            Text("a version string like '1.0', without '..'", pattern=VERSION_PATTERN),
            "The image's version; quote it, so YAML does not read 1.10 as the number 1.1.",
            required=True,
        ),
        Field(
            "description",
            Text("a description", max_length=4096),
            "What the image is for.",
            default="",
        ),
        Field(
            "extends",
            OneOrMany(
                Text(
                    "a relative path to a .yaml recipe",
                    pattern=RECIPE_PATH_PATTERN,
                    max_length=4096,
                )
            ),
            "Recipes this one builds on, relative to this file and inside the include roots,"
            f" at most {MAX_EXTENDS_DEPTH} levels deep. The parents are combined first, this"
            " recipe over them: mappings merge, values replace, lists are joined (an item"
            " only once), `files`, `scripts` and `repositories` entries replace the parent's"
            " of the same `path` or `name`. The build starts from the cached OS-tree layer of"
            " the recipes extended (the base with their `packages`) and adds this recipe's"
            " own; `build --no-layer-cache` builds it all.",
            loader=True,
        ),
        Field("base", BASE, "The distribution the image is built from.", required=True),
        Field(
            "packages",
            ListOf(
                Text(
                    "a Debian package name, optionally with '=version'",
                    pattern=PACKAGE_PATTERN,
                    max_length=256,
                )
            ),
            "Extra packages to install, e.g. `less` or `less=590-2`.",
        ),
        Field(
            "repositories",
            ListOf(REPOSITORY, key="name"),
            "Third-party apt repositories the packages may come from (CVMFS, Apptainer),"
            " each with its signing key pinned; only those the build host allows.",
        ),
        Field("files", ListOf(FILE, key="path"), "Files to put into the image."),
        Field("services", SERVICES, "systemd units to enable or disable."),
        Field(
            "elements",
            ListOf(
                Text(
                    "a diskimage-builder element name",
                    pattern=ELEMENT_PATTERN,
                    max_length=64,
                    check=rules.check_element,
                )
            ),
            "Extra diskimage-builder elements; only those the build host allows.",
        ),
        Field(
            "scripts",
            ListOf(SCRIPT, key="name"),
            "Shell scripts run as root inside the image;"
            " refused unless the build host allows scripts.",
        ),
        Field("disk", DISK, "The disk image."),
        Field(
            "boot",
            Choice(BootMode),
            "How the firmware starts the image: `bios` (MBR, GRUB for PC BIOS) or `uefi`"
            " (GPT with an EFI system partition; on x86_64 the distribution's signed shim"
            " and GRUB where it has them). Unset: the architecture's usual one, `bios` on"
            " x86_64 and i386, `uefi` on aarch64.",
        ),
        Field(
            "vo",
            Text("a VO name like 'atlas'", pattern=VO_PATTERN),
            "The virtual organisation the image is for.",
            required=True,
        ),
        Field(
            "root_policy",
            Choice(RootPolicy),
            "Who may become root on the worker node.",
            default="none",
        ),
        Field("model", Choice(WorkerNodeModel), "The worker-node model.", default="non-persistent"),
        Field(
            "fs_access",
            ListOf(Choice(FsAccess), merge=Merge.REPLACE),
            "Site file systems the node may mount; `none` stands alone. A recipe's list"
            " replaces the one it extends, since `none` excludes the others. The build's"
            " audit checks each one's client is in the image (`nfs`: nfs-common, `cvmfs`:"
            " cvmfs, `dcap`: dcap, `rfio`: rfcp) and fails the build if not.",
            default=["none"],
        ),
        Field(
            "hardening",
            Text("a hardening profile name", pattern=PROFILE_PATTERN),
            "The hardening profile applied and audited.",
            default="worker-node-default",
        ),
        Field(
            "expiry",
            Text(
                "a duration like '30d' or '4w'",
                pattern=values.DURATION_PATTERN,
                convert=values.to_days,
            ),
            "How long the image's endorsement is valid, in days (d) or weeks (w),"
            f" at most {rules.MAX_EXPIRY_DAYS}d.",
            default="30d",
        ),
        Field(
            "endorser",
            Text("an email address", pattern=EMAIL_PATTERN, max_length=254),
            "Contact email of the person or team who endorses the image.",
        ),
        Field(
            "labels",
            MapOf(
                key=Text(
                    "a label key like 'site' or 'example.org/owner'", pattern=LABEL_KEY_PATTERN
                ),
                value=Text("a label value", max_length=1024),
            ),
            "Free-form labels recorded with the image.",
        ),
    ),
    rules=(
        Rule(
            "`none` in `fs_access` cannot be combined with other values.", rules.rule_fs_none_alone
        ),
        Rule("`scripts` needs a build host that allows scripts.", rules.rule_scripts_allowed),
        Rule(
            "A repository's `arch` includes the image's architecture.",
            rules.rule_repository_arch,
            whole_only=True,
        ),
        Rule(
            "No `files` entry replaces a repository's key or sources file.",
            rules.rule_repository_files,
            whole_only=True,
        ),
        Rule(
            "`boot: uefi` is for x86_64 and aarch64, `boot: bios` for x86_64 and i386.",
            rules.rule_boot_arch,
            whole_only=True,
        ),
        Rule(
            "`root_policy: user` allows only `fs_access: [none]` (user root and site file systems"
            " don't mix) and only the `non-persistent` or `user-defined` models.",
            rules.rule_user_root,
            whole_only=True,
        ),
    ),
)
