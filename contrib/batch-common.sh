# Shared by the batch system integrations (contrib/slurm, contrib/htcondor); sourced, not run.
#
# Site settings come from $IMAGEFACTORY_CONF (default /etc/imagefactory/batch.conf, a
# shell fragment, root's), else the defaults below:
#   IMAGEFACTORY        the command (default: imagefactory)
#   IF_STORE IF_POLICY IF_CACHE IF_RUN_DIR   paths (default: imagefactory's own defaults)
#   IF_REQUIRE          what the job's image must be, for 'imagefactory select --require'
#   IF_IMAGE            a store image directory to use instead of asking select
#   IF_TEMPLATE         the domain XML template (default: worker-node.xml beside this file's
#                       libvirt/ directory)
#   IF_DOMAIN_TYPE      kvm (default) or qemu;  IF_MEMORY_MIB (2048);  IF_VCPUS (1)
#   IF_OWNER            the user libvirt runs qemu as, who gets the overlay (libvirt-qemu)
#   VIRSH               how to reach libvirtd (default: virsh -c qemu:///system)

IF_HERE=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
: "${IMAGEFACTORY_CONF:=/etc/imagefactory/batch.conf}"
# shellcheck disable=SC1090
if [ -f "$IMAGEFACTORY_CONF" ]; then . "$IMAGEFACTORY_CONF"; fi
: "${IMAGEFACTORY:=imagefactory}"
: "${IF_REQUIRE:=distro=debian,release>=12,arch=x86_64,root_policy=none}"
: "${IF_TEMPLATE:=$IF_HERE/libvirt/worker-node.xml}"
: "${IF_DOMAIN_TYPE:=kvm}"
: "${IF_MEMORY_MIB:=2048}"
: "${IF_VCPUS:=1}"
: "${IF_OWNER:=libvirt-qemu}"
: "${VIRSH:=virsh -c qemu:///system}"

if_fail() {
    echo "imagefactory batch: $*" >&2
    exit 1
}

if_opt() {  # if_opt --flag VALUE: the option only when VALUE is set
    if [ -n "$2" ]; then printf '%s\n%s\n' "$1" "$2"; fi
}

# Numbers only where the XML takes numbers; the domain type from a fixed list.
case "$IF_MEMORY_MIB$IF_VCPUS" in *[!0-9]*|'') if_fail "IF_MEMORY_MIB and IF_VCPUS must be numbers" ;; esac
case "$IF_DOMAIN_TYPE" in kvm|qemu) ;; *) if_fail "IF_DOMAIN_TYPE must be kvm or qemu" ;; esac

# The store image for this job: IF_IMAGE, or the best one select finds.
if_image() {
    if [ -n "${IF_IMAGE:-}" ]; then
        printf '%s\n' "$IF_IMAGE"
        return
    fi
    # shellcheck disable=SC2086,SC2046
    $IMAGEFACTORY select --require "$IF_REQUIRE" \
        $(if_opt --store "${IF_STORE:-}") $(if_opt --policy "${IF_POLICY:-}")
}

# if_start JOB: instantiate the job's overlay and start its domain (name wn-JOB).
# instantiate checks JOB (letters, digits, _ . + -) before anything else uses it.
if_start() {
    job=$1
    image=$(if_image) || if_fail "job $job: no image (select failed)"
    # shellcheck disable=SC2086,SC2046
    overlay=$($IMAGEFACTORY instantiate "$image" --job "$job" \
        $(if_opt --store "${IF_STORE:-}") $(if_opt --policy "${IF_POLICY:-}") \
        $(if_opt --cache "${IF_CACHE:-}") $(if_opt --run-dir "${IF_RUN_DIR:-}") \
        $(if_opt --owner "$IF_OWNER")) \
        || if_fail "job $job: instantiate refused $image"
    xml=$(mktemp) || if_fail "job $job: mktemp failed"
    sed -e "s|@NAME@|wn-$job|" -e "s|@DISK@|$overlay|" -e "s|@DOMAIN_TYPE@|$IF_DOMAIN_TYPE|" \
        -e "s|@MEMORY_MIB@|$IF_MEMORY_MIB|" -e "s|@VCPUS@|$IF_VCPUS|" "$IF_TEMPLATE" > "$xml"
    # shellcheck disable=SC2086
    if ! $VIRSH create "$xml" >&2; then
        rm -f "$xml"
        if_discard "$job"
        if_fail "job $job: the domain did not start (the gate's reasons are above)"
    fi
    rm -f "$xml"
}

if_discard() {
    # shellcheck disable=SC2086,SC2046
    $IMAGEFACTORY discard --job "$1" $(if_opt --run-dir "${IF_RUN_DIR:-}") >&2
}

# if_stop JOB: stop the job's domain (if it runs) and discard its instance.
if_stop() {
    job=$1
    # shellcheck disable=SC2086
    if $VIRSH domstate "wn-$job" >/dev/null 2>&1; then
        $VIRSH destroy "wn-$job" >&2 || if_fail "job $job: cannot stop domain wn-$job"
    fi
    if_discard "$job" || if_fail "job $job: discard failed"
}
