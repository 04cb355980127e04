#!/usr/bin/env bash
# Install sa2va-train (editable) with its dependencies. sam2 is an sdist whose CUDA extension is not needed for
# training: build it without CUDA and against the torch already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "setuptools>=68" wheel
python -c "import torch" 2>/dev/null || python -m pip install -q torch torchvision
python -c "import sam2" 2>/dev/null || SAM2_BUILD_CUDA=0 python -m pip install -q --no-build-isolation sam2
python -m pip install -q -e ".[dev,eval]"
