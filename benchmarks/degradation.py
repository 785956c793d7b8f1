#!/usr/bin/env python
"""The degradation problem (He et al. 2016, Fig. 1 and 6), reproduced on real Fashion-MNIST.

Trains a plain and a residual network at each depth (default: plain20, plain56, resnet20,
resnet56) with one recipe, then draws the paper's figure from the runs' metrics.json:
training error solid, test error dashed, plain networks left, residual networks right.

A plain network is the residual one without its shortcuts (`--shortcut none`): the same cells
and the same parameters (the residual networks use option A, zero-padding shortcuts, which
have none). The recipe is the paper's CIFAR recipe scaled down to fit a 2-core CPU: SGD
momentum 0.9, lr 0.025 (the paper's 0.1 at batch 128, scaled to batch 32) divided by 10 at 50%
and 75% of training, weight decay 1e-4, batch 32, no augmentation (so the training error
measures how well the network fits), on the first --num_samples training images; the test
error is measured on the first --eval_num_samples test images after every epoch.

Each run is `train.py` with the recipe as overrides, in this process. Checkpoints stay in
--work_dir/<run>; metrics.json, config.yaml and the log (train.log, the printed lines) are
copied to --out/<run>/. Runs are resumable: a run with a last.ckpt in its work folder continues
from it (`train.py --resume`), a finished one is skipped, so the same command continues a
job that was cut off. --report rebuilds the table and the figure from --out without training.

    MS_RESNET_DATA=../shared/datasets python benchmarks/degradation.py      # the four runs
    python benchmarks/degradation.py --report                              # table + figure
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere: ms_resnet and train.py from this checkout

DEPTHS = (20, 32, 44, 56, 110)  # the CIFAR ResNets of the paper (resnet20 ... resnet110)
DEFAULT_OUT = ROOT / "results" / "degradation"
DEFAULT_WORK = ROOT / "ckpt" / "degradation"
FIGURE = ROOT / "docs" / "images" / "degradation.png"
BASE_CONFIG = ROOT / "configs" / "fashion_mnist.yaml"
KINDS = {"plain": "none", "resnet": "A"}  # run name prefix -> shortcut
# The recipe, as train.py overrides of configs/fashion_mnist.yaml (every key it changes).
RECIPE = {"dataset": "fashion_mnist", "augment": "false", "random_erasing": "0",
          "eval_flip": "false", "label_smoothing": "0", "optimizer": "momentum",
          "momentum": "0.9", "nesterov": "false", "weight_decay": "0.0001",
          "lr_schedule": "multistep", "warmup_epochs": "0", "ema_decay": "0",
          "zero_init_residual": "false", "export_mindir": "false", "eval_batch_size": "500"}


def run_names(depths: list[int]) -> list[str]:
    return [f"{kind}{depth}" for kind in KINDS for depth in depths]


def split_run(run: str) -> tuple[str, int]:
    """"plain56" -> ("plain", 56)."""
    kind = run.rstrip("0123456789")
    return kind, int(run[len(kind):])


def recipe(run: str, args: argparse.Namespace, ckpt_dir: Path) -> dict[str, str]:
    """The config keys that `run` (e.g. plain56) overrides in configs/fashion_mnist.yaml."""
    kind, depth = split_run(run)
    overrides = {**RECIPE, "model": f"resnet{depth}", "shortcut": KINDS[kind],
                 "lr": str(args.lr), "batch_size": str(args.batch_size),
                 "epochs": str(args.epochs), "num_samples": str(args.num_samples),
                 "eval_num_samples": str(args.eval_num_samples), "seed": str(args.seed),
                 "ckpt_dir": str(ckpt_dir)}
    if args.data_dir:
        overrides["data_dir"] = str(args.data_dir)
    return overrides


def train_arguments(run: str, args: argparse.Namespace, ckpt_dir: Path) -> list[str]:
    """The train.py command line of `run`."""
    argv = ["--config", str(BASE_CONFIG)]
    for key, value in recipe(run, args, ckpt_dir).items():
        argv += [f"--{key}", value]
    return argv


class _Tee:
    """Writes to the console and to a log file."""

    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def train_run(run: str, args: argparse.Namespace) -> float:
    """Train (or continue, or skip) one run; copy its record to --out. Returns its seconds."""
    from ms_resnet.train import main as train_main

    work = args.work_dir / run
    argv = train_arguments(run, args, work)
    # A last.ckpt means the run was started: continue it (train.py refuses a changed recipe).
    resume = (work / "last.ckpt").is_file()
    argv += ["--resume"] if resume else ["--overwrite"]
    work.mkdir(parents=True, exist_ok=True)
    print(f"== {run}: python train.py {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    with open(work / "train.log", "a" if resume else "w", encoding="utf-8") as log, \
            contextlib.redirect_stdout(_Tee(sys.stdout, log)):
        train_main(argv)
    seconds = time.perf_counter() - started
    out = args.out / run
    out.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.json", "config.yaml", "train.log"):
        shutil.copy2(work / name, out / name)
    return seconds


def load_runs(out: Path, runs: list[str]) -> dict[str, dict]:
    found = {}
    for run in runs:
        path = out / run / "metrics.json"
        if path.is_file():
            found[run] = json.loads(path.read_text(encoding="utf-8"))
    return found


def final_errors(metrics: dict) -> tuple[float, float]:
    """(training error, test error) of the last epoch, in %."""
    last = metrics["epochs"][-1]
    return 100 * (1 - last["train_accuracy"]), 100 * (1 - last["test_accuracy"])


def table(runs: dict[str, dict]) -> str:
    """Markdown table of the runs' final errors and training time."""
    lines = [("| run | network | epochs | final training error | final test error "
              "| best test error | training time |"),
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for run, metrics in runs.items():
        train_error, test_error = final_errors(metrics)
        config = metrics["config"]
        shortcut = "no shortcuts" if config["shortcut"] == "none" else \
            f"shortcut {config['shortcut']}"
        seconds = sum(epoch["seconds"] for epoch in metrics["epochs"])
        lines.append(f"| {run} | {config['model']}, {shortcut} | {len(metrics['epochs'])} "
                     f"| {train_error:.2f}% | {test_error:.2f}% "
                     f"| {100 * (1 - metrics['best_accuracy']):.2f}% | {seconds:,.0f} s |")
    return "\n".join(lines)


def verdict(runs: dict[str, dict]) -> list[str]:
    """The degradation checks that the runs allow: for each pair of depths, is the deeper plain
    network's final training error higher, and the deeper residual one's no higher?"""
    lines = []
    depths = sorted({split_run(run)[1] for run in runs})
    for kind, deeper_worse in (("plain", True), ("resnet", False)):
        present = [d for d in depths if f"{kind}{d}" in runs]
        for shallow, deep in zip(present, present[1:]):
            a = final_errors(runs[f"{kind}{shallow}"])[0]
            b = final_errors(runs[f"{kind}{deep}"])[0]
            ok = b > a if deeper_worse else b <= a
            relation = ">" if b > a else ("=" if b == a else "<")
            lines.append(f"{'yes' if ok else 'NO '}: {kind}{deep} training error {b:.2f}% "
                         f"{relation} {kind}{shallow} {a:.2f}%")
    return lines


def _gradients(loss, weights):  # a Cell class built after the lazy MindSpore import
    from mindspore import ParameterTuple, nn, ops

    class Gradients(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.loss, self.weights = loss, ParameterTuple(weights)
            self.grad = ops.GradOperation(get_by_list=True)

        def construct(self, image, label):
            return self.grad(self.loss, self.weights)(image, label)

    return Gradients()


def gradient_norms(depth: int, args: argparse.Namespace) -> dict[str, list[float]]:
    """Per-layer gradient norms at initialisation, {run: [norm of each conv weight's gradient,
    input side first]}, of the plain and the residual network of `depth`: the loss of one
    batch (--batch_size training images), with the seed and init the runs start from."""
    import numpy as np
    from mindspore import nn

    from ms_resnet.config import build_config
    from ms_resnet.data.pipeline import create_dataset
    from ms_resnet.network import build_network
    from ms_resnet.runtime import set_up_context

    norms = {}
    for kind in KINDS:
        config = build_config(BASE_CONFIG, recipe(f"{kind}{depth}", args, args.work_dir))
        set_up_context(config)
        net = build_network(config)
        data = create_dataset(config.dataset, "train", config.batch_size, data_dir=config.data_dir,
                              augment=False, num_samples=config.num_samples)
        image, label = next(data.create_tuple_iterator())
        loss = nn.WithLossCell(net, nn.CrossEntropyLoss())
        # Training mode, as in the runs: BN normalises by the batch's statistics. A Cell starts
        # in inference mode, where BN would use its initial running statistics (mean 0, var 1)
        # and the residual stream's scale would grow unnormalised through the depth.
        loss.set_train(True)
        weights = [p for p in net.trainable_params() if p.ndim == 4]  # the convolutions
        # A compiled Cell: MindSpore 2.10's PyNative StridedSliceGrad (option A's subsampling)
        # fails on CPU.
        grads = _gradients(loss, weights)(image, label)
        norms[f"{kind}{depth}"] = [float(np.linalg.norm(g.asnumpy())) for g in grads]
    return norms


def report(out: Path, runs: list[str], figure: Path) -> int:
    from ms_resnet.plots import save_error_curves

    found = load_runs(out, runs)
    if not found:
        print(f"error: no metrics.json under {out} for {', '.join(runs)}", file=sys.stderr)
        return 2
    print(table(found))
    checks = verdict(found)
    print("\n".join(checks))
    panels = {title: {run: found[run] for run in runs if run.startswith(kind) and run in found}
              for kind, title in (("plain", "plain networks"), ("resnet", "residual networks"))}
    print(f"figure: {save_error_curves(panels, figure)}")
    return 0 if all(line.startswith("yes") for line in checks) else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Exit code: 0 if every deeper plain network ends with a higher training error "
               "and every deeper residual network with no higher one, 1 if not, 2 on an error.")
    parser.add_argument("--depths", default="20,56",
                        help=f"comma-separated depths, a plain and a residual run each; one of "
                             f"{', '.join(map(str, DEPTHS))}")
    parser.add_argument("--runs", default=None,
                        help="comma-separated subset of the runs to train (e.g. plain56, to "
                             "train runs in separate processes); default: all. The table and "
                             "figure show every run of --depths found in --out")
    parser.add_argument("--num_samples", type=int, default=2000,
                        help="training images (the first N of the training split)")
    parser.add_argument("--eval_num_samples", type=int, default=1000,
                        help="test images (the first N of the test split)")
    parser.add_argument("--epochs", type=int, default=32,
                        help="epochs per run (32 x 62 steps: long enough for resnet56 to fit as "
                             "well as resnet20; 4 show the plain networks' gap in 1/8 of the "
                             "steps)")
    parser.add_argument("--lr", type=float, default=0.025,
                        help="lr before the two /10 steps (the paper's 0.1 at batch 128, "
                             "scaled linearly)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data_dir", type=Path, default=None,
                        help="folder with the Fashion-MNIST files (default: "
                             "$MS_RESNET_DATA/fashion_mnist, else ./data/fashion_mnist)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="where each run's metrics.json, config.yaml and train.log go")
    parser.add_argument("--work_dir", type=Path, default=DEFAULT_WORK,
                        help="where each run's checkpoints go (kept for --resume)")
    parser.add_argument("--figure", type=Path, default=FIGURE, help="the PNG to write")
    parser.add_argument("--grad_norms", type=int, default=None, metavar="DEPTH",
                        help="only compute the per-layer gradient norms at initialisation of "
                             "the plain and residual network of DEPTH, print them and save "
                             "them to --out/grad_norms_DEPTH.json and a figure beside --figure")
    parser.add_argument("--report", action="store_true",
                        help="only rebuild the table and the figure from --out")
    args = parser.parse_args(argv)
    try:
        depths = sorted({int(d) for d in args.depths.split(",")})
    except ValueError:
        depths = []
    if not depths or not set(depths) <= set(DEPTHS):
        parser.error(f"--depths: expected comma-separated values of "
                     f"{', '.join(map(str, DEPTHS))}, got {args.depths!r}")
    runs = run_names(depths)
    if args.grad_norms:
        if args.grad_norms not in DEPTHS:
            parser.error(f"--grad_norms: expected one of {', '.join(map(str, DEPTHS))}")
        from ms_resnet.plots import save_layer_norms

        norms = gradient_norms(args.grad_norms, args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"grad_norms_{args.grad_norms}.json").write_text(json.dumps(norms, indent=1))
        for run, values in norms.items():
            print(f"{run}: first conv {values[0]:.3g}, last conv {values[-1]:.3g}, "
                  f"first/last {values[0] / values[-1]:.3g}")
        path = args.figure.with_name(f"{args.figure.stem}_grad_norms.png")
        print(f"figure: {save_layer_norms(norms, path)}")
        sys.exit(0)
    if args.runs:
        chosen = args.runs.split(",")
        if not set(chosen) <= set(runs):
            parser.error(f"--runs: expected names of {', '.join(runs)}, got {args.runs!r}")
        runs = [run for run in runs if run in chosen]
    if not args.report:
        from ms_resnet.errors import TrainingInterrupted, UserError

        started = time.perf_counter()
        for run in runs:
            try:
                seconds = train_run(run, args)
            except UserError as exc:
                print(f"error: {run}: {exc}", file=sys.stderr)
                sys.exit(2)
            except TrainingInterrupted as exc:
                print(f"{run}: {exc}; run this command again to continue", file=sys.stderr)
                sys.exit(130)
            print(f"== {run}: {seconds:.0f} s", flush=True)
        print(f"all runs: {time.perf_counter() - started:.0f} s wall time", flush=True)
    # The table and figure cover every run of --depths found in --out, also those that another
    # process (another --runs) trained.
    sys.exit(report(args.out, run_names(depths), args.figure))


if __name__ == "__main__":
    main()
