#!/usr/bin/env bash
# SLURM launch:  bash tools/slurm.sh PARTITION JOB_NAME CONFIG [train.py args...]
# Environment: GPUS (8 total), GPUS_PER_NODE (8), CPUS_PER_TASK (8), SRUN_ARGS (extra srun flags),
#              DEEPSPEED (zero2 | zero3 | file | none)
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: bash tools/slurm.sh PARTITION JOB_NAME CONFIG [args...]" >&2
    exit 2
fi
PARTITION=$1; JOB_NAME=$2; CONFIG=$3; shift 3
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-8}
SRUN_ARGS=${SRUN_ARGS:-}
DEEPSPEED=${DEEPSPEED:-zero2}
DS_ARGS=()
if [ "$DEEPSPEED" != "none" ]; then
    DS_ARGS=(--deepspeed "$DEEPSPEED")
fi
export PYTHONPATH="$ROOT/projects:${PYTHONPATH:-}"
# one task per GPU; mmengine's slurm launcher reads SLURM_PROCID / SLURM_NTASKS / SLURM_NODELIST
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 $SRUN_ARGS \
    python -u "$ROOT/tools/train.py" "$CONFIG" --launcher slurm "${DS_ARGS[@]}" "$@"
