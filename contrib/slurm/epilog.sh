#!/bin/sh
# Slurm Epilog (slurm.conf: Epilog=/path/to/contrib/slurm/epilog.sh), run as root on the
# node after the job: its domain is stopped and its overlay discarded. Safe to run again,
# and for a job whose prolog failed (discard of an unknown job succeeds).
set -eu
: "${SLURM_JOB_ID:?not run by Slurm: SLURM_JOB_ID is not set}"
. "$(dirname -- "$0")/../batch-common.sh"
if_stop "$SLURM_JOB_ID"
