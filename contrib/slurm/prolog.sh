#!/bin/sh
# Slurm Prolog (slurm.conf: Prolog=/path/to/contrib/slurm/prolog.sh), run as root on the
# node before the job: the job's worker node boots from a fresh copy-on-write overlay on
# a verified store image. Settings: see contrib/batch-common.sh. A non-zero exit makes
# Slurm requeue the job and drain the node, with our reason in slurmd's log.
set -eu
: "${SLURM_JOB_ID:?not run by Slurm: SLURM_JOB_ID is not set}"
. "$(dirname -- "$0")/../batch-common.sh"
if_start "$SLURM_JOB_ID"
echo "imagefactory: job $SLURM_JOB_ID (user ${SLURM_JOB_USER:-?}): domain wn-$SLURM_JOB_ID started" >&2
