"""Collectives of data-parallel evaluation (under msrun): the evaluation's totals are summed and
the BatchNorm statistics averaged over all ranks, so every rank evaluates the same network on its
shard of the test set and prints the accuracy of the whole set.

Why the BN statistics are averaged (not broadcast from rank 0, nor synchronised every step):
the weights are identical on every rank (their gradients are all-reduced), but each rank's
moving mean/variance follow only the batches of its own shard. Averaging them is one AllReduce
per evaluation, uses the statistics of all shards (broadcasting rank 0's would throw N-1 of them
away), and leaves training exactly as it was: the moving statistics do not enter the training
step, which normalises with the batch's own statistics. A synchronised BN (`nn.SyncBatchNorm`,
Ascend only in MindSpore) would add an all-reduce to every BN layer of every step, change the
training itself, and still not help evaluation, which uses the moving statistics.
"""

from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype

# The CPU (mccl) AllReduce takes float32 only (not float64, not int32): counts stay exact up to
# 2**24 images, a sum of losses keeps ~7 significant digits.
_DTYPE = np.float32


class _AllReduceSum(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM)

    def construct(self, values):
        return self.all_reduce(values)


class RankSum:
    """Sums vectors over all ranks of the data-parallel group (each call is one collective that
    every rank must enter)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._cell = _AllReduceSum() if workers > 1 else None

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if self._cell is None:
            return np.asarray(values, np.float64)
        summed = self._cell(Tensor(np.asarray(values, _DTYPE))).asnumpy()
        return summed.astype(np.float64)


def moving_statistics(net: nn.Cell) -> list[Parameter]:
    """The parameters that training does not update by gradient: BN moving mean and variance."""
    return [p for p in net.get_parameters()
            if not p.requires_grad and p.dtype in mstype.float_type]


def average_moving_statistics(net: nn.Cell, rank_sum: RankSum) -> None:
    """Replace every rank's BN moving statistics with their mean over the ranks (one collective;
    the result is bit-identical on every rank)."""
    params = moving_statistics(net)
    if rank_sum.workers == 1 or not params:
        return
    flat = np.concatenate([p.asnumpy().astype(_DTYPE).reshape(-1) for p in params])
    mean = (rank_sum(flat) / rank_sum.workers).astype(_DTYPE)
    offset = 0
    for param in params:
        size = int(np.prod(param.shape))
        param.set_data(Tensor(mean[offset:offset + size].reshape(param.shape), param.dtype))
        offset += size
