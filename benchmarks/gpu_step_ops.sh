#!/usr/bin/env bash
# benchmarks/step_ops.py on the GPU, variants back to back in one call (the device tool's image: wheels in .whl/):
#   1. this tree as configured (merged parameter groups, fused AdamW, batched per-sample loops);
#   2. this tree with the LLM and ViT layers compiled (--compile-layers);
#   3. this tree with mmengine's per-tensor groups and foreach AdamW (the optimizer as before; PER_TENSOR=0 skips it);
#   4. an older checkout, if BASELINE=<dir holding its projects/, configs/ and benchmarks/step_ops.py> is given.
set -uo pipefail
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L; nproc
ARGS="--steps ${STEPS:-10} --warmup 3"
python3 benchmarks/step_ops.py $ARGS 2>&1 | grep -E "cores, torch|^segmentation|^caption|^  top|Error"
python3 benchmarks/step_ops.py $ARGS --compile-layers 2>&1 | grep -E "cores, torch|^segmentation|^caption|^  top|Error"
if [ "${PER_TENSOR:-1}" != 0 ]; then
  python3 benchmarks/step_ops.py $ARGS --per-tensor-foreach 2>&1 | grep -E "cores, torch|^segmentation|^caption|^  top|Error"
fi
if [ -n "${BASELINE:-}" ]; then
  echo "== baseline tree $BASELINE"
  (cd "$BASELINE" && python3 benchmarks/step_ops.py $ARGS 2>&1 | grep -E "cores, torch|^segmentation|^caption|^  top|Error")
fi
