"""Training accuracy without a second forward pass: the training loss counts its own hits.

`Model(net, loss_fn=CountingLoss(loss_fn), optimizer=...)` keeps Model's own training network
(and whatever it adds: amp, loss scaling, sink mode). The loss Cell adds, in the graph, the
number of top-1 correct predictions and of images of every training batch to two
non-trainable Parameters. A callback reads them once per epoch and sets them back to zero.

Because the counters are Parameters of the training network, last.ckpt holds them: a run
interrupted in the middle of an epoch and resumed records the same `train_accuracy` as an
uninterrupted one. Under data parallelism every rank counts its own shard; the main rank's
count is the one recorded (a uniform sample of 1/N of the epoch's images), so no collective
runs outside Model's own.
"""

from __future__ import annotations

import math

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

# Parameter names in last.ckpt. A last.ckpt written before they existed lacks them.
COUNTER_NAMES = ("train_accuracy.correct", "train_accuracy.seen")


class CountingLoss(nn.Cell):
    """`loss_fn(logits, label)`, which also counts the batch's correct top-1 predictions and its
    images into `correct` and `seen`. `label` holds class indices."""

    def __init__(self, loss_fn: nn.Cell) -> None:
        # No prefix: the counters keep their names wherever Model nests this Cell.
        super().__init__(auto_prefix=False)
        self.loss_fn = loss_fn
        self.correct = Parameter(Tensor(0, ms.int32), name=COUNTER_NAMES[0], requires_grad=False)
        self.seen = Parameter(Tensor(0, ms.int32), name=COUNTER_NAMES[1], requires_grad=False)

    def construct(self, logits, label):
        loss = self.loss_fn(logits, label)
        # Tensor.sum() of int32 is int64: cast back to the counter's type.
        hits = ops.stop_gradient((ops.argmax(logits, -1) == label).sum().astype(ms.int32))
        ops.assign_add(self.correct, hits)
        ops.assign_add(self.seen, Tensor(label.shape[0], ms.int32))
        return loss

    def take(self) -> tuple[int, int]:
        """(correct, seen) since the last call, and the counters back at zero."""
        counts = int(self.correct.asnumpy()), int(self.seen.asnumpy())
        self.correct.set_data(Tensor(0, ms.int32))
        self.seen.set_data(Tensor(0, ms.int32))
        return counts


def accuracy_of(counts: tuple[int, int]) -> float:
    """correct / seen, NaN when nothing was counted."""
    correct, seen = counts
    return correct / seen if seen else math.nan
