#!/usr/bin/env python
"""What counting the training accuracy adds to a training step.

train.py's loss is `CountingLoss(CrossEntropyLoss)`: besides the loss it runs argmax, equal,
sum and two assign_add on the batch's logits. This times both loss Cells alone, compiled in
graph mode, on a batch of logits (--batch, 10 classes): the best of --reps rounds of --calls
calls each, and prints the difference per call, the cost that counting adds to every step.
Compare it with a training step's time (e.g. resnet20 at batch 64 on 2 cores: ~0.45 s).

    python benchmarks/train_accuracy_overhead.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def time_call(cell, *inputs, calls: int, reps: int) -> float:
    for _ in range(20):  # compile and warm up
        cell(*inputs).asnumpy()
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        for _ in range(calls):
            out = cell(*inputs)
        out.asnumpy()
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)

    import mindspore as ms
    import numpy as np
    from mindspore import nn

    from ms_resnet.train_accuracy import CountingLoss

    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(0)
    for batch in args.batch:
        logits = ms.Tensor(rng.standard_normal((batch, 10)).astype(np.float32))
        label = ms.Tensor(rng.integers(0, 10, batch).astype(np.int32))
        plain = time_call(nn.CrossEntropyLoss(), logits, label, calls=args.calls, reps=args.reps)
        counting = time_call(CountingLoss(nn.CrossEntropyLoss()), logits, label,
                             calls=args.calls, reps=args.reps)
        print(f"batch {batch}: loss {1e6 * plain:.0f} us/call, counting loss "
              f"{1e6 * counting:.0f} us/call: counting adds {1e6 * (counting - plain):.0f} us")


if __name__ == "__main__":
    main()
