#!/bin/sh
# For 'imagefactory instances gc --alive-cmd contrib/slurm/job-alive.sh': exit 0 while
# Slurm lists job $1 (pending, running, suspended, completing), 1 once it does not, 2 if
# squeue could not answer (gc then keeps the instance).
set -u
out=$(squeue --noheader --jobs "$1" --format %T 2>&1)
rc=$?
if [ "$rc" -eq 0 ] && [ -n "$out" ]; then exit 0; fi
if [ "$rc" -eq 0 ]; then exit 1; fi
case "$out" in *"Invalid job id"*) exit 1 ;; esac
exit 2
