#!/usr/bin/env bash
# GPU check of training (issue 11): `boom train` with use_gpu on 1 worker in bf16, 30 steps at
# ZeRO-2 and at ZeRO-3, export, reload with SentenceTransformer and compare embeddings, and print
# tokens/s, MFU and peak GPU memory. Needs no hub: the model is Qwen3-0.6B-shaped (Qwen3Config,
# random weights) with a small local tokenizer. Budget: under 8 minutes on one H200-class GPU.
#
#   benchmarks/gpu_check.sh                       # the check (writes runs/gpu_check/)
#   benchmarks/gpu_check.sh --device cpu --shape tiny --steps 3   # dry run of the same code on CPU
#
# Environment: PYTHON (default .venv/bin/python), GPU_CHECK_TIMEOUT (seconds, default 480),
# GPU_PEAK_TFLOPS (dense bf16 peak for MFU; default 989, an H100/H200 SXM).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_USAGE_STATS_ENABLED=0
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$PY" benchmarks/gpu_check.py "$@"
