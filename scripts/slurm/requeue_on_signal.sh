#!/usr/bin/env bash
# The body of the sbatch templates in this directory (docs/parallel.md): starts one modsquad
# rank per SLURM task with srun, forwards the scheduler's warning signal to every rank, and
# requeues the job when the ranks stopped for it.
#
#   bash scripts/slurm/requeue_on_signal.sh CONFIG [modsquad train options...]
#
# How it works: the template asks SLURM for `--signal=B:USR1@SECONDS`, so this script (the batch
# shell, "B:") receives SIGUSR1 that many seconds before the time limit. It passes SIGUSR1 on to
# srun, which forwards it to every task; every rank then finishes its step, the ranks agree on
# the stop in the step's collective, rank 0 writes one checkpoint and every rank exits with 75.
# On 75 the job is requeued (`scontrol requeue`, the template has --requeue) and the next start
# runs the same command with --resume auto: every rank resumes from that checkpoint.
#
# Environment: MODSQUAD_BIN (default ./modsquad), SRUN_MPI (srun's --mpi plugin: pmix for
# CPU ranks that talk MPI; "none" for GPU ranks, which find each other through NCCL and a file
# in the run directory), MODSQUAD_COMM_TIMEOUT (seconds a rank waits for the others, default
# 600). The run directory (run.dir) must be on a file system every node sees.
set -uo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 CONFIG [modsquad train options...]" >&2
    exit 2
fi
bin=${MODSQUAD_BIN:-./modsquad}
mpi=${SRUN_MPI:-pmix}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}

echo "modsquad: job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}): ${SLURM_NTASKS:-1} ranks on ${SLURM_JOB_NUM_NODES:-1} node(s)"
# --kill-on-bad-exit: a rank that dies takes the step down at once (the others would otherwise
# wait for it until the collective timeout).
srun --kill-on-bad-exit=1 --mpi="$mpi" "$bin" train "$@" --resume auto &
step=$!

forward() {
    echo "modsquad: $1 received: asking every rank to checkpoint and stop"
    kill -USR1 "$step" 2>/dev/null
}
trap 'forward SIGUSR1' USR1
trap 'forward SIGTERM' TERM

# `wait` returns early whenever a trapped signal arrives: wait again until srun has ended.
while :; do
    wait "$step"
    rc=$?
    kill -0 "$step" 2>/dev/null || break
done

if [ "$rc" -eq 75 ]; then
    echo "modsquad: checkpoint written; requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
fi
echo "modsquad: training ended with status $rc"
exit "$rc"
