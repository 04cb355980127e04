#!/usr/bin/env bash
# Multi-GPU correctness and scaling with the demo config (tiny models + synthetic data), in one go (estimated 4-6 min
# on 2x H100; no run starts after BUDGET_S and none runs past it, so at most BUDGET_S + ~45 s). Everything goes under $OUT (default ./gpu_multi): one log per run,
# work dirs (losses.jsonl, scalars.json, loss curves; checkpoint payloads deleted at the end unless KEEP_CKPT=1),
# kill.json, runs.tsv and summary.txt (benchmarks/compare_runs.py).
#
#   1. parity at one global batch (2 x NGPU): ZeRO-2, 1 GPU micro-batch 2 x accumulation NGPU (par1) vs NGPU GPUs
#      micro-batch 2 x 1 (par2), STEPS optimizer steps, same seed, every iteration logged. Comparable by
#      construction: sampler per_device_batch_size = batch x accumulation (2*NGPU resp. 2: the same length groups,
#      so the same items in every optimizer step) and rank_split=contiguous (rank r's micro-batch = accumulation
#      step r of par1); a constant lr (mmengine steps iteration-based schedulers every micro-batch, so with
#      accumulation A the schedule is (A-1)/A of a step ahead); mask losses on the full maps (point sampling draws random
#      numbers per micro-batch, which the two layouts draw in different streams). losses.jsonl holds the mean over
#      ranks (the global batch) and each rank's values (per_rank).
#   2. no hang when one rank's batch has no masks: the demo mixes caption-only and segmentation batches; per_rank
#      shows the iterations where it happened, and the runs must finish.
#   3. kill + resume: ref2 = uninterrupted NGPU-GPU ZeRO-2 run with the demo's own settings (lr schedule, point
#      sampling); kill2 = the same run, started in its own session, SIGKILLed (the whole process tree: torchrun and
#      its workers, which torchrun starts in sessions of their own, by PID/PGID) once iter_CKPT.pth.complete exists
#      and KILL_AFTER more iterations are logged; resume2 = `--resume auto` in kill2's work dir to the end.
#   4. samples/s on 1 and NGPU GPUs (ThroughputHook) from par1/par2 (indicative at the demo's shapes).
#
# GPU:      OUT=gpu_multi bash benchmarks/gpu_multi.sh
# CPU dry run (no CUDA is used: 2 gloo processes, plain runner, fp32, --deepspeed ignored; ~3 min on 2 cores):
#           CPU=1 OUT=/tmp/gpu_multi_cpu bash benchmarks/gpu_multi.sh
# Knobs: NGPU (2), STEPS (40; CPU 12), CKPT (20; CPU 6), KILL_AFTER (2), BUDGET_S (480; CPU 1800),
#        RUN_CAP_S (180; CPU 900, per run), PYTHON (python3), KEEP_CKPT (0).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT=${OUT:-gpu_multi}
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"  # relative to where the script was started
cd "$ROOT"
CPU=${CPU:-0}
NGPU=${NGPU:-2}
PYTHON=${PYTHON:-python3}
KEEP_CKPT=${KEEP_CKPT:-0}
if [ "$CPU" = 1 ]; then
    export CUDA_VISIBLE_DEVICES=""
    ONE_DEVICE=""
    STEPS=${STEPS:-12}; CKPT=${CKPT:-6}; KILL_AFTER=${KILL_AFTER:-2}; BUDGET_S=${BUDGET_S:-1800}
    RUN_CAP_S=${RUN_CAP_S:-900}
else
    ONE_DEVICE=${ONE_DEVICE:-0}
    STEPS=${STEPS:-40}; CKPT=${CKPT:-20}; KILL_AFTER=${KILL_AFTER:-2}; BUDGET_S=${BUDGET_S:-480}
    RUN_CAP_S=${RUN_CAP_S:-180}
fi
MIN_RUN_S=${MIN_RUN_S:-30}  # no run is started with less time than this left
if (( CKPT + KILL_AFTER >= STEPS )); then
    echo "gpu_multi.sh: CKPT + KILL_AFTER ($CKPT + $KILL_AFTER) must be below STEPS ($STEPS)" >&2
    exit 2
fi
# NVLink multicast stays off (shared machines); harmless elsewhere
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH="$ROOT/projects:${PYTHONPATH:-}"
CFG=configs/sa2va_demo.py
WORK="$OUT/work"
RUNS="$OUT/runs.tsv"
DEADLINE=$((SECONDS + BUDGET_S))
mkdir -p "$WORK"
rm -rf "${WORK:?}"/{par1,par2,ref2,kill2}  # a rerun into the same OUT starts clean
rm -f "$OUT"/{par1,par2,ref2,kill2,resume2}.log "$OUT"/{gpu_multi.log,kill.json,summary.txt,summary.json}
printf 'name\tprocs\taccum\titers\trc\twall_s\twork_dir\n' > "$RUNS"
say() { echo "[gpu_multi $(date +%T) +$((SECONDS))s] $*" | tee -a "$OUT/gpu_multi.log"; }

# ------------------------------------------------------------------ environment, assets
{
    echo "CPU=$CPU NGPU=$NGPU STEPS=$STEPS CKPT=$CKPT KILL_AFTER=$KILL_AFTER BUDGET_S=$BUDGET_S"
    git -C "$ROOT" log -1 --format='commit %H %s' 2>/dev/null
    git -C "$ROOT" status --short 2>/dev/null | head -20
    command -v nvidia-smi > /dev/null && nvidia-smi -L
    "$PYTHON" -c "import torch, mmengine; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
'devices', torch.cuda.device_count(), 'mmengine', mmengine.__version__)
try:
    import deepspeed; print('deepspeed', deepspeed.__version__)
except Exception as e:
    print('deepspeed: not importable:', e)" 2>&1 | grep -v Warning
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if ! "$PYTHON" -c "import torch, mmengine" 2>/dev/null; then
    say "$PYTHON cannot import torch and mmengine (activate the environment or set PYTHON)"
    exit 2
fi
if [ "$CPU" != 1 ]; then
    have=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
    if (( have < NGPU )); then
        say "needs $NGPU GPUs, torch sees $have (CPU=1 for the CPU dry run)"
        exit 2
    fi
fi
# the demo's assets, once, in one process (tools/train.py makes them on first use, but every rank would)
say "demo assets"
"$PYTHON" -c "
from mmengine.config import Config
from sa2va.registry import BUILDER
BUILDER.build(Config.fromfile('$CFG').prepare)" > "$OUT/assets.log" 2>&1 ||
    { say "assets failed: $OUT/assets.log"; exit 1; }

# ------------------------------------------------------------------ process control
proc_table() {  # "pid ppid pgid state" of every process, read from /proc (no procps needed)
    local f s pid st ppid pgid
    for f in /proc/[0-9]*/stat; do
        s=$(cat "$f" 2>/dev/null) || continue
        pid=${f#/proc/}; pid=${pid%/stat}
        read -r st ppid pgid _ <<< "${s##*) }"  # the fields after "(comm)"
        echo "$pid $ppid $pgid $st"
    done
}

KILLED_PIDS=""; KILLED_PGIDS=""; KILLED_AT=""; SURVIVORS=0
kill_tree() {  # SIGKILL $1, all its descendants and their process groups (never this script's own group)
    local root=$1 table own_pg p g alive
    table=$(proc_table)  # read before any kill: orphans lose their parent link
    own_pg=$(awk -v p=$$ '$1 == p {print $3}' <<< "$table")
    local pids=()
    mapfile -t pids < <(awk -v root="$root" '
        {parent[$1] = $2; order[NR] = $1}
        END {keep[root] = 1; print root
             do {grew = 0; for (i = 1; i <= NR; i++) {p = order[i]
                 if (!(p in keep) && (parent[p] in keep)) {keep[p] = 1; print p; grew = 1}}} while (grew)}' \
        <<< "$table")
    local pgids=()
    mapfile -t pgids < <(for p in "${pids[@]}"; do awk -v p="$p" '$1 == p {print $3}' <<< "$table"; done |
                         awk -v own="$own_pg" '$1 > 1 && $1 != own' | sort -un)
    local targets=()
    for g in "${pgids[@]}"; do targets+=("-$g"); done
    for p in "${pids[@]}"; do [ "$p" != "$$" ] && targets+=("$p"); done
    kill -KILL -- "${targets[@]}" 2>/dev/null
    KILLED_AT=$(date +%s.%N); KILLED_PIDS="${pids[*]}"; KILLED_PGIDS="${pgids[*]}"
    for _ in $(seq 150); do  # up to 30 s until all are gone (zombies count as gone)
        table=$(proc_table)
        alive=0
        for p in "${pids[@]}"; do
            awk -v p="$p" '$1 == p && $4 != "Z" {found = 1} END {exit !found}' <<< "$table" && alive=$((alive + 1))
        done
        (( alive == 0 )) && break
        sleep 0.2
    done
    SURVIVORS=$alive
}

# run_tree NAME LOG LIMIT_S STOP_FN CMD...: CMD in a session of its own; its exit status, or 124 after LIMIT_S, or
# 137 once the shell function STOP_FN (polled every 0.2 s; 'none': never) succeeds; both kill the whole tree.
run_tree() {
    local name=$1 log=$2 limit=$3 stop=$4
    shift 4
    local pidfile="$OUT/.$name.pid" pid="" start=$SECONDS
    rm -f "$pidfile"
    setsid -w bash -c 'echo $$ > "$0"; exec "$@"' "$pidfile" "$@" >> "$log" 2>&1 &
    local bg=$!
    while kill -0 "$bg" 2>/dev/null; do
        [ -z "$pid" ] && [ -s "$pidfile" ] && pid=$(cat "$pidfile")
        if [ -n "$pid" ] && [ "$stop" != none ] && "$stop"; then
            kill_tree "$pid"
            { wait "$bg"; } 2>/dev/null  # (no "Killed" job message)
            return 137
        fi
        if (( SECONDS - start >= limit )); then
            say "$name: still running after ${limit}s: killing its process tree"
            kill_tree "${pid:-$bg}"
            { wait "$bg"; } 2>/dev/null
            return 124
        fi
        sleep 0.2
    done
    wait "$bg"
}

# train NAME LOGNAME PROCS ACCUM ITERS DEVICES STOP_FN [train.py args...]: one tools/dist.sh run -> runs.tsv
train() {
    local name=$1 logname=$2 n=$3 accum=$4 iters=$5 devices=$6 stop=$7
    shift 7
    local left=$((DEADLINE - SECONDS)) t=$SECONDS rc
    if (( left < MIN_RUN_S )); then
        say "$logname: skipped, ${left}s left of BUDGET_S=$BUDGET_S"
        return 125
    fi
    local limit=$((left < RUN_CAP_S ? left : RUN_CAP_S))
    local dev=()
    [ "$devices" != all ] && dev=(CUDA_VISIBLE_DEVICES="$devices")
    say "$logname: $n process(es), accumulation $accum, $iters iterations (limit ${limit}s)"
    run_tree "$logname" "$OUT/$logname.log" "$limit" "$stop" \
        env "${dev[@]}" DEEPSPEED=zero2 PORT=$((28500 + RANDOM % 2000)) \
        bash tools/dist.sh train "$CFG" "$n" --work-dir "$WORK/$name" "$@"
    rc=$?
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$logname" "$n" "$accum" "$iters" "$rc" "$((SECONDS - t))" \
        "$WORK/$name" >> "$RUNS"
    say "$logname: rc=$rc after $((SECONDS - t))s"
    return "$rc"
}

last_iter() {  # last iteration in a losses.jsonl (0 if none)
    local it
    it=$(tail -n 1 "$1" 2>/dev/null | grep -o '"iter": [0-9]*' | grep -o '[0-9]*$')
    echo "${it:-0}"
}

MARKER_AT=""
kill_ready() {  # the checkpoint's marker exists and KILL_AFTER more iterations are logged
    [ -e "$WORK/kill2/iter_$CKPT.pth.complete" ] || return 1
    [ -n "$MARKER_AT" ] || MARKER_AT=$(date +%s.%N)
    (( $(last_iter "$WORK/kill2/losses.jsonl") >= CKPT + KILL_AFTER ))
}

# ------------------------------------------------------------------ runs
COMMON=(train_cfg.max_epochs=None default_hooks.logger.interval=1 log_processor.window_size=1 "custom_hooks=[]")
PARITY=("${COMMON[@]}" model.loss_sample_points=False "param_scheduler=[]"
        train_dataloader.sampler.rank_split=contiguous default_hooks.checkpoint.interval=1000000)
RESUME=("${COMMON[@]}" train_cfg.max_iters="$STEPS" default_hooks.checkpoint.interval="$CKPT")

# 1 + 4: parity and samples/s
train par1 par1 1 "$NGPU" $((NGPU * STEPS)) "$ONE_DEVICE" none --cfg-options "${PARITY[@]}" \
    train_cfg.max_iters=$((NGPU * STEPS)) optim_wrapper.accumulative_counts="$NGPU" \
    train_dataloader.sampler.per_device_batch_size=$((2 * NGPU))
train par2 par2 "$NGPU" 1 "$STEPS" all none --cfg-options "${PARITY[@]}" \
    train_cfg.max_iters="$STEPS" optim_wrapper.accumulative_counts=1 train_dataloader.sampler.per_device_batch_size=2

# 3: uninterrupted reference, killed run, resumed run (item 2 is read from par2, ref2 and kill2's losses.jsonl)
train ref2 ref2 "$NGPU" 1 "$STEPS" all none --cfg-options "${RESUME[@]}"
KILLED_PIDS=""; KILLED_PGIDS=""; KILLED_AT=""; SURVIVORS=0
train kill2 kill2 "$NGPU" 1 "$STEPS" all kill_ready --cfg-options "${RESUME[@]}"
kill_rc=$?
at_kill=$(last_iter "$WORK/kill2/losses.jsonl")
final_ckpt=false
[ -e "$WORK/kill2/iter_$STEPS.pth.complete" ] && final_ckpt=true
cp "$WORK/kill2/losses.jsonl" "$OUT/kill2_losses_at_kill.jsonl" 2>/dev/null
ls -la "$WORK/kill2" > "$OUT/kill2_dir_at_kill.txt" 2>&1
cat > "$OUT/kill.json" <<EOF
{"checkpoint": $CKPT, "kill_after": $KILL_AFTER, "max_iters": $STEPS, "rc": $kill_rc,
 "killed": $([ "$kill_rc" = 137 ] && echo true || echo false), "marker_seen_at": "${MARKER_AT:-none}",
 "killed_at": "${KILLED_AT:-none}", "last_iter_at_kill": $at_kill, "final_checkpoint_at_kill": $final_ckpt,
 "pids": [$(echo "$KILLED_PIDS" | tr ' ' ',')], "pgids": [$(echo "$KILLED_PGIDS" | tr ' ' ',')],
 "survivors": $SURVIVORS}
EOF
complete=$(cd "$WORK/kill2" 2>/dev/null && ls -d iter_*.pth.complete 2>/dev/null | tr '\n' ' ')
say "kill2: rc=$kill_rc, last iteration logged $at_kill of $STEPS, pids [$KILLED_PIDS], process groups" \
    "[$KILLED_PGIDS], survivors $SURVIVORS; complete checkpoints: $complete"
if [ "$kill_rc" = 137 ]; then
    train kill2 resume2 "$NGPU" 1 "$STEPS" all none --resume auto --cfg-options "${RESUME[@]}"
else
    say "resume2: skipped, kill2 was not killed (rc=$kill_rc)"
fi

# ------------------------------------------------------------------ summary
grep -h "resumed data stream\|--resume auto:" "$OUT/resume2.log" 2>/dev/null | tee -a "$OUT/gpu_multi.log"
for name in par1 par2 ref2; do  # the last training line of each run (rank 0's values)
    grep "Iter(train)" "$OUT/$name.log" 2>/dev/null | tail -n 1 | cut -c1-260
done
find "$WORK" -maxdepth 2 \( -name 'iter_*.pth' -o -name '.tmp-iter_*' \) -exec du -sh {} + > "$OUT/checkpoints.txt" \
    2>/dev/null
if [ "$KEEP_CKPT" != 1 ]; then  # keep the .complete markers, drop the payloads
    find "$WORK" -maxdepth 2 \( -name 'iter_*.pth' -o -name '.tmp-iter_*' \) -exec rm -rf {} + 2>/dev/null
fi
"$PYTHON" "$ROOT/benchmarks/compare_runs.py" "$OUT" --json "$OUT/summary.json" 2>&1 | tee "$OUT/summary.txt"
say "done; summary: $OUT/summary.txt"
