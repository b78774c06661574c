#!/usr/bin/env bash
# Issue 15's figures on one GPU, in about 5 minutes on an H100/H200, no downloads; everything is logged.
#   model step, paper size, bf16, 16 windows x 4 studies with laterals: the masked-attention baseline, then the
#   grouped (mask-free) attention, compiled, and the reference compat; studies/s, MFU, peak memory, host syncs,
#   first-step (warm-up) time, inference studies/s; an operator profile;
#   the trainer (`medst pretrain`'s loop) on synthetic shards made here, --batch-size auto, 300 steps: studies/s
#   against the bare model step on the same batches, MFU, peak memory, the falling loss;
#   a summary (GPU_SUMMARY line and a README speed-table row) from the log.
#   bash benchmarks/gpu_check.sh                      # the GPU run; log in $MEDST_GPU_LOG (gpu_check.log)
#   bash benchmarks/gpu_check.sh --tiny --device cpu  # CPU dry run of the same script (tests run this)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch" 2>/dev/null; then
    PY=.venv/bin/python
else
    PY=${PYTHON:-python3}
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
LOG=${MEDST_GPU_LOG:-gpu_check.log}
exec > >(tee "$LOG") 2>&1
date -u +"date: %Y-%m-%dT%H:%M:%SZ"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
if [[ " $* " == *" --tiny "* ]]; then
    # CPU dry run: every script and option once, a few steps each.
    "$PY" benchmarks/gpu_check.py --attention masked --steps 2 --warmup 2 "$@"
    "$PY" benchmarks/gpu_check.py --steps 2 --warmup 2 "$@"
    "$PY" benchmarks/gpu_train_check.py --batch-size auto --batch-size-max 10 "$@"
else
    # Before: the boolean key mask (SDPA without flash). After: grouped attention, eager and compiled.
    "$PY" benchmarks/gpu_check.py --attention masked --steps 10 "$@"
    "$PY" benchmarks/gpu_check.py --steps 15 "$@"
    "$PY" benchmarks/gpu_check.py --compile --warmup 3 --steps 15 "$@"
    "$PY" benchmarks/gpu_check.py --compat reference --steps 10 "$@"
    # Where a step's time goes (top operators by GPU time), before and after.
    "$PY" benchmarks/gpu_check.py --attention masked --steps 3 --profile 25 "$@" | sed -n '/^GPU_CHECK/,$p'
    "$PY" benchmarks/gpu_check.py --steps 3 --profile 25 "$@" | sed -n '/^GPU_CHECK/,$p'
    "$PY" benchmarks/gpu_train_check.py --batch-size auto "$@"
fi
"$PY" benchmarks/gpu_summary.py "$LOG"
