#!/usr/bin/env python
"""Wall time to reach 98.5 / 99.0 / 99.3 / 99.5 % MNIST test accuracy, three ways.

    tutorial_torch  the PyTorch tutorial's recipe, reproduced in PyTorch: its network
                    (benchmarks/torch_models.py tutorial_resnet, PyTorch's default init),
                    Adam lr 1e-3, batch 32, ToTensor only (pixels / 255), shuffled, 4 epochs
    tutorial_ms     the same recipe on ms_resnet: train.py --config configs/mnist_tutorial.yaml
    default         ms_resnet's default MNIST config: train.py --config configs/mnist.yaml

Every run trains on the full real MNIST training split and evaluates the full test split after
each epoch. The MNIST folder is found as train.py finds it: --data_dir, else
$MS_RESNET_DATA/mnist, else ./data/mnist. The clock counts training only; evaluation time is
reported beside it. Each run writes a metrics.json (the same format train.py writes) to
OUT/<run>/, and the report - the table and docs/images/time_to_accuracy.png - is built from
those files only, so every figure is traceable to a committed file.

A run stopped early with --epochs (e.g. the slow tutorial recipes) is extrapolated: its
remaining epochs are costed at the median measured epoch time, and the table marks those
figures with "~" and "(extrapolated)".

    MS_RESNET_DATA=../shared/datasets python benchmarks/time_to_accuracy.py  # all three, in full
    python benchmarks/time_to_accuracy.py --data_dir ~/mnist --runs tutorial_torch --epochs 1
    python benchmarks/time_to_accuracy.py --report                 # table + plot from OUT
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from specs import cpu_name, find_mnist, warn_if_busy

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("tutorial_torch", "tutorial_ms", "default")
CONFIGS = {"tutorial_ms": ROOT / "configs" / "mnist_tutorial.yaml",
           "default": ROOT / "configs" / "mnist.yaml"}
LABELS = {"tutorial_torch": "tutorial recipe, PyTorch", "tutorial_ms": "tutorial recipe, ms_resnet",
          "default": "ms_resnet default (configs/mnist.yaml)"}
THRESHOLDS = (0.985, 0.99, 0.993, 0.995)
TUTORIAL_EPOCHS = 4
DEFAULT_OUT = ROOT / "results" / "time_to_accuracy"
PLOT = ROOT / "docs" / "images" / "time_to_accuracy.png"


# ---------------------------------------------------------------- tutorial recipe in PyTorch

def read_idx(path: Path):
    import numpy as np

    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist(data_dir: Path, split: str):
    import torch

    prefix = "train" if split == "train" else "t10k"
    found = {}
    for kind, dims in (("images", "idx3"), ("labels", "idx1")):
        name = f"{prefix}-{kind}-{dims}-ubyte"
        candidates = [data_dir / name, data_dir / f"{name}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise SystemExit(f"error: {candidates[0]}(.gz) not found; pass --data_dir "
                             "or set MS_RESNET_DATA")
        found[kind] = read_idx(path)
    images = torch.from_numpy(found["images"].copy()).float().div_(255.0).unsqueeze(1)
    return images, torch.from_numpy(found["labels"].astype("int64"))


def metrics_header(recipe: dict, params: int, threads: int) -> dict:
    """The start of a PyTorch run's metrics.json, in train.py's format."""
    import torch

    return {"config": recipe, "framework": f"pytorch {torch.__version__}", "threads": threads,
            "params": params, "machine": machine(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "best_accuracy": None,
            "best_epoch": None, "epochs": []}


def evaluate_torch(model, test_x, test_y, flip: bool = False) -> tuple[float, float, float]:
    """(accuracy, mean loss, seconds) on the whole test set; flip: mean of the mirrored logits."""
    import torch

    started, correct, loss = time.perf_counter(), 0, 0.0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(test_x), 500):
            x, y = test_x[i:i + 500], test_y[i:i + 500]
            logits = model(x)
            if flip:
                logits = (logits + model(torch.flip(x, (3,)))) / 2
            loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    return correct / len(test_x), loss / len(test_x), time.perf_counter() - started


def record_epoch(metrics: dict, out_dir: Path, epoch: int, epochs: int, train_loss: float,
                 seconds: float, evaluation: tuple[float, float, float], images: int) -> None:
    """Add an epoch to `metrics` and rewrite OUT_DIR/metrics.json."""
    accuracy, test_loss, eval_seconds = evaluation
    metrics["epochs"].append({"epoch": epoch, "train_loss": train_loss, "test_loss": test_loss,
                              "test_accuracy": accuracy, "seconds": seconds,
                              "eval_seconds": eval_seconds, "images_per_second": images / seconds})
    if metrics["best_accuracy"] is None or accuracy > metrics["best_accuracy"]:
        metrics.update(best_accuracy=accuracy, best_epoch=epoch)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"epoch {epoch}/{epochs}: train loss {train_loss:.4f} | test accuracy {accuracy:.2%} | "
          f"{seconds:.1f} s", flush=True)


def train_tutorial_torch(out_dir: Path, train: tuple, test: tuple, planned: int, epochs: int,
                         threads: int, seed: int = 42, load_seconds: float = 0.0) -> None:
    """The tutorial's loop: its network with PyTorch's default init, Adam 1e-3, batch 32, the
    images as given (ToTensor only), shuffled; evaluated after each epoch with the clock stopped.
    `train` and `test` are (images N x C x H x W in 0..1, labels); `load_seconds`, the time to
    read the training images, is counted in the first epoch."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from torch_models import count_params, create_torch_model

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    train_x, train_y = train
    model = create_torch_model("tutorial_resnet", int(train_y.max()) + 1, train_x.shape[1],
                               train_x.shape[2])
    for module in model.modules():  # the tutorial keeps PyTorch's default initialisation
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.reset_parameters()
    loader = DataLoader(TensorDataset(train_x, train_y), batch_size=32, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    metrics = metrics_header({"recipe": "tutorial", "model": "tutorial_resnet",
                              "optimizer": "adam", "lr": 1e-3, "batch_size": 32,
                              "augment": False, "epochs": planned, "seed": seed},
                             count_params(model), threads)
    for epoch in range(1, epochs + 1):
        model.train()
        started, loss_sum, steps = time.perf_counter(), 0.0, 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            steps += 1
        seconds = time.perf_counter() - started + (load_seconds if epoch == 1 else 0.0)
        record_epoch(metrics, out_dir, epoch, epochs, loss_sum / steps, seconds,
                     evaluate_torch(model, *test), len(train_x))


def run_tutorial_torch(out_dir: Path, data_dir: Path, epochs: int, threads: int) -> None:
    """The tutorial's recipe on MNIST."""
    train_tutorial_torch(out_dir, load_mnist(data_dir, "train"), load_mnist(data_dir, "test"),
                         TUTORIAL_EPOCHS, epochs, threads)


def machine() -> str:
    return f"{os.cpu_count()}-core {' '.join(cpu_name().split()[:2])}"


# ---------------------------------------------------------------- ms_resnet runs (train.py)

def run_train_py(config: Path, out_dir: Path, data_dir: Path, epochs: int | None,
                 *options: str) -> None:
    """train.py with `config` on DATA_DIR into OUT_DIR (overwritten), stopped after `epochs`."""
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(config),
               "--data_dir", str(data_dir), "--ckpt_dir", str(out_dir), "--overwrite", *options]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


# ---------------------------------------------------------------- report

def config_epochs(config: Path) -> int:
    """A recipe's own epoch count (a run stopped early with --epochs records fewer)."""
    import yaml

    return int(yaml.safe_load(config.read_text(encoding="utf-8"))["epochs"])


def planned_epochs(run: str) -> int:
    return TUTORIAL_EPOCHS if run == "tutorial_torch" else config_epochs(CONFIGS[run])


def summarise(metrics: dict, planned: int, thresholds: Sequence[float] = THRESHOLDS) -> dict:
    """Cumulative training time per epoch, time to each threshold, and the extrapolation to
    the planned epochs when the run stopped early."""
    epochs = metrics["epochs"]
    clock, points = 0.0, []
    for record in epochs:
        clock += record["seconds"]
        points.append((clock, record["test_accuracy"]))
    per_epoch = statistics.median(r["seconds"] for r in epochs)
    missing = max(planned - len(epochs), 0)
    final_accuracy = epochs[-1]["test_accuracy"]
    # Time to the run's final accuracy: the first epoch that reached it; for a run stopped
    # early, the end of its planned epochs (its final accuracy is then unknown, at least the
    # last measured one).
    if missing:
        to_final = clock + missing * per_epoch
    else:
        to_final = next(t for t, acc in points if acc >= final_accuracy)
    return {"points": points, "planned": planned, "measured": len(epochs),
            "missing": missing, "per_epoch": per_epoch, "final_accuracy": final_accuracy,
            "to_final": to_final,
            "best_accuracy": max(acc for _, acc in points),
            "eval_seconds": sum(r["eval_seconds"] for r in epochs),
            "thresholds": {thr: next((t for t, acc in points if acc >= thr), None)
                           for thr in thresholds}}


def fmt_time(seconds: float | None, approx: bool = False) -> str:
    if seconds is None:
        return "not reached"
    return f"{'~' if approx else ''}{seconds:.0f} s ({seconds / 60:.1f} min)"


def report(out: Path, plot: Path | None) -> int:
    found = {run: json.loads((out / run / "metrics.json").read_text())
             for run in RUNS if (out / run / "metrics.json").is_file()}
    if not found:
        raise SystemExit(f"error: no {out}/<run>/metrics.json found; run the benchmark first")
    summaries = {run: summarise(m, planned_epochs(run)) for run, m in found.items()}
    print(f"# time to accuracy on full MNIST (60,000 train / 10,000 test), {machine()}; "
          f"clock = training only, evaluation excluded; from {out}/<run>/metrics.json")
    header = ["run", "epochs", *(f"to {t:.1%}" for t in THRESHOLDS), "final accuracy",
              "to final accuracy", "eval time (excluded)"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for run, s in summaries.items():
        epochs = (f"{s['measured']} of {s['planned']} (extrapolated)" if s["missing"]
                  else str(s["measured"]))
        final = (f"unknown ({s['final_accuracy']:.2%} after epoch {s['measured']}, best "
                 f"{s['best_accuracy']:.2%})" if s["missing"] else f"{s['final_accuracy']:.2%}")
        print("| " + " | ".join([
            LABELS[run], epochs, *(fmt_time(s["thresholds"][t]) for t in THRESHOLDS), final,
            fmt_time(s["to_final"], approx=bool(s["missing"])),
            f"{s['eval_seconds']:.0f} s"]) + " |")
    status = 0
    if "default" in summaries and "tutorial_torch" in summaries:
        default, tutorial = summaries["default"], summaries["tutorial_torch"]
        to_target = default["thresholds"][0.995]
        if to_target is None:
            print("default config: never reached 99.5%")
            status = 1
        else:
            ratio = tutorial["to_final"] / to_target
            # A run stopped early has no final accuracy: compare with its best measured one.
            reference = tutorial["best_accuracy"] if tutorial["missing"] else \
                tutorial["final_accuracy"]
            beats = default["final_accuracy"] >= reference
            approx = "~" if tutorial["missing"] else ""
            what = "best measured" if tutorial["missing"] else "final"
            print(f"speed-up: tutorial recipe (PyTorch) to its final accuracy "
                  f"{approx}{tutorial['to_final']:.0f} s / default config to 99.5% "
                  f"{to_target:.0f} s = {approx}{ratio:.1f}x (target >= 10x); default final "
                  f"{default['final_accuracy']:.2%} vs tutorial {what} {reference:.2%}: "
                  f"{'ok' if beats else 'LOWER'}")
            status = 0 if ratio >= 10 and beats else 1
    if plot is not None:
        draw(summaries, plot)
        print(f"plot: {plot}")
    return status


def draw(summaries: dict, path: Path, labels: dict[str, str] = LABELS,
         thresholds: Sequence[float] = THRESHOLDS, dataset: str = "MNIST",
         ylim: tuple[float, float] = (97.0, 100.0)) -> None:
    """Test accuracy against training minutes (log scale), one line per run."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run, s in summaries.items():
        minutes = [0.0] + [t / 60 for t, _ in s["points"]]
        accuracy = [None] + [100 * a for _, a in s["points"]]
        line, = ax.plot(minutes[1:], accuracy[1:], marker="o", markersize=4, label=labels[run])
        if s["missing"]:
            ax.plot([minutes[-1], s["to_final"] / 60], [accuracy[-1]] * 2, linestyle=":",
                    marker="x", markevery=[1], color=line.get_color(),
                    label=f"{labels[run]}: remaining epochs, extrapolated time")
    for threshold in thresholds:
        ax.axhline(100 * threshold, color="grey", linewidth=0.6, linestyle="--")
    ax.set_xscale("log")
    ticks = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500]
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training wall time, minutes (log scale; evaluation excluded)")
    ax.set_ylabel(f"{dataset} test accuracy, %")
    ax.set_ylim(*ylim)
    ax.set_title(f"Time to accuracy on {dataset}, {machine()}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS),
                        help="which runs to train (each writes OUT/<run>/metrics.json)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="stop each run after this many epochs and extrapolate the rest "
                             "(default: %(default)s, every run's full schedule)")
    parser.add_argument("--data_dir", type=Path, default=None,
                        help="the MNIST folder (real IDX files, .gz or raw), as train.py "
                             "--data_dir (default: %(default)s, that is $MS_RESNET_DATA/mnist, "
                             "else ./data/mnist)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="where each run's metrics.json goes")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: print the table and draw the plot from OUT")
    parser.add_argument("--plot", type=Path, default=PLOT, help="where the plot goes")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if not args.report:
        data_dir = find_mnist(args.data_dir, ["train", "test"])  # before any run
        warn_if_busy()
        for run in args.runs:
            if run == "tutorial_torch":
                run_tutorial_torch(args.out / run, data_dir, args.epochs or TUTORIAL_EPOCHS,
                                   args.threads)
            else:
                run_train_py(CONFIGS[run], args.out / run, data_dir, args.epochs,
                             "--export_mindir", "false")
    sys.exit(report(args.out, args.plot))


if __name__ == "__main__":
    main()
