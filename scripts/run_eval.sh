#!/usr/bin/env bash
# Evaluate a checkpoint or an exported MindIR on the test split.
# Usage: bash scripts/run_eval.sh [CKPT|MINDIR] [options of `python eval.py --help`]
#   CKPT defaults to ckpt/mnist/best.ckpt; the network is rebuilt from the config.yaml beside it.
#   A path ending in .mindir is run as exported (with the .json sidecar beside it).
# Example: bash scripts/run_eval.sh ckpt/mnist/best.ckpt --predict 20 --plots
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ckpt="ckpt/mnist/best.ckpt"
if [[ $# -gt 0 && $1 != -* ]]; then
  ckpt="$1"
  shift
fi
source_flag="--ckpt"
[[ $ckpt == *.mindir ]] && source_flag="--mindir"
exec python "$root/eval.py" "$source_flag" "$ckpt" "$@"
