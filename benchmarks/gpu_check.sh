#!/usr/bin/env bash
# Paper-size Med-ST training throughput on one GPU (bf16 autocast, 16 windows x 4 studies with laterals):
# steps/s, studies/s, peak memory, MFU, an operator profile; then the trainer itself. About 3-4 minutes on an
# H100/H200 (the model part took 76 s on an H200); no downloads.
#   bash benchmarks/gpu_check.sh                      # default GPU run
#   bash benchmarks/gpu_check.sh --tiny --device cpu  # CPU smoke run of the same script
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch" 2>/dev/null; then
    PY=.venv/bin/python
else
    PY=${PYTHON:-python3}
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
# Main figure: the paper configuration; then the same with gradient checkpointing (memory vs speed).
"$PY" benchmarks/gpu_check.py "$@"
if [[ " $* " != *" --tiny "* ]]; then
    "$PY" benchmarks/gpu_check.py --grad-checkpointing --steps 8 "$@"
    # Where a step's time goes (top operators by GPU time), for work on the MFU.
    "$PY" benchmarks/gpu_check.py --steps 5 --profile 30 "$@" | sed -n '/^GPU_CHECK/,$p'
fi
# Training part: the trainer itself (streaming loader, bf16 loop, validation) on synthetic shards made here,
# paper-size model, a few hundred steps: studies/s, MFU, peak memory, falling loss. About 2-3 minutes.
"$PY" benchmarks/gpu_train_check.py "$@"
