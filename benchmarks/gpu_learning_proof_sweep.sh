#!/usr/bin/env bash
# The learning-proof sweep on the device tool's GPU machine (its image: wheels in .whl/), as run since the
# seventeenth session: benchmarks/learning_proof_sweep.py inside a timeout, one run per visible GPU, then the summary,
# each run's teacher-forced curve and a log archive under $OUT.
#   OMP_NUM_THREADS=2 LIMIT=588 OUT=out bash benchmarks/gpu_learning_proof_sweep.sh \
#     "q25:seed=25,train_seconds=430,tf_every=500,default_hooks.checkpoint.interval=100000" ...
# LIMIT (default 520 s) bounds the whole sweep; a stopped sweep still writes its summary (marked "stopped").
# OUT gets summary.json and logs.tgz (train.log, losses.jsonl, tf_eval.jsonl, captions.json and the curves per run).
set -uo pipefail
OUT=${OUT:-.}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl > /dev/null 2>&1 || exit 1
  export PYTHONPATH=/tmp/site:$PWD/projects
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
nproc
timeout "${LIMIT:-520}" python3 benchmarks/learning_proof_sweep.py --out "$OUT/sweep" "$@"
echo "sweep rc=$?"
head -c 6000 "$OUT/sweep/summary.json" 2>/dev/null
for d in "$OUT"/sweep/*/; do
  echo "== $d"
  grep -h "teacher-forced val" "$d/train.log" | cut -c1-260 | tail -40
  grep -h "Iter(train)" "$d/train.log" | awk 'NR % 5 == 0' | cut -c1-300
  grep -h "evaluation at\|Error" "$d/train.log" | cut -c1-400
done
rm -rf "$OUT"/sweep/*/work_*  # checkpoints and the runs' work dirs: too large to bring back
tar czf "$OUT/logs.tgz" -C "$OUT" sweep && mv "$OUT/sweep/summary.json" "$OUT/" && rm -rf "$OUT/sweep"
ls -la "$OUT"
