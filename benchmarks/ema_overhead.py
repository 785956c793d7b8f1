#!/usr/bin/env python
"""What `ema_decay` adds to each training step: milliseconds per weight-average update against
milliseconds per training step of the same model.

The update is `ms_resnet.ema.WeightAverage`'s, called as training calls it (once per step). The
training step is `nn.TrainOneStepCell` (the network, label-smoothed cross-entropy and the
optimizer of configs/mnist.yaml) on one random batch held in memory, so no data pipeline is
timed. GRAPH_MODE on CPU; the first --warmup calls (graph compilation) are not timed; medians of
--reps blocks of --calls calls. Run it on an otherwise idle machine:

    python benchmarks/ema_overhead.py
    python benchmarks/ema_overhead.py --models fast_resnet14:1x28 resnet20:3x32 --reps 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from specs import cpu_name, parse_input_spec, warn_if_busy

ROOT = Path(__file__).resolve().parents[1]


def median_ms(call: Callable[[], object], warmup: int, calls: int, reps: int) -> float:
    for _ in range(warmup):
        call()
    blocks = []
    for _ in range(reps):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        blocks.append((time.perf_counter() - started) / calls * 1000)
    return statistics.median(blocks)


def measure(spec: str, args: argparse.Namespace) -> tuple[float, float]:
    """(ms per training step, ms per EMA update) for `spec` ('fast_resnet14:1x28')."""
    import mindspore as ms
    import numpy as np
    from mindspore import nn

    from ms_resnet.config import build_config
    from ms_resnet.cpu_isa import choose_cpu_isa
    from ms_resnet.ema import WeightAverage
    from ms_resnet.models import create_model
    from ms_resnet.optim import create_optimizer

    choose_cpu_isa()  # as every ms_resnet entry point, before the first kernel
    name, channels, size = parse_input_spec(spec)
    config = build_config(ROOT / "configs" / "mnist.yaml", {"model": name})
    net = create_model(name, num_classes=10, in_channels=channels, image_size=size)
    loss = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), create_optimizer(net, config, 1000))
    rng = np.random.default_rng(0)
    images = ms.Tensor(rng.standard_normal((args.batch_size, channels, size, size), np.float32))
    labels = ms.Tensor(rng.integers(0, 10, args.batch_size).astype(np.int32))
    averager = WeightAverage(net, create_model(name, num_classes=10, in_channels=channels,
                                               image_size=size), 0.999)
    train_ms = median_ms(lambda: step(images, labels).asnumpy(), args.warmup, args.calls,
                         args.reps)
    # The update's result is fetched so that its asynchronous work is inside the clock.
    update_ms = median_ms(lambda: averager.update()[0].asnumpy(), args.warmup, args.calls,
                          args.reps)
    return train_ms, update_ms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["fast_resnet14:1x28"],
                        metavar="MODEL:CxS", help="model and input, e.g. resnet20:3x32")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5, help="timed blocks per figure")
    parser.add_argument("--calls", type=int, default=20, help="calls per timed block")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    warn_if_busy()
    print(f"# {cpu_name()}, MindSpore {ms.__version__}, batch {args.batch_size}, median of "
          f"{args.reps} x {args.calls} calls")
    print("| model | train step (ms) | EMA update (ms) | update / step |")
    print("| --- | --- | --- | --- |")
    for spec in args.models:
        train_ms, update_ms = measure(spec, args)
        print(f"| {spec} | {train_ms:.1f} | {update_ms:.1f} | {update_ms / train_ms:.1%} |",
              flush=True)


if __name__ == "__main__":
    main()
