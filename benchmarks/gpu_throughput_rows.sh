#!/usr/bin/env bash
# benchmarks/train_throughput.py rows, one process per row, back to back on one card, so the rows compare (the
# device tool's image: wheels in .whl/). All on the mixed batch with uint8 tiles; a row's arguments come after the
# common ones, so a row can override them (--ckpt).
#   1-7, the LLM with and without its padding mask (InternVLMLLM right_padded; fifteenth session):
#     1B compiled, micro-batch 8, padding mask kept (as measured before) / dropped (flash causal attention);
#     1B optimized (eager), micro-batch 4, kept / dropped; the 4B shape compiled at micro-batch 2, dropped / kept;
#     7: 1B compiled at micro-batch 12, dropped.
#   8-9, the ">= 2x baseline" goal at the same micro-batch 4: the baseline (the original's settings: gradient
#     checkpointing, padding mask, full embedding / lm_head) against compiled as shipped (mask dropped).
# ROWS="1 2" runs a subset; OUT (default .) gets train_throughput.jsonl and one log per row.
set -uo pipefail
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
OUT=${OUT:-.}
nvidia-smi -L; nproc
COMMON="--batches mix --uint8-tiles --ckpt off --out $OUT/train_throughput.jsonl"
declare -A ROW=(
  [1]="--shape 1b --variants compiled --micro-batch 8 --keep-padding-mask"
  [2]="--shape 1b --variants compiled --micro-batch 8"
  [3]="--shape 1b --variants optimized --micro-batch 4 --keep-padding-mask"
  [4]="--shape 1b --variants optimized --micro-batch 4"
  [5]="--shape 4b --variants compiled --micro-batch 2"
  [6]="--shape 4b --variants compiled --micro-batch 2 --keep-padding-mask"
  [7]="--shape 1b --variants compiled --micro-batch 12"
  [8]="--shape 1b --variants baseline --micro-batch 4 --ckpt auto"
  [9]="--shape 1b --variants compiled --micro-batch 4"
)
for r in ${ROWS:-1 2 3 4 5 6 7 8 9}; do
  echo "== row $r: ${ROW[$r]}"
  timeout ${ROW_LIMIT:-240} python3 benchmarks/train_throughput.py $COMMON ${ROW[$r]} > $OUT/row$r.log 2>&1
  echo "rc=$?"; grep -E '^\{|Error' $OUT/row$r.log | tail -3
done
