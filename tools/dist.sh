#!/usr/bin/env bash
# Distributed launch through torchrun:  bash tools/dist.sh train CONFIG NGPUS [train.py args...]
#
# Environment:
#   NNODES (1)  NODE_RANK (0)  MASTER_ADDR (127.0.0.1)  PORT (random in 28500-30499)
#   DEEPSPEED   zero2 (default) | zero3 | path/to/ds.json | none   (ignored without CUDA: DDP on gloo)
# Multi-node: run the same command on every node with NNODES=N, NODE_RANK=0..N-1 and MASTER_ADDR=<node 0>.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: bash tools/dist.sh train CONFIG NGPUS [args...]" >&2
    exit 2
fi
FILE=$1; CONFIG=$2; NPROC=$3; shift 3
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PORT=${PORT:-$((28500 + RANDOM % 2000))}
DEEPSPEED=${DEEPSPEED:-zero2}

DS_ARGS=()
if [ "$DEEPSPEED" != "none" ]; then
    DS_ARGS=(--deepspeed "$DEEPSPEED")
fi
export PYTHONPATH="$ROOT/projects:${PYTHONPATH:-}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

exec torchrun --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$NPROC" \
    --master_addr="$MASTER_ADDR" --master_port="$PORT" \
    "$ROOT/tools/$FILE.py" "$CONFIG" --launcher pytorch "${DS_ARGS[@]}" "$@"
