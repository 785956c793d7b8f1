"""Exponential moving average (EMA) of the weights, kept during training when `ema_decay` is set.

The average, not the trained network, is what gets evaluated after each epoch, saved to
best.ckpt and exported, as with MindCV's `ema`. It averages out the noise of the last steps;
under a schedule that anneals the learning rate to ~0 little noise is left, and on the 40-epoch
Fashion-MNIST one-cycle recipe it ended 0.11 points below the trained weights (docs/experiments.md).
"""

from __future__ import annotations

from pathlib import Path

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops
from mindspore.train import Callback

from ms_resnet.checkpoint import load_weights

PREFIX = "ema."

_blend = ops.MultitypeFuncGraph("blend")


@_blend.register("Tensor", "Tensor", "Tensor")
def _blend_parameter(decay: Tensor, average: Parameter, current: Parameter) -> Tensor:
    # average -= (1 - d) * (average - current): the same value as d * average + (1 - d) * current
    # with the fewest kernels; the update costs a quarter of the `assign` form's time on CPU.
    return ops.assign_sub(average, (average - current) * (1.0 - decay))


class _AverageStep(nn.Cell):
    """One EMA update of every parameter, compiled as one graph (one call per training step)."""

    def __init__(self, averages: list[Parameter], currents: list[Parameter],
                 decay: float) -> None:
        super().__init__(auto_prefix=False)
        self.averages = ParameterTuple(averages)
        self.currents = ParameterTuple(currents)
        self.decay = Tensor(decay, ms.float32)
        self.updates = Parameter(Tensor(0.0, ms.float32), name=PREFIX + "updates",
                                 requires_grad=False)
        self.hyper_map = ops.HyperMap()

    def construct(self):
        updates = self.updates + 1.0
        ops.assign(self.updates, updates)
        # TensorFlow's ExponentialMovingAverage(num_updates): a short memory at first, so the
        # random initial weights fade within tens of steps, not thousands.
        decay = ops.minimum(self.decay, (1.0 + updates) / (10.0 + updates))
        return self.hyper_map(ops.partial(_blend, decay), self.averages, self.currents)


class WeightAverage(Callback):
    """Keeps `average_net` (a second instance of the trained architecture) the exponential
    moving average of `net`'s parameters, BN statistics included, after every training step:
    average = d * average + (1 - d) * current, with d = min(decay, (1 + n) / (10 + n)) at the
    n-th update.

    In last.ckpt the average is stored as `ema.<name>` beside the training state, so --resume
    continues it exactly; `network_entries()` gives it under the network's own names for
    best.ckpt.
    """

    def __init__(self, net: nn.Cell, average_net: nn.Cell, decay: float) -> None:
        super().__init__()
        currents, averages = net.get_parameters(), average_net.get_parameters()
        for current, average in zip(currents, averages, strict=True):
            if current.shape != average.shape:
                raise ValueError(f"{average.name} {average.shape} does not match "
                                 f"{current.name} {current.shape}")
            # Distinct names: both sets of parameters appear in the one update graph.
            average.name = PREFIX + current.name
            average.set_data(current.data.copy())
        self.network = average_net
        self._step = _AverageStep(list(average_net.get_parameters()), list(net.get_parameters()),
                                  decay)

    def update(self) -> tuple:
        """One step of the average; returns the updated averages."""
        return self._step()

    def on_train_step_end(self, run_context) -> None:
        self.update()

    def network_entries(self) -> list[dict]:
        """The averaged network as `save_checkpoint` takes it, under the plain names that
        eval.py and export.py load."""
        return [{"name": param.name.removeprefix(PREFIX), "data": param}
                for param in self.network.get_parameters()]

    def state_parameters(self) -> list[Parameter]:
        """The average and its update count, named `ema.*`, for last.ckpt."""
        return [*self.network.get_parameters(), self._step.updates]

    def load_state(self, last_ckpt: Path) -> None:
        """Continue the average saved in a last.ckpt with `state_parameters`."""
        load_weights(self._step, last_ckpt)
