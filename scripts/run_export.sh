#!/usr/bin/env bash
# Export a checkpoint to MindIR (default) or ONNX, with a JSON sidecar and a parity check.
# Usage: bash scripts/run_export.sh [CKPT] [options of `python export.py --help`]
#   CKPT defaults to ckpt/mnist/best.ckpt; the network is rebuilt from the config.yaml beside it.
# Example: bash scripts/run_export.sh ckpt/mnist/best.ckpt --file_name dist/mnist_resnet20
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ckpt="ckpt/mnist/best.ckpt"
if [[ $# -gt 0 && $1 != -* ]]; then
  ckpt="$1"
  shift
fi
exec python "$root/export.py" --ckpt "$ckpt" "$@"
