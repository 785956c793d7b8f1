"""Training callbacks: progress bar, per-epoch evaluation, best and last checkpoints,
metrics.json, and a clean stop on Ctrl-C / SIGTERM."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import mindspore as ms
import numpy as np
from mindspore import log as ms_log
from mindspore.train import Callback, Metric
from tqdm import tqdm

from ms_resnet.errors import TrainingDiverged, TrainingInterrupted
from ms_resnet.files import NewFile, write_files
from ms_resnet.train_accuracy import CountingLoss, accuracy_of


class EvalTotals(Metric):
    """Correct predictions, summed per-image loss and number of images of an evaluation. Totals,
    not means: under data parallelism the totals of the ranks' shards add up to those of the
    whole test set. Expects (per-image losses, logits, labels) batches."""

    def clear(self) -> None:
        self.totals = np.zeros(3, np.float64)

    def update(self, *inputs) -> None:
        losses, logits, labels = (self._convert_data(x) for x in inputs)
        labels = labels.reshape(-1)
        self.totals += (float((logits.argmax(axis=1) == labels).sum()),
                        float(losses.astype(np.float64).sum()), labels.size)

    def eval(self) -> np.ndarray:
        return self.totals.copy()


# What ms.save_checkpoint saves: a Cell, a list of Parameters, or a list of
# {"name": ..., "data": Parameter} entries (to save under other names).
Saveable = ms.nn.Cell | list


def _entries(saveable: Saveable) -> list:
    if isinstance(saveable, ms.nn.Cell):
        return list(saveable.get_parameters())
    return [e["data"] if isinstance(e, dict) else e for e in saveable]


def checkpoint_file(saveable: Saveable, path: Path, extra: dict | None = None) -> NewFile:
    """`saveable` as a checkpoint file for `write_files`, with its size for the space check."""
    size = sum(entry.nbytes for entry in _entries(saveable)) + 1024 * (1 + len(extra or {}))

    def write(tmp: Path) -> None:
        # A failed save makes MindSpore log a [CRITICAL] line of its own; write_files says
        # what failed and what was kept, in one line.
        logger = ms_log._get_logger()  # pylint: disable=protected-access
        logger.disabled = True
        try:
            ms.save_checkpoint(saveable, str(tmp), append_dict=extra)
        finally:
            logger.disabled = False

    return NewFile(path, write, size)


def json_file(data: dict, path: Path) -> NewFile:
    return NewFile(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2),
                                                    encoding="utf-8"))


def snapshot(saveable: Saveable) -> list[dict]:
    """A copy of what `saveable` holds now, under the names save_checkpoint gives it."""
    if isinstance(saveable, ms.nn.Cell):
        saveable = list(saveable.get_parameters())
    entries = [e if isinstance(e, dict) else {"name": e.name, "data": e} for e in saveable]
    return [{"name": e["name"], "data": ms.Tensor(e["data"].asnumpy().copy())} for e in entries]


class FileWriter:
    """Runs file writes in order: inline, or (under data parallelism) in one background thread.

    The other ranks do not wait for rank 0's files: they go on to the next step's gradient
    all-reduce, which fails after the collective timeout (30 s on CPU) if rank 0 is not there
    by then. Writing in the background, rank 0 joins that all-reduce at once, however slow the
    disk. A failed write is raised at the next `submit` or at `wait`.
    """

    def __init__(self, background: bool) -> None:
        self._pool = ThreadPoolExecutor(1, "ms_resnet-writer") if background else None
        self._pending: list[Future] = []

    @property
    def background(self) -> bool:
        return self._pool is not None

    def submit(self, write: Callable[[], None]) -> None:
        for future in [f for f in self._pending if f.done()]:
            self._pending.remove(future)
            future.result()
        if self._pool is None:
            write()
        else:
            self._pending.append(self._pool.submit(write))

    def wait(self) -> None:
        """Until every write submitted so far is done; raises the first that failed."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()


class StopSignal:
    """Turns the first Ctrl-C / SIGTERM into a request to stop after the current step; a second
    Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        # Named generically: MindSpore's runtime may turn a Ctrl-C into SIGTERM.
        self.requested = "interrupted (Ctrl-C / SIGTERM)"
        print("\ninterrupted: stopping after this step (press Ctrl-C again to abort at once)",
              file=sys.stderr, flush=True)

    def __enter__(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class ProgressBar(Callback):
    """A tqdm bar per epoch with the running loss and images/s; collects the epoch's mean loss
    and, from `counter` (the training loss's counts), its training accuracy.

    Stops training with `TrainingDiverged` as soon as the loss stops being finite.
    A resumed epoch starts at `first_step` with `first_loss_sum`, the loss summed over its
    steps before the interruption, so its mean loss is the one an uninterrupted run records
    (its counts come back with the counter's Parameters from last.ckpt;
    `first_counts_known=False` says they did not, and its training accuracy is NaN).
    """

    def __init__(self, batch_size: int, epochs: int, first_step: int = 0,
                 first_loss_sum: float = 0.0, enabled: bool = True,
                 counter: CountingLoss | None = None, first_counts_known: bool = True) -> None:
        super().__init__()
        self.batch_size, self.epochs, self.enabled = batch_size, epochs, enabled
        self.first_step, self.first_loss_sum = first_step, first_loss_sum
        self.counter, self.counts_known = counter, first_counts_known
        self.bar: tqdm | None = None
        self.loss_sum, self.steps, self.start, self.epoch = 0.0, 0, 0.0, 0
        self.epoch_loss, self.epoch_seconds = math.nan, math.nan
        self._last_step_num = 0
        self.epoch_accuracy = math.nan

    @property
    def step_in_epoch(self) -> int:
        return self.first_step + self.steps

    def on_train_epoch_begin(self, run_context) -> None:
        params = run_context.original_args()
        self.epoch = params.cur_epoch_num
        self.loss_sum, self.steps, self.start = self.first_loss_sum, 0, time.perf_counter()
        self._last_step_num = params.cur_step_num
        self.bar = tqdm(total=params.batch_num, initial=self.first_step, file=sys.stderr,
                        desc=f"epoch {params.cur_epoch_num}/{self.epochs}", unit="step",
                        dynamic_ncols=True, disable=not self.enabled, mininterval=1.0)

    def on_train_step_end(self, run_context) -> None:
        params = run_context.original_args()
        outputs = params.net_outputs
        if isinstance(outputs, (tuple, list)):  # (loss, overflow, scale) under a dynamic scale
            outputs = outputs[0]
        loss = float(np.asarray(outputs.asnumpy()).reshape(-1)[0])
        if not math.isfinite(loss):
            self.bar.close()
            raise TrainingDiverged(f"training loss became {loss} at epoch {params.cur_epoch_num},"
                                   f" step {self.step_in_epoch + 1}; checkpoints already saved "
                                   "are untouched (try a lower --lr)")
        # Under dataset sink mode on a device one call covers a whole sink (cur_step_num
        # advances by its steps) and reports the loss of its last step.
        advanced = max(params.cur_step_num - self._last_step_num, 1)
        self._last_step_num = params.cur_step_num
        self.loss_sum += loss * advanced
        self.steps += advanced
        rate = self.steps * self.batch_size / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"loss {self.loss_sum / self.step_in_epoch:.4f}, "
                                 f"{rate:.0f} img/s",
                                 refresh=False)
        self.bar.update(advanced)

    def on_train_epoch_end(self, run_context) -> None:
        self.epoch_seconds = time.perf_counter() - self.start
        self.epoch_loss = self.loss_sum / max(self.step_in_epoch, 1)
        if self.counter is not None:
            # Taken (and zeroed) here, before EvalCheckpoint saves last.ckpt for the next epoch.
            counts = self.counter.take()
            self.epoch_accuracy = accuracy_of(counts) if self.counts_known else math.nan
        self.first_step, self.first_loss_sum, self.counts_known = 0, 0.0, True
        self.bar.close()


class EvalCheckpoint(Callback):
    """After each epoch: evaluate, print the tutorial's test line, keep best.ckpt (network only)
    and last.ckpt (network + optimizer + position, for --resume), and record metrics.json.

    `network` is what best.ckpt holds (the evaluated weights), `training_state` what last.ckpt
    holds besides the position. `evaluate` returns the accuracy, mean loss and number of images
    of the whole test set. On a stop signal it saves last.ckpt at the current step and raises
    `TrainingInterrupted`.

    Under data parallelism every rank calls `evaluate` (each evaluates its shard of the test set,
    then the totals are all-reduced), so no rank waits in a collective while another evaluates;
    only the main rank (`is_main`) prints and writes files, in the background (`FileWriter`).
    """

    def __init__(self, network: Saveable, training_state: Saveable,
                 evaluate: Callable[[], dict], progress: ProgressBar, ckpt_dir: Path,
                 epochs: int, metrics: dict, stop: StopSignal, resume_hint: str,
                 before_first_save: Callable[[], None] = lambda: None,
                 is_main: bool = True, workers: int = 1) -> None:
        super().__init__()
        self.is_main, self.workers = is_main, workers
        self.network, self.training_state, self.evaluate = network, training_state, evaluate
        self.progress, self.ckpt_dir, self.epochs = progress, Path(ckpt_dir), epochs
        self.metrics, self.stop, self.resume_hint = metrics, stop, resume_hint
        self.before_first_save = before_first_save
        self.writer = FileWriter(background=workers > 1)
        self.evaluating = False
        # Test hook (tests/test_distributed.py): the first evaluation on every rank, and the
        # main rank's first checkpoint write, take this many seconds longer (e.g. longer than
        # the collective timeout).
        self._eval_delay = self._write_delay = float(os.environ.get("MS_RESNET_TEST_DELAY") or 0)

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / "best.ckpt"

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / "last.ckpt"

    def _write(self, files: list[tuple[Saveable | dict, Path, dict | None]],
               context: str) -> None:
        """Write checkpoints ((saveable, path, extra)) and JSON files ((data, path, None)) all
        or nothing (ms_resnet.files)."""
        self.before_first_save()
        # Written in the background, the weights are copied now: training goes on changing them.
        new = [json_file(data, path) if isinstance(data, dict) else
               checkpoint_file(snapshot(data) if self.writer.background else data, path, extra)
               for data, path, extra in files]
        delay, self._write_delay = self._write_delay, 0.0

        def write() -> None:
            time.sleep(delay)
            write_files(new, context)

        self.writer.submit(write)

    def _last(self, epochs_done: int, step: int, loss_sum: float = 0.0) -> tuple:
        return (self.training_state, self.last_path, {
            "epoch": epochs_done, "step": step, "loss_sum": ms.Tensor(loss_sum, ms.float64),
            "best_accuracy": self.metrics["best_accuracy"] or -1.0,
            "best_epoch": self.metrics["best_epoch"] or 0, "workers": self.workers})

    def finish(self) -> None:
        """Wait until every checkpoint and metrics.json submitted so far is written."""
        self.writer.wait()

    def on_train_step_end(self, run_context) -> None:
        if not self.stop.requested:
            return
        params = run_context.original_args()
        epoch, step = params.cur_epoch_num, self.progress.step_in_epoch
        self.progress.bar.close()
        if step >= params.batch_num:  # the epoch is complete: let on_train_epoch_end finish it
            run_context.request_stop()
            return
        if self.is_main:
            self._write([self._last(epoch - 1, step, self.progress.loss_sum)],
                        f"the interrupted epoch {epoch}'s")
            self.finish()
        raise TrainingInterrupted(f"{self.stop.requested}: stopped at epoch {epoch}, step {step}"
                                  f"; {self.last_path} saved. Resume with: {self.resume_hint}")

    def _evaluate(self) -> tuple[dict, float]:
        started = time.perf_counter()
        self.evaluating = True
        time.sleep(self._eval_delay)
        self._eval_delay = 0.0
        result = self.evaluate()
        self.evaluating = False
        return result, time.perf_counter() - started

    def on_train_epoch_end(self, run_context) -> None:
        params = run_context.original_args()
        epoch = params.cur_epoch_num
        result, eval_seconds = self._evaluate()
        if not self.is_main:
            if self.stop.requested:
                raise TrainingInterrupted(f"{self.stop.requested}: stopped after epoch {epoch}")
            return
        accuracy, loss = float(result["accuracy"]), float(result["loss"])
        images = self.progress.steps * self.progress.batch_size
        record = {"epoch": epoch, "train_loss": self.progress.epoch_loss,
                  "train_accuracy": self.progress.epoch_accuracy, "test_loss": loss,
                  "test_accuracy": accuracy, "test_images": int(result["images"]),
                  "seconds": self.progress.epoch_seconds, "eval_seconds": eval_seconds,
                  "images_per_second": images / self.progress.epoch_seconds}
        best = self.metrics["best_accuracy"]
        note, files = "", []
        if best is None or accuracy > best:
            self.metrics.update(best_accuracy=accuracy, best_epoch=epoch)
            files.append((self.network, self.best_path, {"epoch": epoch, "accuracy": accuracy}))
            note = f" -> saved {self.best_path}"
        self.metrics["epochs"].append(record)
        # The epoch's files are replaced together or not at all: best.ckpt, metrics.json and
        # last.ckpt always describe the same epoch.
        files += [self._last(epoch, 0),
                  (copy.deepcopy(self.metrics), self.ckpt_dir / "metrics.json", None)]
        self._write(files, f"epoch {epoch}'s")
        print(f"epoch {epoch}/{self.epochs}: train loss {record['train_loss']:.4f}, "
              f"accuracy {record['train_accuracy']:.2%} | "
              f"test loss {loss:.4f} | test accuracy {accuracy:.2%} "
              f"(best {self.metrics['best_accuracy']:.2%}){note} | "
              f"{record['seconds']:.1f} s, {record['images_per_second']:.0f} img/s", flush=True)
        if self.stop.requested:
            self.finish()
            raise TrainingInterrupted(f"{self.stop.requested}: stopped after epoch {epoch}; "
                                      f"{self.last_path} saved. Resume with: {self.resume_hint}")
