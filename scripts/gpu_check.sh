#!/usr/bin/env bash
# The device check (`make gpu-check`): what only a CUDA machine can show, in one go,
# in under five minutes on one H100. Run it where a GPU is at hand; record its figures,
# dated and with the GPU's name, in benchmarks/README.md ("gpu_throughput.py").
#   scripts/gpu_check.sh            # run it
#   scripts/gpu_check.sh --dry-run  # say what it would run, and whether a GPU is here
# Steps: the gpu-marked tests; a trainer=gpu smoke sweep; a 2-process DDP run when two
# GPUs are present; the throughput benchmark (small and base; fp32, bf16, bf16+compile).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

gpus=$($PYTHON -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
steps=(
  "$PYTHON -m pytest -m gpu -q"
  "tiedharness-train -m experiment=smoke trainer=gpu logger=none results_dir=results/gpu-check"
)
if [ "$gpus" -ge 2 ]; then
  steps+=("torchrun --standalone --nproc_per_node=2 --no-python tiedharness-train task=copy model=tiny trainer=gpu trainer.max_steps=50 logger=none results_dir=results/gpu-check")
fi
steps+=("$PYTHON benchmarks/gpu_throughput.py --models small base --steps 30")

if [ "${1:-}" = "--dry-run" ]; then
  if [ "$gpus" = 0 ]; then
    echo "gpu-check: found no GPU (torch.cuda.is_available() is False); on a CUDA machine it would run:"
  else
    echo "gpu-check: found $gpus GPU(s) ($($PYTHON -c 'import torch; print(torch.cuda.get_device_name())')); it would run:"
  fi
  printf '  %s\n' "${steps[@]}"
  exit 0
fi
if [ "$gpus" = 0 ]; then
  echo "gpu-check: found no GPU (torch.cuda.is_available() is False): nothing to check here" >&2
  exit 1
fi
$PYTHON -c 'import torch; print("gpu-check on", torch.cuda.get_device_name(), "x", torch.cuda.device_count(), "torch", torch.__version__)'
for step in "${steps[@]}"; do
  echo "== $step"
  $step
done
