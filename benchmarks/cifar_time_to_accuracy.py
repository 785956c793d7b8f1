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
import sys
import time
from pathlib import Path

import numpy as np
from specs import warn_if_busy
from time_to_accuracy import (
    config_epochs,
    draw,
    evaluate_torch,
    fmt_time,
    machine,
    metrics_header,
    record_epoch,
    run_train_py,
    summarise,
    train_tutorial_torch,
)

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


# ---------------------------------------------------------------- the fast recipe in PyTorch

def _crop_flip(batch, generator, padding: int):
    """Random crop of the zero-padded images plus a random horizontal flip, as mindspore's
    RandomCrop(padding=padding) + RandomHorizontalFlip (here on an NCHW batch)."""
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

    from ms_resnet.data.folder import crop_padding
    from ms_resnet.network import model_kwargs
    from ms_resnet.optim import lr_per_step
    from ms_resnet.whitening import patch_whitening, whitening_sample

    config = _fast_config(data_dir, seed, batch_size)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(seed)
    model = create_torch_model(config.model, len(config.classes), 3, 32, **model_kwargs(config))
    stem = model.stem[0]
    weight, bias = patch_whitening(whitening_sample(config))  # the same images as ms_resnet
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
    padding = crop_padding(32) if config.crop_padding is None else config.crop_padding
    # As ms_resnet.optim: weight decay on conv/dense weights only; BN betas at bn_beta_lr x lr.
    betas = {id(m.bias) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": config.weight_decay,
               "scale": 1.0},
              {"params": [p for p in trainable if p.ndim <= 1 and id(p) not in betas],
               "weight_decay": 0.0, "scale": 1.0},
              {"params": [p for p in trainable if id(p) in betas], "weight_decay": 0.0,
               "scale": config.bn_beta_lr}]
    optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov)
    # The recipe's schedule for all its epochs, even when this run stops earlier.
    schedule = lr_per_step(config.lr_schedule, config.lr, config.epochs, steps,
                           config.warmup_epochs)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    recipe = {"recipe": "configs/cifar10_fast.yaml", **{
        key: getattr(config, key) for key in ("model", "lr", "batch_size", "weight_decay",
                                              "label_smoothing", "lr_schedule", "epochs",
                                              "eval_flip", "whiten_stem", "dirac_init",
                                              "bn_momentum", "freeze_bn_gamma", "bn_beta_lr",
                                              "momentum", "crop_padding", "seed")}}
    metrics = metrics_header(recipe, count_params(model), threads)
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        started, loss_sum = time.perf_counter(), 0.0
        order = torch.randperm(len(train_x), generator=generator)
        for i in range(steps):
            chosen = order[i * batch:(i + 1) * batch]
            images = normalise(_crop_flip(train_x[chosen], generator, padding))
            for group in optimizer.param_groups:
                group["lr"] = float(schedule[step]) * group["scale"]
            optimizer.zero_grad()
            loss = loss_fn(model(images), train_y[chosen])
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            step += 1
        seconds = time.perf_counter() - started + (decode_seconds if epoch == 1 else 0.0)
        record_epoch(metrics, out_dir, epoch, epochs, loss_sum / steps, seconds,
                     evaluate_torch(model, test_x, test_y, config.eval_flip), steps * batch)


# ---------------------------------------------------------------- the tutorial's recipe

def run_tutorial_torch(out_dir: Path, data_dir: Path, epochs: int | None, threads: int,
                       seed: int) -> None:
    """The tutorial's recipe on the colour images (0..1, no normalisation, no augmentation)."""
    import torch

    classes = sorted(p.name for p in (data_dir / "train").iterdir() if p.is_dir())
    started = time.perf_counter()
    splits = {}
    for split in ("train", "test"):
        images, labels = load_split(data_dir, split, classes)
        splits[split] = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255,
                         torch.from_numpy(labels))
        if split == "train":
            load_seconds = time.perf_counter() - started
    train_tutorial_torch(out_dir, splits["train"], splits["test"], TUTORIAL_EPOCHS,
                         epochs or TUTORIAL_EPOCHS, threads, seed, load_seconds)


# ---------------------------------------------------------------- report

def planned_epochs(run: str) -> int:
    return TUTORIAL_EPOCHS if run == "tutorial_torch" else config_epochs(CONFIGS[run])


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
        draw(summaries, plot, LABELS, THRESHOLDS, "CIFAR-10 (JPEG copy)", (50.0, 100.0))
        print(f"plot: {plot}")
    return 0


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
    if args.runs and not args.report:
        if not (args.data_dir / "train").is_dir():
            parser.error(f"--data_dir {args.data_dir}: no train/ folder of class folders")
        warn_if_busy()
        for run in args.runs:
            if run == "fast_ms":
                batch = ("--batch_size", str(args.batch_size)) if args.batch_size else ()
                run_train_py(CONFIGS[run], args.out / run, args.data_dir, args.epochs,
                             "--seed", str(args.seed), *batch)
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
