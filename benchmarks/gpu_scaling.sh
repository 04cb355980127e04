#!/usr/bin/env bash
# Weak scaling of Sa2VA-1B training with DeepSpeed ZeRO-2 (the framework's multi-GPU default): benchmarks/scaling.py
# on 1, 2 and 4 GPUs in turn (torchrun --standalone), the same micro-batch per GPU; efficiency(N) =
# per-GPU samples/s on N GPUs / per-GPU samples/s on 1 GPU (goal >= 90 %). Run in the repository root:
#
# GPU (4 GPUs, ~3-5 min; no run starts after BUDGET_S and none runs past it):
#           OUT=scaling bash benchmarks/gpu_scaling.sh
# CPU dry run (tiny models, gloo, torch DDP in fp32 unless STRATEGY=zero2; ~1 min on 2 cores):
#           DEVICE=cpu GPUS="1 2" OUT=/tmp/scaling bash benchmarks/gpu_scaling.sh
#
# Writes under $OUT: env.txt, scaling_N.log per run, scaling.jsonl (rank 0's JSON line per run), table.txt.
# Knobs: VARIANT (optimized | compiled), BATCH (mix | refcoco | caption), MICRO_BATCH (2), STEPS (10), WARMUP (3),
#        GPUS ("1 2 4"), DEVICE (cuda | cpu), STRATEGY (zero2 on cuda, ddp on cpu), BUDGET_S (480; the runs share
#        it: each may take the time left / the runs left), OMP_NUM_THREADS (8 on cuda, 1 on cpu; the same for every
#        N), PYTHON (python3), EXTRA (more scaling.py arguments, e.g. "--ckpt" or "--autocast on").
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT=${OUT:-scaling}
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"  # relative to where the script was started
cd "$ROOT"
VARIANT=${VARIANT:-optimized}
BATCH=${BATCH:-mix}
MICRO_BATCH=${MICRO_BATCH:-2}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-3}
GPUS=${GPUS:-1 2 4}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-480}
PYTHON=${PYTHON:-python3}
EXTRA=${EXTRA:-}
if [ "$DEVICE" = cpu ]; then
    export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    STRATEGY=${STRATEGY:-ddp}
else
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}  # torchrun sets 1 only for N > 1: keep N = 1 comparable
    STRATEGY=${STRATEGY:-zero2}
fi
# NVLink multicast stays off (shared machines); harmless elsewhere
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
DEADLINE=$((SECONDS + BUDGET_S))
rm -f "$OUT"/scaling.jsonl "$OUT"/scaling_*.log "$OUT"/table.txt  # a rerun into the same OUT starts clean
say() { echo "[gpu_scaling $(date +%T) +$((SECONDS))s] $*"; }

{
    echo "DEVICE=$DEVICE STRATEGY=$STRATEGY VARIANT=$VARIANT BATCH=$BATCH MICRO_BATCH=$MICRO_BATCH STEPS=$STEPS" \
         "WARMUP=$WARMUP GPUS=\"$GPUS\" BUDGET_S=$BUDGET_S OMP_NUM_THREADS=$OMP_NUM_THREADS EXTRA=\"$EXTRA\""
    git -C "$ROOT" log -1 --format='commit %H %s' 2>/dev/null
    git -C "$ROOT" status --short 2>/dev/null | head -20
    if [ "$DEVICE" != cpu ] && command -v nvidia-smi > /dev/null; then
        nvidia-smi -L
        nvidia-smi topo -m  # NVLink or PCIe between the GPUs: what the all-reduce rides on
    fi
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
'devices', torch.cuda.device_count())
try:
    import deepspeed; print('deepspeed', deepspeed.__version__)
except Exception as e:
    print('deepspeed: not importable:', e)" 2>&1 | grep -v "Warning\|warn("
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
have=0
[ "$DEVICE" != cpu ] && have=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)

set -- $GPUS
left_runs=$#
for n in "$@"; do
    left=$((DEADLINE - SECONDS))
    limit=$((left / left_runs))
    left_runs=$((left_runs - 1))
    if [ "$DEVICE" != cpu ] && (( n > have )); then
        say "N=$n: skipped, torch sees $have GPU(s)"
        continue
    fi
    if (( limit < 30 )); then
        say "N=$n: skipped, ${left}s left of BUDGET_S=$BUDGET_S"
        continue
    fi
    say "N=$n: $STRATEGY, $VARIANT, batch $BATCH x $MICRO_BATCH per GPU, $STEPS steps (limit ${limit}s)"
    t=$SECONDS
    # the ranks stop themselves (stack dump + exit) 15 s before the limit; timeout is the backstop
    # shellcheck disable=SC2086  # EXTRA is a list of arguments
    timeout -k 10 "$limit" "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$n" \
        benchmarks/scaling.py --device "$DEVICE" --strategy "$STRATEGY" --variant "$VARIANT" --batch "$BATCH" \
        --micro-batch "$MICRO_BATCH" --steps "$STEPS" --warmup "$WARMUP" --time-limit $((limit - 15)) \
        --out "$OUT/scaling.jsonl" $EXTRA > "$OUT/scaling_$n.log" 2>&1
    rc=$?
    say "N=$n: rc=$rc after $((SECONDS - t))s"
    (( rc != 0 )) && tail -n 15 "$OUT/scaling_$n.log"
done

"$PYTHON" - "$OUT/scaling.jsonl" <<'EOF' | tee "$OUT/table.txt"
import json, os, sys

path = sys.argv[1]
rows = [json.loads(line) for line in open(path)] if os.path.exists(path) else []
base = next((r for r in rows if r["world_size"] == 1), None)
if rows:
    r0 = rows[0]
    print(f"{r0['shape']} {r0['variant']} {r0['strategy']}, batch {r0['batch']} x {r0['micro_batch']} per GPU, "
          f"{r0['steps']} steps, {r0['device']}")
print("| N | step s | per-GPU samples/s | global samples/s | efficiency | rank step s max/min | peak GiB |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    eff = f"{r['per_gpu_samples_per_s'] / base['per_gpu_samples_per_s']:.1%}" if base else "n/a (no N=1)"
    print(f"| {r['world_size']} | {r['step_s']:.4f} | {r['per_gpu_samples_per_s']:.3f} | "
          f"{r['global_samples_per_s']:.3f} | {eff} | {r['rank_step_s_max']:.4f}/{r['rank_step_s_min']:.4f} | "
          f"{r['peak_mem_gib']} |")
if not rows:
    print("no results (see the scaling_N.log files)")
EOF
say "done: $OUT/table.txt"
