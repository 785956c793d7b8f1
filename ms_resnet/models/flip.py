"""Test-time augmentation: flip averaging, for datasets whose classes survive a left-right mirror,
and optionally 1-px translations."""

from __future__ import annotations

from mindspore import nn, ops


class FlipAverage(nn.Cell):
    """Mean of the network's logits for each NCHW image and its mirror image.

    With `translate`, that mean counts 1/2 and the same mean for the image shifted one pixel
    up-left and one pixel down-right (edges reflected) 1/4 each: airbench's test-time
    augmentation (Jordan 2024), six views per image.

    Evaluation and export wrap the trained network in it (config `eval_flip`, `eval_translate`),
    so an exported MindIR gives exactly the logits that were measured. Parameter names are left
    unprefixed: checkpoints of the wrapped and the bare network are interchangeable.
    """

    def __init__(self, network: nn.Cell, translate: bool = False) -> None:
        super().__init__(auto_prefix=False)
        self.network = network
        self.translate = translate
        self.pad = nn.Pad(((0, 0), (0, 0), (1, 1), (1, 1)), mode="REFLECT")

    def _mirrored(self, images):
        return (self.network(images) + self.network(ops.flip(images, (3,)))) / 2

    def construct(self, images):
        logits = self._mirrored(images)
        if not self.translate:
            return logits
        padded = self.pad(images)
        shifted = self._mirrored(padded[:, :, :-2, :-2]) + self._mirrored(padded[:, :, 2:, 2:])
        return logits / 2 + shifted / 4
