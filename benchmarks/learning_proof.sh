#!/usr/bin/env bash
# Learning proof on one GPU: configs/sa2va_learning_proof.py (small Sa2VA, everything trainable from random init,
# synthetic shapes in the REFER format), then the held-out refcocog val cIoU and caption exact match.
#   bash benchmarks/learning_proof.sh [--cfg-options ...]
# Logs, losses.jsonl and the loss curve go to ${OUT:-learning_proof}.
set -uo pipefail
OUT=${OUT:-learning_proof}
WORK=work_dirs/learning_proof
mkdir -p "$OUT"
start=$(date +%s)
python3 -c "
from mmengine.config import Config
from sa2va import BUILDER
BUILDER.build(Config.fromfile('configs/sa2va_learning_proof.py').prepare)" > "$OUT/assets.log" 2>&1
echo "assets ready after $(( $(date +%s) - start )) s"
rm -rf "$WORK"
t0=$(date +%s)
python3 tools/train.py configs/sa2va_learning_proof.py --work-dir "$WORK" "$@" > "$OUT/train.log" 2>&1
echo "train.py rc=$? after $(( $(date +%s) - t0 )) s (training + evaluation)"
cp "$WORK"/losses.jsonl "$WORK"/*.png "$OUT"/ 2>/dev/null
cp "$(ls -v "$WORK"/eval/*_captions_iter*.json 2>/dev/null | tail -1)" "$OUT"/captions.json 2>/dev/null
grep -h "Iter(train)" "$OUT/train.log" | awk 'NR % 10 == 1' | cut -c1-330
grep -h "evaluation at\|Error\|error" "$OUT/train.log" | cut -c1-400
if [ -f "$OUT/captions.json" ]; then  # which caption words are right: colour / shape / h-pos / v-pos
  python3 -c "
import json, sys
sys.path.insert(0, 'benchmarks')
from learning_proof_sweep import attribute_accuracy
print('caption attribute accuracy', attribute_accuracy(json.load(open('$OUT/captions.json'))))"
fi
