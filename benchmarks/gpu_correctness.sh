#!/usr/bin/env bash
# DeepSpeed correctness on GPUs with the demo config (tiny models, synthetic data). Writes logs and per-iteration
# losses to ${OUT:-gpu_correctness}. Needs 2 GPUs.
#   1. ZeRO-2, 1 GPU, micro-batch 2 x accumulation 2 (global batch 4), 40 iterations = 20 optimizer steps
#   2. ZeRO-2, 2 GPUs, micro-batch 2 x 1 (global batch 4), 20 iterations = 20 optimizer steps
#   3. ZeRO-3, 2 GPUs, 10 iterations
# Kill + resume on 2 GPUs and exact 1-vs-2-GPU parity: benchmarks/gpu_multi.sh (it kills the torchrun tree by PID;
# the pkill pattern this script used once matched its own shell).
set -uo pipefail
OUT=${OUT:-gpu_correctness}
mkdir -p "$OUT"
CFG=configs/sa2va_demo.py
O=(train_cfg.max_epochs=None default_hooks.checkpoint.interval=10 default_hooks.logger.interval=5)
run() { local name=$1; shift; DEEPSPEED=$1 bash tools/dist.sh train $CFG "$2" --work-dir work_dirs/$name "${@:3}" \
        > "$OUT/$name.log" 2>&1; echo "$name rc=$?"; }

CUDA_VISIBLE_DEVICES=0 run ds1 zero2 1 --cfg-options "${O[@]}" train_cfg.max_iters=40 optim_wrapper.accumulative_counts=2
run ds2 zero2 2 --cfg-options "${O[@]}" train_cfg.max_iters=20
run ds3 zero3 2 --cfg-options "${O[@]}" train_cfg.max_iters=10
cp work_dirs/ds1/losses.jsonl "$OUT/ds1_losses.jsonl"; cp work_dirs/ds2/losses.jsonl "$OUT/ds2_losses.jsonl"

grep -h "Iter(train) \[20/20\]\|Iter(train) \[40/40\]\|Iter(train) \[10/10\]\|evaluation at\|Error" \
    "$OUT"/ds1.log "$OUT"/ds2.log "$OUT"/ds3.log | cut -c1-400
