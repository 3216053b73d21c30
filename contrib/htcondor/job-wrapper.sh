#!/bin/sh
# HTCondor USER_JOB_WRAPPER (condor_config: USER_JOB_WRAPPER = /path/to/contrib/htcondor/
# job-wrapper.sh) on an execute node whose jobs each get a non-persistent worker node:
# the job's domain (wn-CLUSTER.PROC) boots from a fresh overlay before the job's own
# executable runs, and is stopped and discarded when it ends, however it ends. The job
# ID comes from the job ad HTCondor writes ($_CONDOR_JOB_AD: ClusterId, ProcId).
# Settings: see contrib/batch-common.sh. Runs as root (the startd's wrapper must be
# able to start domains; use a sudo rule for this script otherwise).
set -eu
: "${_CONDOR_JOB_AD:?not run by HTCondor: _CONDOR_JOB_AD is not set}"
: "${_CONDOR_SCRATCH_DIR:?not run by HTCondor: _CONDOR_SCRATCH_DIR is not set}"
. "$(dirname -- "$0")/../batch-common.sh"
ad_value() {  # the integer attribute $1 of the job ad
    sed -n "s/^$1 *= *\([0-9][0-9]*\) *\$/\1/p" "$_CONDOR_JOB_AD" | head -n 1
}
cluster=$(ad_value ClusterId)
proc=$(ad_value ProcId)
[ -n "$cluster" ] && [ -n "$proc" ] || if_fail "$_CONDOR_JOB_AD: no ClusterId/ProcId"
job="$cluster.$proc"
if_start "$job"
trap 'if_stop "$job"' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
# The domain's name, for the job's executable (e.g. to wait for the node or talk to it).
IMAGEFACTORY_DOMAIN="wn-$job"
export IMAGEFACTORY_DOMAIN
cd "$_CONDOR_SCRATCH_DIR"
status=0
"$@" || status=$?
exit "$status"
