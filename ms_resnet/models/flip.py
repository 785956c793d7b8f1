"""Test-time flip averaging, for datasets whose classes survive a left-right mirror."""

from __future__ import annotations

from mindspore import nn, ops


class FlipAverage(nn.Cell):
    """Mean of the network's logits for each NCHW image and its mirror image.

    Evaluation and export wrap the trained network in it (config `eval_flip`), so an exported
    MindIR gives exactly the logits that were measured. Parameter names are left unprefixed:
    checkpoints of the wrapped and the bare network are interchangeable.
    """

    def __init__(self, network: nn.Cell) -> None:
        super().__init__(auto_prefix=False)
        self.network = network

    def construct(self, images):
        return (self.network(images) + self.network(ops.flip(images, (3,)))) / 2
