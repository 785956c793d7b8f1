#!/usr/bin/env python
"""Wall time to reach 80 / 85 / 90 / 92 / 93 / 94 % on the CIFAR-10 JPEG copy, four ways.

    fast_ms         configs/cifar10_fast.yaml on ms_resnet (pool_resnet8, frozen patch
                    whitening, 16 epochs): read from its run folder (default
                    results/cifar10_fast), or trained here with --runs fast_ms
    fast_torch      the same recipe in PyTorch on the same files and CPU: the same network
                    (benchmarks/torch_models.py), the same whitening (computed from the same
                    5,000 images), per-step learning rates, weight decay groups, label smoothing,
                    4-px pad + crop + flip and flip-averaged evaluation
    tutorial_torch  the PyTorch tutorial's recipe for colour data: its network (tutorial_resnet,
                    PyTorch's default init), Adam lr 1e-3, batch 32, ToTensor only, 10 epochs
    resnet20        He et al.'s ResNet-20 recipe (configs/cifar10_folder.yaml, 164 epochs): read
                    from its run folder (default results/cifar10_resnet20)

The data is the folder train.py reads (train/<class>/, test/<class>/: the CIFAR-10 JPEG copy in
../shared/datasets/cifar10_jpeg). The PyTorch runs decode every JPEG once into memory; that time
is counted in their first epoch. The clock counts training only; evaluation time is reported
beside it. Each run's metrics.json has train.py's format, and the table and
docs/images/cifar_time_to_accuracy.png are built from those files only. A run stopped early with
--epochs is extrapolated as in time_to_accuracy.py (marked "~").

    python benchmarks/cifar_time_to_accuracy.py --runs fast_torch tutorial_torch
    python benchmarks/cifar_time_to_accuracy.py --runs tutorial_torch --epochs 3
    python benchmarks/cifar_time_to_accuracy.py --report        # table + plot from the files
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from specs import warn_if_busy
from time_to_accuracy import fmt_time, machine, summarise

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("fast_ms", "fast_torch", "tutorial_torch", "resnet20")
TRAINED_HERE = ("fast_ms", "fast_torch", "tutorial_torch")
LABELS = {"fast_ms": "ms_resnet fast recipe (configs/cifar10_fast.yaml)",
          "fast_torch": "the same recipe, PyTorch twin",
          "tutorial_torch": "tutorial recipe (colour), PyTorch",
          "resnet20": "ResNet-20, He et al. (configs/cifar10_folder.yaml)"}
CONFIGS = {"fast_ms": ROOT / "configs" / "cifar10_fast.yaml",
           "fast_torch": ROOT / "configs" / "cifar10_fast.yaml",
           "resnet20": ROOT / "configs" / "cifar10_folder.yaml"}
THRESHOLDS = (0.80, 0.85, 0.90, 0.92, 0.93, 0.94)
TUTORIAL_EPOCHS = 10
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "cifar10_jpeg"
DEFAULT_OUT = ROOT / "results" / "cifar_time_to_accuracy"
PLOT = ROOT / "docs" / "images" / "cifar_time_to_accuracy.png"


# ---------------------------------------------------------------- data, for the PyTorch runs

def load_split(data_dir: Path, split: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every image of DATA_DIR/split/<class>/ decoded to uint8 (N, 32, 32, 3), with its label."""
    from PIL import Image

    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((data_dir / split / name).iterdir()):
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB").resize((32, 32))))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _metrics_header(recipe: dict, params: int, threads: int) -> dict:
    import torch

    return {"config": recipe, "framework": f"pytorch {torch.__version__}", "threads": threads,
            "params": params, "machine": machine(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "best_accuracy": None,
            "best_epoch": None, "epochs": []}


def _record_epoch(metrics: dict, out_dir: Path, epoch: int, epochs: int, train_loss: float,
                  seconds: float, evaluation: tuple[float, float, float], images: int) -> None:
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


def _evaluate(model, test_x, test_y, flip: bool) -> tuple[float, float, float]:
    """(accuracy, mean loss, seconds) on the whole test set; flip: mean of the mirrored logits."""
    import torch

    started, correct, loss = time.perf_counter(), 0, 0.0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(test_x), 1000):
            x, y = test_x[i:i + 1000], test_y[i:i + 1000]
            logits = model(x)
            if flip:
                logits = (logits + model(torch.flip(x, (3,)))) / 2
            loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    return correct / len(test_x), loss / len(test_x), time.perf_counter() - started


# ---------------------------------------------------------------- the fast recipe in PyTorch

def _crop_flip(batch, generator, padding: int = 4):
    """Random crop of the zero-padded images plus a random horizontal flip, as mindspore's
    RandomCrop(padding=4) + RandomHorizontalFlip (here on an NCHW batch)."""
    import torch

    n, c, h, w = batch.shape
    padded = torch.nn.functional.pad(batch, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                 rows, cols]
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = torch.flip(out[flip], (3,))
    return out


def _fast_config(data_dir: Path, seed: int, batch_size: int | None):
    """configs/cifar10_fast.yaml for DATA_DIR, with the folder's classes, mean and std."""
    from ms_resnet.config import build_config
    from ms_resnet.dataspec import complete_folder_config

    overrides = {"data_dir": str(data_dir), "seed": seed}
    overrides.update({"batch_size": batch_size} if batch_size else {})
    config = build_config(CONFIGS["fast_torch"], overrides, training=True)
    complete_folder_config(config)
    return config


def run_fast_torch(out_dir: Path, data_dir: Path, epochs: int | None, threads: int,
                   seed: int, batch_size: int | None = None) -> None:
    import torch
    from torch_models import count_params, create_torch_model

    from ms_resnet.optim import lr_per_step
    from ms_resnet.train import _whitening_sample
    from ms_resnet.whitening import patch_whitening

    config = _fast_config(data_dir, seed, batch_size)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(seed)
    model = create_torch_model(config.model, len(config.classes), 3, 32)
    stem = model.stem[0]
    weight, bias = patch_whitening(_whitening_sample(config))  # the same images as ms_resnet
    with torch.no_grad():
        stem.weight.copy_(torch.from_numpy(weight))
        stem.bias.copy_(torch.from_numpy(bias))
    stem.weight.requires_grad_(False)
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)

    def normalise(batch):
        return (batch.float() / 255 - mean) / std

    started = time.perf_counter()
    train_x, train_y = load_split(data_dir, "train", config.classes)
    decode_seconds = time.perf_counter() - started
    test_x, test_y = load_split(data_dir, "test", config.classes)
    train_x = torch.from_numpy(train_x).permute(0, 3, 1, 2).contiguous()
    test_x = normalise(torch.from_numpy(test_x).permute(0, 3, 1, 2))
    train_y, test_y = torch.from_numpy(train_y), torch.from_numpy(test_y)
    epochs = epochs or config.epochs
    batch, steps = config.batch_size, len(train_x) // config.batch_size
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": config.weight_decay},
         {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}],
        lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    # The recipe's schedule for all its epochs, even when this run stops earlier.
    schedule = lr_per_step(config.lr_schedule, config.lr, config.epochs, steps,
                           config.warmup_epochs)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    recipe = {"recipe": "configs/cifar10_fast.yaml", **{
        key: getattr(config, key) for key in ("model", "lr", "batch_size", "weight_decay",
                                              "label_smoothing", "lr_schedule", "epochs",
                                              "eval_flip", "whiten_stem", "seed")}}
    metrics = _metrics_header(recipe, count_params(model), threads)
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        started, loss_sum = time.perf_counter(), 0.0
        order = torch.randperm(len(train_x), generator=generator)
        for i in range(steps):
            chosen = order[i * batch:(i + 1) * batch]
            images = normalise(_crop_flip(train_x[chosen], generator))
            for group in optimizer.param_groups:
                group["lr"] = float(schedule[step])
            optimizer.zero_grad()
            loss = loss_fn(model(images), train_y[chosen])
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            step += 1
        seconds = time.perf_counter() - started + (decode_seconds if epoch == 1 else 0.0)
        _record_epoch(metrics, out_dir, epoch, epochs, loss_sum / steps, seconds,
                      _evaluate(model, test_x, test_y, config.eval_flip), steps * batch)


# ---------------------------------------------------------------- the tutorial's recipe

def run_tutorial_torch(out_dir: Path, data_dir: Path, epochs: int | None, threads: int,
                       seed: int) -> None:
    """The tutorial's loop on colour images: Adam 1e-3, batch 32, ToTensor only, shuffled."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from torch_models import count_params, create_torch_model

    classes = sorted(p.name for p in (data_dir / "train").iterdir() if p.is_dir())
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    model = create_torch_model("tutorial_resnet", len(classes), 3, 32)
    for module in model.modules():  # the tutorial keeps PyTorch's default initialisation
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.reset_parameters()
    started = time.perf_counter()
    train_x, train_y = load_split(data_dir, "train", classes)
    decode_seconds = time.perf_counter() - started
    test_x, test_y = load_split(data_dir, "test", classes)

    def to_tensor(images: np.ndarray):
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255

    loader = DataLoader(TensorDataset(to_tensor(train_x), torch.from_numpy(train_y)),
                        batch_size=32, shuffle=True)
    test_x, test_y = to_tensor(test_x), torch.from_numpy(test_y)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    epochs = epochs or TUTORIAL_EPOCHS
    metrics = _metrics_header({"recipe": "tutorial", "model": "tutorial_resnet",
                               "optimizer": "adam", "lr": 1e-3, "batch_size": 32,
                               "augment": False, "epochs": TUTORIAL_EPOCHS, "seed": seed},
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
        seconds = time.perf_counter() - started + (decode_seconds if epoch == 1 else 0.0)
        _record_epoch(metrics, out_dir, epoch, epochs, loss_sum / steps, seconds,
                      _evaluate(model, test_x, test_y, flip=False), len(train_x))


# ---------------------------------------------------------------- ms_resnet (train.py)

def run_fast_ms(out_dir: Path, data_dir: Path, epochs: int | None, seed: int,
                batch_size: int | None = None) -> None:
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(CONFIGS["fast_ms"]),
               "--data_dir", str(data_dir), "--ckpt_dir", str(out_dir), "--overwrite",
               "--seed", str(seed)]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    if batch_size is not None:
        command += ["--batch_size", str(batch_size)]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


# ---------------------------------------------------------------- report

def planned_epochs(run: str) -> int:
    if run == "tutorial_torch":
        return TUTORIAL_EPOCHS
    import yaml

    return int(yaml.safe_load(CONFIGS[run].read_text(encoding="utf-8"))["epochs"])


def report(sources: dict[str, Path], plot: Path | None) -> int:
    found = {run: json.loads((path / "metrics.json").read_text())
             for run, path in sources.items() if (path / "metrics.json").is_file()}
    if not found:
        raise SystemExit(f"error: no metrics.json in {', '.join(map(str, sources.values()))}; "
                         "run the benchmark first")
    summaries = {run: summarise(m, planned_epochs(run), THRESHOLDS) for run, m in found.items()}
    print(f"# time to accuracy on the CIFAR-10 JPEG copy (50,000 train / 10,000 test), "
          f"{machine()}; clock = training only, evaluation excluded")
    header = ["run", "from", "epochs", *(f"to {t:.0%}" for t in THRESHOLDS), "final accuracy",
              "to final accuracy", "eval time (excluded)"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for run, s in summaries.items():
        epochs = (f"{s['measured']} of {s['planned']} (extrapolated)" if s["missing"]
                  else str(s["measured"]))
        final = (f"unknown ({s['final_accuracy']:.2%} after epoch {s['measured']})"
                 if s["missing"] else f"{s['final_accuracy']:.2%}")
        source = (sources[run].relative_to(ROOT) if sources[run].is_relative_to(ROOT)
                  else sources[run])
        print("| " + " | ".join([
            LABELS[run], f"`{source}`", epochs,
            *(fmt_time(s["thresholds"][t]) for t in THRESHOLDS), final,
            fmt_time(s["to_final"], approx=bool(s["missing"])),
            f"{s['eval_seconds']:.0f} s"]) + " |")
    if "fast_ms" in summaries and "tutorial_torch" in summaries:
        fast, tutorial = summaries["fast_ms"], summaries["tutorial_torch"]
        # A run stopped early has no final accuracy: compare with its best measured one.
        reference = (tutorial["best_accuracy"] if tutorial["missing"]
                     else tutorial["final_accuracy"])
        reached = next((t for t, acc in fast["points"] if acc >= reference), None)
        approx = "~" if tutorial["missing"] else ""
        if reached is None:
            print(f"the fast recipe never reached the tutorial's {reference:.2%}")
        else:
            print(f"speed-up: the tutorial recipe (PyTorch) takes {approx}"
                  f"{tutorial['to_final']:.0f} s to its final {reference:.2%}; the fast recipe "
                  f"reaches it after {reached:.0f} s: {approx}"
                  f"{tutorial['to_final'] / reached:.1f}x sooner")
    if plot is not None:
        draw(summaries, plot)
        print(f"plot: {plot}")
    return 0


def draw(summaries: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run, s in summaries.items():
        minutes = [t / 60 for t, _ in s["points"]]
        accuracy = [100 * a for _, a in s["points"]]
        line, = ax.plot(minutes, accuracy, marker="o", markersize=3, label=LABELS[run])
        if s["missing"]:
            ax.plot([minutes[-1], s["to_final"] / 60], [accuracy[-1]] * 2, linestyle=":",
                    marker="x", markevery=[1], color=line.get_color(),
                    label=f"{LABELS[run]}: remaining epochs, extrapolated time")
    for threshold in THRESHOLDS:
        ax.axhline(100 * threshold, color="grey", linewidth=0.6, linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("training wall time, minutes (log scale; evaluation excluded)")
    ax.set_ylabel("test accuracy, % (CIFAR-10, JPEG copy)")
    ax.set_ylim(50.0, 100.0)
    ax.set_title(f"Time to accuracy on CIFAR-10 (JPEG copy), {machine()}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--runs", nargs="+", choices=TRAINED_HERE, default=[],
                        help="which runs to train now (each writes OUT/<run>/metrics.json)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="stop each run after this many epochs and extrapolate the rest "
                             "(default: every run's full schedule)")
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA,
                        help="the CIFAR-10 image folder (train/<class>/, test/<class>/)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="where the runs trained here write their metrics.json")
    parser.add_argument("--fast_ms", type=Path, default=ROOT / "results" / "cifar10_fast",
                        help="the fast recipe's run folder, unless trained here (--runs fast_ms)")
    parser.add_argument("--resnet20", type=Path, default=ROOT / "results" / "cifar10_resnet20",
                        help="the ResNet-20 run folder (its metrics.json)")
    parser.add_argument("--seed", type=int, default=42, help="the runs trained here")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="the fast recipe's batch size (default: the config's; smaller only "
                             "for smoke runs on a few images)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: print the table and draw the plot")
    parser.add_argument("--plot", type=Path, default=PLOT, help="where the plot goes")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if not (args.data_dir / "train").is_dir():
        parser.error(f"--data_dir {args.data_dir}: no train/ folder of class folders")
    if args.runs and not args.report:
        warn_if_busy()
        for run in args.runs:
            if run == "fast_ms":
                run_fast_ms(args.out / run, args.data_dir, args.epochs, args.seed,
                            args.batch_size)
            elif run == "fast_torch":
                run_fast_torch(args.out / run, args.data_dir, args.epochs, args.threads,
                               args.seed, args.batch_size)
            else:
                run_tutorial_torch(args.out / run, args.data_dir, args.epochs, args.threads,
                                   args.seed)
    sources = {run: args.out / run for run in RUNS}
    if "fast_ms" not in args.runs:
        sources["fast_ms"] = args.fast_ms
    sources["resnet20"] = args.resnet20
    sys.exit(report(sources, args.plot))


if __name__ == "__main__":
    main()
