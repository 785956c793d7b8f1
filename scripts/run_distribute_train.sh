#!/usr/bin/env bash
# Data-parallel training with MindSpore's msrun launcher.
# Usage: bash scripts/run_distribute_train.sh NUM_WORKERS [CONFIG] [--key value ...]
#   NUM_WORKERS  total number of worker processes (all machines together)
#   CONFIG       defaults to configs/mnist.yaml; --key value overrides any config key.
#   batch_size is per worker: the global batch is NUM_WORKERS x batch_size, and with
#   lr_scaling: linear (the default) the learning rate is multiplied by NUM_WORKERS.
# Several machines: run the same command on each, with the same MASTER_ADDR (the first
# machine's address) and MASTER_PORT, and this machine's NODE_RANK (0, 1, ...):
#   MASTER_ADDR=10.0.0.1 MASTER_PORT=8118 NODE_RANK=0 LOCAL_WORKER_NUM=8 \
#     bash scripts/run_distribute_train.sh 16 configs/cifar10.yaml
# Environment: MASTER_ADDR (default 127.0.0.1), MASTER_PORT (default: a free port, single
# machine only), NODE_RANK, LOCAL_WORKER_NUM (workers on this machine, default NUM_WORKERS),
# CLUSTER_TIME_OUT (seconds to wait for all workers to join, default 600).
# Worker logs: <ckpt_dir>/logs/worker_<rank>.log. Every rank evaluates its shard of the test
# set; only rank 0 prints progress and writes checkpoints (docs/distributed.md).
# GPU and Ascend: give --device_target (or a config that sets it, e.g.
# configs/cifar10_resnet50_ascend.yaml / _gpu.yaml); msrun gives each local worker its own
# device (local rank = device number), so DEVICE_ID and device_id are not used here.
#   Ascend: source /usr/local/Ascend/ascend-toolkit/set_env.sh first (CANN, HCCL); choose the
#           devices with ASCEND_RT_VISIBLE_DEVICES=0,1,... (no rank table needed with msrun).
#   GPU:    CUDA, cuDNN and NCCL as MindSpore's GPU package needs them; choose the devices with
#           CUDA_VISIBLE_DEVICES=0,1,...
#   e.g. bash scripts/run_distribute_train.sh 8 configs/cifar10_resnet50_ascend.yaml
# --dry_run (anywhere after NUM_WORKERS) prints the msrun command instead of running it.
# See docs/devices.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -lt 1 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "error: usage: bash scripts/run_distribute_train.sh NUM_WORKERS [CONFIG] [--key value ...]" >&2
  exit 2
fi
workers=$1
shift
config="$root/configs/mnist.yaml"
if [[ $# -gt 0 && $1 != -* ]]; then
  config="$1"
  shift
fi
ckpt_dir="ckpt/$(basename "${config%.*}")"
args=()
dry_run=false
for arg in "$@"; do
  if [[ $arg == --dry_run ]]; then
    dry_run=true
  else
    args+=("$arg")
  fi
done
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ ${args[i]} == --ckpt_dir || ${args[i]} == --output_path ]] && ((i + 1 < ${#args[@]})); then
    ckpt_dir=${args[i + 1]}
  fi
done
port=${MASTER_PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export GLOG_v=${GLOG_v:-3}
node_args=()
[[ -n ${NODE_RANK:-} ]] && node_args+=(--node_rank "$NODE_RANK")
command=(msrun --worker_num "$workers" --local_worker_num "${LOCAL_WORKER_NUM:-$workers}"
  --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "$port" "${node_args[@]}"
  --cluster_time_out "${CLUSTER_TIME_OUT:-600}" --log_dir "$ckpt_dir/logs" --join True
  --tail_worker_log 0
  "$root/train.py" --config "$config" --distribute true --ckpt_dir "$ckpt_dir" "${args[@]}")
if $dry_run; then
  echo "GLOG_v=$GLOG_v ${command[*]}"
  exit 0
fi
mkdir -p "$ckpt_dir/logs"
# logs/ holds this run's logs only (msrun overwrites worker_<rank>.log, but not those of ranks
# an earlier run had and this one has not).
rm -f "$ckpt_dir"/logs/worker_*.log
# msrun shows rank 0's output here; its own messages go to logs/msrun.log.
set +e
"${command[@]}" 2> "$ckpt_dir/logs/msrun.log"
status=$?
set -e
if [[ $status -ne 0 ]]; then
  # One line from the worker logs: which rank stopped first, where (epoch, step) and why, and
  # the log line to read; a worker's own error (bad config, refused --resume) as it is, exit 2.
  resume="bash scripts/run_distribute_train.sh $workers $config --ckpt_dir $ckpt_dir --resume"
  set +e
  PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" \
    python -m ms_resnet.msrun_report "$ckpt_dir/logs" "$status" "$resume"
  exit $?
fi
