#!/usr/bin/env python
"""How should a pretrained backbone be fine-tuned on a few images per class? Trains one recipe
from scratch and from --pretrained in several ways, over a few seeds, and prints the best test
accuracy of each way (median and range over the seeds):

- scratch: no pretrained weights;
- all: every layer at the recipe's learning rate;
- backbone_lr: the backbone at --backbone_lr times it, the new classifier at the full rate;
- freeze_then_all: only the classifier for the first third of the epochs, then every layer;
- freeze_then_backbone_lr: both;
- linear_probe: only the classifier (freeze_backbone).

Used to choose configs/finetune.yaml's way (docs/own_images.md), on a stand-in, since no
ImageNet weights can be downloaded on the build machine:

    python benchmarks/finetune_choice.py --config configs/own_images.yaml \
        --data_dir kmnist30 --pretrained fashion_mnist/best.ckpt --out results/finetune_choice
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specs import cpu_name


def ways(epochs: int, backbone_lr: float) -> dict[str, list[str]]:
    # Every option is given, so the recipe's own values do not leak into another way.
    freeze, none = ["--freeze_epochs", str(max(1, epochs // 3))], ["--freeze_epochs", "0"]
    scaled, full = ["--backbone_lr", str(backbone_lr)], ["--backbone_lr", "1"]
    return {"scratch": none + full, "all": none + full, "backbone_lr": none + scaled,
            "freeze_then_all": freeze + full, "freeze_then_backbone_lr": freeze + scaled,
            "linear_probe": [*none, *full, "--freeze_backbone", "true"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the recipe (a config YAML)")
    parser.add_argument("--data_dir", required=True, help="the images, in class folders")
    parser.add_argument("--pretrained", required=True, help="weights to start from")
    parser.add_argument("--out", required=True, help="folder for the runs and summary.json")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--backbone_lr", type=float, default=0.1)
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    parser.add_argument("--ways", help="comma-separated subset of the ways (default: all)")
    parser.add_argument("train_args", nargs=argparse.REMAINDER,
                        help="after --: more train.py options for every run")
    args = parser.parse_args()
    out = Path(args.out)
    every = ways(args.epochs, args.backbone_lr)
    chosen = args.ways.split(",") if args.ways else list(every)
    extra = [a for a in args.train_args if a != "--"]
    summary = {"cpu": cpu_name(), "config": args.config, "data_dir": args.data_dir,
               "pretrained": args.pretrained, "epochs": args.epochs, "train_args": extra,
               "ways": {}}
    for way in chosen:
        accuracies = []
        for seed in args.seeds.split(","):
            run_dir = out / "runs" / f"{way}_seed{seed}"
            command = [sys.executable, str(ROOT / "train.py"), "--config", args.config,
                       "--data_dir", args.data_dir, "--epochs", str(args.epochs), "--seed", seed,
                       "--ckpt_dir", str(run_dir), "--export_mindir", "false", *extra,
                       *every[way]]
            command += ["--pretrained", "none" if way == "scratch" else args.pretrained]
            if not (run_dir / "metrics.json").is_file():
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            accuracies.append(metrics["best_accuracy"])
            print(f"{way} seed {seed}: {metrics['best_accuracy']:.2%}", flush=True)
        summary["ways"][way] = {"options": every[way], "best_accuracy": accuracies,
                                "median": statistics.median(accuracies)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\n{cpu_name()}; {args.config} on {args.data_dir}, {args.epochs} epochs, "
          f"seeds {args.seeds}")
    print("| way | options | best test accuracy: median (range) |\n| --- | --- | --- |")
    for way, row in summary["ways"].items():
        low, high = min(row["best_accuracy"]), max(row["best_accuracy"])
        print(f"| {way} | `{' '.join(row['options']) or '-'}` | {row['median']:.2%} "
              f"({low:.2%}-{high:.2%}) |")


if __name__ == "__main__":
    main()
