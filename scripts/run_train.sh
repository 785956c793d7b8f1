#!/usr/bin/env bash
# Train a ResNet.
# Usage: bash scripts/run_train.sh [CONFIG] [--key value ...]
#   CONFIG defaults to configs/mnist.yaml; checkpoints go to ckpt/<config name>/ unless
#   --ckpt_dir is given. Data is read from --data_dir, else $MS_RESNET_DATA/<dataset>,
#   else ./data/<dataset>.
# Example: MS_RESNET_DATA=../shared/datasets bash scripts/run_train.sh configs/fashion_mnist.yaml --epochs 1
# One GPU or Ascend device (docs/devices.md): the device recipes set device_target, amp O2, a
# fixed loss scale and sink mode; DEVICE_ID chooses the device (default 0), as in ModelZoo:
#   DEVICE_ID=0 bash scripts/run_train.sh configs/cifar10_resnet50_ascend.yaml
#   DEVICE_ID=1 bash scripts/run_train.sh configs/cifar10_resnet50_gpu.yaml
# A device that is missing or unusable is one "error:" line (exit code 2).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
config="$root/configs/mnist.yaml"
if [[ $# -gt 0 && $1 != -* ]]; then
  config="$1"
  shift
fi
exec python "$root/train.py" --config "$config" "$@"
