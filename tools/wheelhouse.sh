#!/usr/bin/env bash
# Build a folder of wheels from which sa2va-train installs on a machine without internet (e.g. a GPU node).
#
#   bash tools/wheelhouse.sh OUT_DIR [--python-version 3.12] [--platform manylinux2014_x86_64] [--no-torch]
#
# * binary wheels of the whole dependency closure, resolved for the *target* Python and platform (not this machine's);
# * sdists without a compiled part that training needs -- sam2 (SAM2_BUILD_CUDA=0: its CUDA post-processing op is not
#   used) and deepspeed (DS_BUILD_OPS=0: ops are JIT-built on the node if ever used) -- and the sdist-only small
#   dependencies (antlr4-python3-runtime, iopath), built here as pure-python wheels;
# * sa2va-train itself.
# --no-torch leaves out torch, torchvision, triton and the nvidia-*/cuda-* CUDA libraries, for nodes that provide a
# CUDA-matched torch already. On the node (docs/offline_install.md):
#   python -m pip install --no-index --find-links OUT_DIR sa2va-train
set -euo pipefail

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 1 && $1 != -* ]] || usage
out=$1; shift
pyver=3.12
platforms=()
with_torch=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --python-version) pyver=$2; shift 2 ;;
    --platform) platforms+=("$2"); shift 2 ;;
    --no-torch) with_torch=0; shift ;;
    *) usage ;;
  esac
done
if [[ ${#platforms[@]} -eq 0 ]]; then
  # every manylinux tag a glibc >= 2.17 x86_64 node accepts, newest first (pip wants them listed explicitly)
  platforms=(manylinux_2_39_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64
             manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
             manylinux2014_x86_64 linux_x86_64)
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target=(--python-version "$pyver" --implementation cp --abi "cp${pyver/./}" --abi abi3 --abi none)
for p in "${platforms[@]}"; do target+=(--platform "$p"); done

echo "== pure-python wheels from sdists (sam2, deepspeed, antlr4-python3-runtime, iopath) and sa2va-train"
# pip-wheel needs torch importable for sam2/deepspeed's setup.py (no build isolation): use this environment's
SAM2_BUILD_CUDA=0 DS_BUILD_OPS=0 "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$out" \
  "sam2==1.1.0" "deepspeed==0.19.6" "antlr4-python3-runtime==4.9.3" "iopath==0.1.10" "$repo"
for whl in "$out"/sam2-*.whl "$out"/deepspeed-*.whl; do
  case $whl in *-py3-none-any.whl) ;; *) echo "error: $whl is not a pure-python wheel" >&2; exit 1 ;; esac
done

echo "== resolving the dependency closure for CPython $pyver on ${platforms[0]} ..."
# the resolver sees the local pure wheels (--find-links) and PyPI's binary wheels for the target
"$py" -m pip install -q --dry-run --ignore-installed --only-binary=:all: "${target[@]}" --target "$work/none" \
  --find-links "$out" --report "$work/report.json" "$(ls "$out"/sa2va_train-*.whl)"
"$py" - "$work/report.json" "$with_torch" "$out" > "$work/requirements.txt" <<'EOF'
import json, pathlib, re, sys
report, with_torch = json.load(open(sys.argv[1])), sys.argv[2] == "1"
built_here = pathlib.Path(sys.argv[3]).as_uri() + "/"
skip = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-toolkit|cuda-bindings|cuda-pathfinder)$")
for item in report["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if item["download_info"]["url"].startswith(built_here):
        continue  # built above
    if not with_torch and skip.match(name.lower().replace("_", "-")):
        continue
    print(f"{name}=={version}")
EOF

echo "== downloading $(wc -l < "$work/requirements.txt") binary wheels"
"$py" -m pip download -q --no-deps --only-binary=:all: "${target[@]}" -d "$out" -r "$work/requirements.txt"

n=$(ls "$out"/*.whl | wc -l)
size=$(du -sh "$out" | cut -f1)
echo "== $n wheels ($size) in $out"
[[ $with_torch == 1 ]] || echo "   (torch, torchvision, triton, nvidia-* and cuda-* left out: the node must provide them)"
echo "   install on the node: python -m pip install --no-index --find-links $out sa2va-train"
