#!/usr/bin/env python
"""Training images/s: the ms_resnet training path vs a PyTorch reference of the same network.

MindSpore side: what `ms_resnet.train.run_training` runs - `set_up_context` (GRAPH_MODE on CPU,
seeds), `create_dataset(dataset, "train", batch_size, augment=True)` on real MNIST files
for 1x28 inputs (found as train.py finds them: --data_dir, else $MS_RESNET_DATA/mnist, else
./data/mnist) and generated CIFAR-10- or STL-10-format files for 3x32 or 3x96 ones,
`build_network`, `CrossEntropyLoss(label_smoothing)`, `Model(net, loss_fn,
create_optimizer(...))`, a `ProgressBar(enabled=False)` callback and `model.train(...,
dataset_sink_mode=False)`. A timing callback records every step end; the first `--warmup`
steps (graph compilation included) are not timed.

PyTorch side: the same architecture (benchmarks/torch_models.py), batch size, SGD with Nesterov
momentum and weight decay on conv/dense weights only, one-cycle learning rate, cross-entropy
with label smoothing and `torch.set_num_threads(--threads)`. Its data comes from an in-memory
tensor DataLoader of the same size, so data loading does not dominate: the MindSpore figure
includes its real `mindspore.dataset` pipeline, the PyTorch one does not.

Every repetition of each framework runs in its own subprocess (this script with --worker), so
the peak RSS is per framework; repetitions are interleaved (ms 1, torch 1, ms 2, ...) and
medians are reported. Run it on an otherwise idle machine:

    MS_RESNET_DATA=../shared/datasets python benchmarks/train_throughput.py   # all models, 5 reps
    python benchmarks/train_throughput.py --models resnet20:1x28 --reps 3 --json out.json
    python benchmarks/train_throughput.py --quick --data_dir tests/data/mnist_small  # smoke run
    python benchmarks/train_throughput.py --frameworks ms       # MindSpore alone, no torch needed
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from specs import (
    DATASET_BY_INPUT,
    cpu_name,
    find_mnist,
    parse_benchmark_args,
    parse_input_spec,
    warn_if_busy,
)

ROOT = Path(__file__).resolve().parents[1]
# The hyper-parameters of both sides (SGD, Nesterov, weight decay 5e-4, label smoothing 0.1,
# one-cycle); the dataset, model and batch size are overridden per benchmark.
RECIPE = ROOT / "configs" / "mnist.yaml"
MODELS = ("resnet20:1x28", "fast_resnet8:1x28", "fast_resnet14:1x28", "resnet20:3x32",
          "resnet18:3x32", "tutorial_resnet:1x28", "resnet50:3x32")
QUICK_MODELS = ("resnet20:1x28", "resnet20:3x32")
# resnet50 is ~10x slower per step than resnet18 at 32 px: it times a third of the steps.
STEP_SCALE = {"resnet50": 1 / 3}
RESULT_TAG = "BENCH_RESULT "


def steps_for(name: str, steps: int) -> int:
    return max(1, round(steps * STEP_SCALE.get(name, 1.0)))


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and any children it waited for), in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0  # Linux reports KiB


def read_recipe() -> argparse.Namespace:
    """The optimizer keys of RECIPE, read without ms_resnet.config (whose validation imports
    mindspore: the PyTorch worker must not load it)."""
    import yaml

    values = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    keys = ("lr", "momentum", "nesterov", "weight_decay", "label_smoothing")
    return argparse.Namespace(**{k: values[k] for k in keys})


def _timed_rate(ends: list[float], warmup: int, batch_size: int) -> float:
    timed = len(ends) - warmup
    return timed * batch_size / (ends[-1] - ends[warmup - 1])


def _cores_used(ends: list[float], cpu: list[float], warmup: int) -> float:
    """CPU time of the whole process (every thread) over wall time in the timed steps."""
    return (cpu[-1] - cpu[warmup - 1]) / (ends[-1] - ends[warmup - 1])


# ---------------------------------------------------------------- workers (one per subprocess)

def worker_ms(args: argparse.Namespace) -> dict:
    import mindspore as ms
    from mindspore import nn
    from mindspore.train import Callback, Model

    from ms_resnet.callbacks import ProgressBar
    from ms_resnet.config import build_config
    from ms_resnet.data.pipeline import create_dataset
    from ms_resnet.network import build_network
    from ms_resnet.optim import create_optimizer
    from ms_resnet.runtime import set_up_context

    name, channels, size = parse_input_spec(args.model)
    total = args.warmup + steps_for(name, args.steps)
    config = build_config(RECIPE, {
        "dataset": DATASET_BY_INPUT[channels, size], "model": name,
        "data_dir": args.worker_data_dir,
        "batch_size": args.batch_size, "num_samples": total * args.batch_size, "epochs": 1,
        "augment": True, "export_mindir": False})

    class StepTimer(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.begin, self.ends, self.cpu = 0.0, [], []

        def on_train_begin(self, run_context) -> None:
            self.begin = time.perf_counter()

        def on_train_step_end(self, run_context) -> None:
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())

    # As run_training, from here on.
    set_up_context(config)
    if not args.ms_default_threads:
        ms.device_context.cpu.op_tuning.threads_num(args.threads)
    train_data = create_dataset(config.dataset, "train", config.batch_size,
                                data_dir=config.data_dir, augment=config.augment,
                                num_samples=config.num_samples,
                                num_parallel_workers=config.num_parallel_workers)
    steps = train_data.get_dataset_size()
    net = build_network(config)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    model = Model(net, loss_fn=loss_fn, optimizer=create_optimizer(net, config, steps, 1))
    progress = ProgressBar(config.batch_size, config.epochs, 0, enabled=False)
    timer = StepTimer()  # after ProgressBar, which reads the loss (a device sync) every step
    model.train(config.epochs, train_data, callbacks=[progress, timer], dataset_sink_mode=False)
    if len(timer.ends) != total:
        raise RuntimeError(f"expected {total} steps, got {len(timer.ends)}")
    return {"images_per_s": _timed_rate(timer.ends, args.warmup, args.batch_size),
            "cores_used": _cores_used(timer.ends, timer.cpu, args.warmup),
            "first_step_s": timer.ends[0] - timer.begin,
            "params": int(sum(p.size for p in net.trainable_params())),
            "threads": "default" if args.ms_default_threads else args.threads,
            "version": ms.__version__, "loss": progress.loss_sum / max(progress.steps, 1)}


def worker_torch(args: argparse.Namespace) -> dict:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from torch_models import count_params, create_torch_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    name, channels, size = parse_input_spec(args.model)
    total = args.warmup + steps_for(name, args.steps)
    config = read_recipe()
    model = create_torch_model(name, 10, channels, size)
    decayed = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decayed, "weight_decay": config.weight_decay},
                                 {"params": others, "weight_decay": 0.0}],
                                lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov)
    # Same shape as ms_resnet.optim's onecycle: lr/25 -> lr over 30%, cosine down to lr/25e4.
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=total, pct_start=0.3, div_factor=25.0,
        final_div_factor=1e4, cycle_momentum=False)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    count = total * args.batch_size
    images = torch.randn(count, channels, size, size)
    labels = torch.randint(0, 10, (count,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=args.batch_size, shuffle=True,
                        drop_last=True)
    model.train()
    begin, ends, cpu, loss_sum = time.perf_counter(), [], [], 0.0
    for x, y in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_sum += loss.item()  # as ProgressBar reads the loss every step
        ends.append(time.perf_counter())
        cpu.append(time.process_time())
    if "mindspore" in sys.modules:  # it would inflate this side's RSS and thread count
        raise RuntimeError("the PyTorch worker imported mindspore")
    return {"images_per_s": _timed_rate(ends, args.warmup, args.batch_size),
            "cores_used": _cores_used(ends, cpu, args.warmup),
            "first_step_s": ends[0] - begin, "params": count_params(model),
            "threads": torch.get_num_threads(), "version": torch.__version__,
            "loss": loss_sum / len(ends)}


def run_worker(args: argparse.Namespace) -> None:
    result = (worker_ms if args.worker == "ms" else worker_torch)(args)
    result.update(framework=args.worker, model=args.model, peak_rss_mb=peak_rss_mb())
    print(RESULT_TAG + json.dumps(result), flush=True)


# ---------------------------------------------------------------- driver

def launch(framework: str, spec: str, args: argparse.Namespace, data_dir: Path,
           env: dict) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", framework,
               "--model", spec, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch_size", str(args.batch_size), "--threads", str(args.threads),
               "--worker_data_dir", str(data_dir)]
    if args.ms_default_threads:
        command.append("--ms_default_threads")
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        sys.exit(f"error: {framework} worker for {spec} took more than {args.timeout} s")
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if done.returncode != 0 or not lines:
        sys.exit(f"error: {framework} worker for {spec} failed (exit {done.returncode}):\n"
                 f"{done.stderr.strip()[-2000:]}")
    return json.loads(lines[-1][len(RESULT_TAG):])


def load_average() -> str:
    try:
        import psutil

        return ", ".join(f"{v:.2f}" for v in psutil.getloadavg())
    except ImportError:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def prepare_data(inputs: set[tuple[int, int]], work: Path, mnist_dir: Path | None
                 ) -> dict[tuple[int, int], Path]:
    sys.path.insert(0, str(ROOT))
    from tests.fakedata import make_cifar10_bin, make_stl10_bin

    dirs = {}
    if (1, 28) in inputs:
        dirs[1, 28] = mnist_dir
    if (3, 32) in inputs:
        make_cifar10_bin(work / "cifar10")  # 5 x 10,000 images: the set the reader requires
        dirs[3, 32] = work / "cifar10" / "cifar-10-batches-bin"
    if (3, 96) in inputs:
        make_stl10_bin(work / "stl10", n_train=5000, n_test=100)  # upstream's train split size
        dirs[3, 96] = work / "stl10"
    return dirs


def fmt_rate(values: list[float]) -> str:
    if not values:
        return "n/a"
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.1f}"
    return f"{median:.1f} ({min(values):.1f}-{max(values):.1f})"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def drive(args: argparse.Namespace) -> None:
    if "torch" in args.frameworks and importlib.util.find_spec("torch") is None:
        sys.exit("error: PyTorch is not installed: pip install -e '.[bench]', or time MindSpore "
                 "alone with --frameworks ms")
    specs = [parse_input_spec(s) for s in args.models]
    mnist_dir = None
    if any(c == 1 for _, c, _ in specs):  # only the 1x28 models read MNIST
        mnist_dir = find_mnist(args.data_dir, ["train"])
        args.data_dir = str(mnist_dir)  # --json records the folder read
        largest = max(args.warmup + steps_for(n, args.steps) for n, c, _ in specs
                      if c == 1) * args.batch_size
        if "mnist_small" in str(mnist_dir) and largest > 2000:
            sys.exit(f"error: {largest} images per run but tests/data/mnist_small holds 2,000")
    print(f"# training throughput: {cpu_name()}, {os.cpu_count()} cores, load average "
          f"{load_average()} at start")
    print(f"# batch {args.batch_size}, {args.warmup} warm-up steps (not timed) + {args.steps} "
          f"timed steps ({', '.join(f'{k}: x{v:.2g}' for k, v in STEP_SCALE.items())}), "
          f"{args.reps} interleaved repetitions per framework, median (min-max) of images/s; "
          f"threads: PyTorch {args.threads}, MindSpore "
          f"{'its default (as train.py)' if args.ms_default_threads else args.threads}")
    print("# MindSpore: ms_resnet training path with its mindspore.dataset pipeline (real MNIST "
          "files / generated CIFAR-10- or STL-10-format files), GRAPH_MODE, "
          "dataset_sink_mode=False")
    print("# PyTorch: same architecture and recipe, data from an in-memory tensor DataLoader "
          "(no decoding or augmentation), eager mode")
    warn_if_busy()
    if args.quick:
        print("# --quick: SMOKE RUN with tiny settings - these figures are not measurements")
    rows, record = [], {}
    with tempfile.TemporaryDirectory(prefix="ms_resnet_bench_") as tmp:
        work = Path(tmp)
        env = dict(os.environ, MS_RESNET_CACHE=str(work / "cache"), GLOG_v="3")
        data_dirs = prepare_data({(c, s) for _, c, s in specs}, work, mnist_dir)
        for spec, (name, channels, size) in zip(args.models, specs):
            runs: dict[str, list[dict]] = {"ms": [], "torch": []}  # a side not run stays empty
            for rep in range(args.reps):
                for framework in args.frameworks:
                    result = launch(framework, spec, args, data_dirs[channels, size], env)
                    runs[framework].append(result)
                    print(f"#   {spec} rep {rep + 1}/{args.reps} {framework}: "
                          f"{result['images_per_s']:.1f} img/s, first step "
                          f"{result['first_step_s']:.1f} s, peak RSS "
                          f"{result['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
            params = {framework: r[0]["params"] for framework, r in runs.items() if r}
            assert len(set(params.values())) == 1, f"{spec}: trainable parameters differ: {params}"
            rates = {f: [r["images_per_s"] for r in runs[f]] for f in runs}
            ms_rate, torch_rate = _median(rates["ms"]), _median(rates["torch"])
            ratio = ms_rate / torch_rate if ms_rate and torch_rate else None
            compile_s = _median([r["first_step_s"] for r in runs["ms"]])
            ms_rss, torch_rss = (_median([r["peak_rss_mb"] for r in runs[f]]) for f in runs)
            ms_cores, torch_cores = (_median([r["cores_used"] for r in runs[f]]) for f in runs)
            count = params[args.frameworks[0]]
            rows.append(f"| {name} | {channels}x{_size(spec)} | {count / 1e6:.2f}M | "
                        f"{steps_for(name, args.steps)} | {fmt_rate(rates['ms'])} | "
                        f"{fmt_rate(rates['torch'])} | {_fmt(ratio, '.2f')} | "
                        f"{_fmt(compile_s, '.1f')} | {_fmt(ms_rss, '.0f')} | "
                        f"{_fmt(torch_rss, '.0f')} | {_fmt(ms_cores, '.2f')} / "
                        f"{_fmt(torch_cores, '.2f')} |")
            record[spec] = {"ms_images_per_s": ms_rate, "torch_images_per_s": torch_rate,
                            "ratio_ms_torch": ratio, "ms_first_step_s": compile_s,
                            "ms_peak_rss_mb": ms_rss, "torch_peak_rss_mb": torch_rss,
                            "ms_cores_used": ms_cores, "torch_cores_used": torch_cores,
                            "params": count, "runs": runs}
            print(f"# {spec}: done", file=sys.stderr, flush=True)
    print("| model | input | params (equal) | timed steps | MindSpore img/s | PyTorch img/s | "
          "ms/torch | MindSpore first step (compile) s | MindSpore peak RSS MB | "
          "PyTorch peak RSS MB | cores used (CPU / wall time), ms / torch |")
    print("|" + " --- |" * 11)
    for row in rows:
        print(row)
    print(f"# load average at end: {load_average()}")
    if args.json:
        train_rate = {spec: r["ms_images_per_s"] for spec, r in record.items()
                      if r["ms_images_per_s"] is not None}
        Path(args.json).write_text(json.dumps({
            "settings": {k: v for k, v in vars(args).items()
                         if k not in ("worker", "model", "worker_data_dir")},
            "train_rate": train_rate, "results": record}, indent=2), encoding="utf-8")
        print(f"# raw results: {args.json}")


def _size(spec: str) -> str:
    size = spec.split(":")[1].split("x")[1]
    return f"{size}x{size}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Training images/s of the ms_resnet training path (MindSpore) vs a PyTorch "
                    "reference of the same network; interleaved repetitions in separate "
                    "processes, medians reported.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="MODEL:CxS",
                        help="models and inputs (1x28 = MNIST, 3x32 = CIFAR-10 format, "
                        "3x96 = STL-10 format)")
    parser.add_argument("--frameworks", nargs="+", choices=("ms", "torch"),
                        default=["ms", "torch"],
                        help="what to time: ms = the ms_resnet training path, torch = the "
                        "PyTorch reference (needs the bench extra); the ratio needs both")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per framework")
    parser.add_argument("--steps", type=int, default=30,
                        help="timed steps per repetition (resnet50: a third)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps first (the first compiles the graph)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch.set_num_threads and MindSpore's CPU kernel threads "
                        "(mindspore.device_context.cpu.op_tuning.threads_num)")
    parser.add_argument("--ms_default_threads", action="store_true",
                        help="leave MindSpore's CPU kernel thread count at its default, as "
                        "train.py does (--threads then applies to PyTorch only)")
    parser.add_argument("--data_dir",
                        help="the MNIST folder (real IDX files, .gz or raw) the 1x28 models "
                        "train on, as train.py --data_dir (default: %(default)s, that is "
                        "$MS_RESNET_DATA/mnist, else ./data/mnist)")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the raw results here (pipeline_throughput.py "
                        "--train_rate reads it)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per worker process")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: batch 16, 1 warm-up + 2 timed steps, 1 repetition, "
                        f"models {' '.join(QUICK_MODELS)} unless --models is given")
    parser.add_argument("--worker", choices=("ms", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--worker_data_dir", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parse_benchmark_args(
        parser, sys.argv[1:] if argv is None else argv,
        quick={"batch_size": 16, "warmup": 1, "steps": 2, "reps": 1}, quick_models=QUICK_MODELS,
        parse=parse_input_spec, at_least_one=("warmup", "steps", "reps", "batch_size"))
    args.frameworks = list(dict.fromkeys(args.frameworks))  # "ms ms" would time ms twice per rep
    if args.worker:
        run_worker(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
