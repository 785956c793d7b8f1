"""Training callbacks: progress bar, per-epoch evaluation, best checkpoint and metrics.json."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import mindspore as ms
import numpy as np
from mindspore.train import Callback, Loss
from tqdm import tqdm

from ms_resnet.errors import UserError


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite."""


class MeanLoss(Loss):
    """Average loss per image (mindspore's `Loss` averages per batch, which over-weights a short
    last batch). Expects the per-image losses of each batch."""

    def update(self, *inputs) -> None:
        losses = self._convert_data(inputs[0]).reshape(-1)
        self._sum_loss += float(losses.sum())
        self._total_num += losses.size


def write_json_atomic(data: dict, path: Path) -> None:
    """Write JSON via a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def save_checkpoint_atomic(net: ms.nn.Cell, path: Path, extra: dict | None = None) -> None:
    """Save a checkpoint via a temporary file and a rename, so a crash never leaves half a file."""
    tmp = path.with_name(f".{path.stem}-tmp.ckpt")
    ms.save_checkpoint(net, str(tmp), append_dict=extra)
    os.replace(tmp, path)


class ProgressBar(Callback):
    """A tqdm bar per epoch with the running loss and images/s; collects the epoch's mean loss.

    Stops training with `TrainingDiverged` as soon as the loss stops being finite.
    """

    def __init__(self, batch_size: int, epochs: int, enabled: bool = True) -> None:
        super().__init__()
        self.batch_size, self.epochs, self.enabled = batch_size, epochs, enabled
        self.bar: tqdm | None = None
        self.loss_sum, self.steps, self.start = 0.0, 0, 0.0
        self.epoch_loss, self.epoch_seconds = math.nan, math.nan

    def on_train_epoch_begin(self, run_context) -> None:
        params = run_context.original_args()
        self.loss_sum, self.steps, self.start = 0.0, 0, time.perf_counter()
        self.bar = tqdm(total=params.batch_num, file=sys.stderr, leave=True, dynamic_ncols=True,
                        desc=f"epoch {params.cur_epoch_num}/{self.epochs}", unit="step",
                        disable=not self.enabled, mininterval=1.0)

    def on_train_step_end(self, run_context) -> None:
        params = run_context.original_args()
        loss = float(np.asarray(params.net_outputs.asnumpy()).reshape(-1)[0])
        if not math.isfinite(loss):
            self.bar.close()
            step = (params.cur_step_num - 1) % params.batch_num + 1
            raise TrainingDiverged(f"training loss became {loss} at epoch {params.cur_epoch_num}, "
                                   f"step {step}; checkpoints already saved are untouched "
                                   "(try a lower --lr)")
        self.loss_sum += loss
        self.steps += 1
        rate = self.steps * self.batch_size / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"loss {self.loss_sum / self.steps:.4f}, {rate:.0f} img/s",
                                 refresh=False)
        self.bar.update(1)

    def on_train_epoch_end(self, run_context) -> None:
        self.epoch_seconds = time.perf_counter() - self.start
        self.epoch_loss = self.loss_sum / max(self.steps, 1)
        self.bar.close()


class EvalCheckpoint(Callback):
    """After each epoch: evaluate, print the tutorial's test line, keep the best checkpoint and
    record the epoch in metrics.json."""

    def __init__(self, net: ms.nn.Cell, evaluate: Callable[[], dict], progress: ProgressBar,
                 ckpt_dir: Path, epochs: int, header: dict, save: bool = True) -> None:
        super().__init__()
        self.net, self.evaluate, self.progress = net, evaluate, progress
        self.ckpt_dir, self.epochs, self.save = Path(ckpt_dir), epochs, save
        self.metrics = dict(header, best_accuracy=None, best_epoch=None, epochs=[])

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / "best.ckpt"

    def on_train_epoch_end(self, run_context) -> None:
        params = run_context.original_args()
        epoch = params.cur_epoch_num
        started = time.perf_counter()
        result = self.evaluate()
        eval_seconds = time.perf_counter() - started
        accuracy, loss = float(result["accuracy"]), float(result["loss"])
        train_images = params.batch_num * self.progress.batch_size
        record = {"epoch": epoch, "train_loss": self.progress.epoch_loss, "test_loss": loss,
                  "test_accuracy": accuracy, "seconds": self.progress.epoch_seconds,
                  "eval_seconds": eval_seconds,
                  "images_per_second": train_images / self.progress.epoch_seconds}
        best = self.metrics["best_accuracy"]
        improved = best is None or accuracy > best
        note = ""
        if improved:
            self.metrics.update(best_accuracy=accuracy, best_epoch=epoch)
            if self.save:
                save_checkpoint_atomic(self.net, self.best_path,
                                       {"epoch": epoch, "accuracy": accuracy})
                note = f" -> saved {self.best_path}"
        self.metrics["epochs"].append(record)
        if self.save:
            write_json_atomic(self.metrics, self.ckpt_dir / "metrics.json")
        print(f"epoch {epoch}/{self.epochs}: train loss {record['train_loss']:.4f} | "
              f"test loss {loss:.4f} | test accuracy {accuracy:.2%} "
              f"(best {self.metrics['best_accuracy']:.2%}){note} | "
              f"{record['seconds']:.1f} s, {record['images_per_second']:.0f} img/s", flush=True)
