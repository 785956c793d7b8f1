#!/usr/bin/env python
"""Inference speed: an exported MindIR (MindSpore) vs the same network in PyTorch.

MindSpore side: a freshly initialised ms_resnet network is exported with
`ms_resnet.export.export_model` (dynamic batch MindIR + JSON sidecar) and loaded back with
`ms_resnet.inference.from_mindir`, i.e. `nn.GraphCell(mindspore.load(...))`, the way `eval.py
--mindir` and the XiHe app use it. PyTorch side: the same architecture from
benchmarks/torch_models.py in eval mode under `torch.inference_mode()`, eager and (unless
--no_jit) `torch.jit.trace` + `torch.jit.freeze`. Weights differ (both freshly initialised);
the architecture and the input shape are the same. Every call takes a float32 NumPy batch and
returns NumPy logits on both sides.

Measured: batch-1 latency (median and 95th percentile over --calls calls) and batch-256
throughput (images/s from the median of --batches calls), after --warmup untimed calls of each
size (the first MindIR call compiles the graph). Each framework runs in its own subprocess,
repetitions interleaved (ms 1, torch 1, jit 1, ms 2, ...), medians over repetitions reported.

    python benchmarks/infer_throughput.py
    python benchmarks/infer_throughput.py --models resnet20:1x28 --reps 3 --calls 500
    python benchmarks/infer_throughput.py --quick     # smoke run, not a measurement
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from specs import DATASET_BY_INPUT, parse_benchmark_args, parse_input_spec, warn_if_busy

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet20:1x28", "fast_resnet8:1x28", "resnet20:3x32", "resnet18:3x32",
          "tutorial_resnet:1x28", "resnet50:3x32")
QUICK_MODELS = ("resnet20:1x28", "tutorial_resnet:1x28")
FRAMEWORKS = ("ms", "torch", "torch_jit")
LABELS = {"ms": "MindIR (GraphCell)", "torch": "PyTorch eager", "torch_jit": "PyTorch jit"}
RESULT_TAG = "BENCH_RESULT "


def time_calls(run, batch, count: int, warmup: int) -> tuple[list[float], float]:
    """Seconds of the first call, and of `count` timed calls after `warmup` untimed ones."""
    start = time.perf_counter()
    run(batch)
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        run(batch)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - start)
    return times, first


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


# ---------------------------------------------------------------- workers (one per subprocess)

def build_ms(name: str, channels: int, size: int, threads: int, work: Path):
    import mindspore as ms

    from ms_resnet.cpu_isa import choose_cpu_isa
    from ms_resnet.data import get_dataset_info
    from ms_resnet.export import export_model
    from ms_resnet.inference import Classifier, from_mindir
    from ms_resnet.models import create_model

    choose_cpu_isa()  # as every ms_resnet entry point, before the first kernel
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    ms.device_context.cpu.op_tuning.threads_num(threads)
    info = get_dataset_info(DATASET_BY_INPUT[(channels, size)])
    net = create_model(name, num_classes=len(info.classes), in_channels=channels,
                       image_size=size)
    net.set_train(False)
    classifier = Classifier(net, info.name, info.classes, channels, size, info.mean, info.std,
                            "fresh")
    start = time.perf_counter()
    path = export_model(classifier, work / name)  # batch_size None: dynamic batch
    exported = time.perf_counter()
    loaded = from_mindir(path)
    setup = {"export_s": exported - start, "load_s": time.perf_counter() - exported}
    params = int(sum(p.size for p in net.trainable_params()))
    return loaded.logits, params, ms.__version__, setup


def build_torch(name: str, channels: int, size: int, threads: int, jit: bool):
    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from torch_models import count_params, create_torch_model

    torch.set_num_threads(threads)
    model = create_torch_model(name, 10, channels, size).eval()
    params = count_params(model)
    if jit:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with torch.no_grad():
                model = torch.jit.freeze(torch.jit.trace(
                    model, torch.zeros(1, channels, size, size)))

    def logits(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(images)).numpy()

    return logits, params, torch.__version__, {}


def run_worker(args: argparse.Namespace) -> None:
    import numpy as np

    name, channels, size = parse_input_spec(args.model)
    with tempfile.TemporaryDirectory(prefix="ms_resnet_infer_") as tmp:
        if args.worker == "ms":
            logits, params, version, setup = build_ms(name, channels, size, args.threads, Path(tmp))
        else:
            logits, params, version, setup = build_torch(name, channels, size, args.threads,
                                                  args.worker == "torch_jit")
        rng = np.random.default_rng(0)
        one = rng.standard_normal((1, channels, size, size)).astype(np.float32)
        big = rng.standard_normal((args.big_batch, channels, size, size)).astype(np.float32)
        latency, first = time_calls(logits, one, args.calls, args.warmup)
        batches, _ = time_calls(logits, big, args.batches, args.warmup)
    if args.worker != "ms" and "mindspore" in sys.modules:
        raise RuntimeError("the PyTorch worker imported mindspore")
    result = {"framework": args.worker, "model": args.model, "params": params,
              "version": version, "first_call_s": first,
              "latency_median_ms": 1e3 * statistics.median(latency),
              "latency_p95_ms": 1e3 * percentile(latency, 95),
              "images_per_s": args.big_batch / statistics.median(batches),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
              **setup}
    print(RESULT_TAG + json.dumps(result), flush=True)


# ---------------------------------------------------------------- driver

def launch(framework: str, spec: str, args: argparse.Namespace, env: dict) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", framework,
               "--model", spec, "--calls", str(args.calls), "--batches", str(args.batches),
               "--warmup", str(args.warmup), "--big_batch", str(args.big_batch),
               "--threads", str(args.threads)]
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


def drive(args: argparse.Namespace) -> None:
    frameworks = [f for f in FRAMEWORKS if not (args.no_jit and f == "torch_jit")]
    load = os.getloadavg()[0]
    print(f"# inference: {os.cpu_count()} cores, 1-minute load average {load:.2f} at start; "
          f"threads {args.threads} on every side; {args.reps} interleaved repetitions, medians")
    print(f"# batch 1: median and p95 latency of {args.calls} calls; batch {args.big_batch}: "
          f"images/s from the median of {args.batches} calls; {args.warmup} untimed calls of "
          "each size first; NumPy in, NumPy out; freshly initialised weights on both sides")
    warn_if_busy()
    if args.quick:
        print("# --quick: SMOKE RUN with tiny settings - these figures are not measurements")
    env = dict(os.environ, GLOG_v="3")
    table = []
    for spec in args.models:
        runs: dict[str, list[dict]] = {f: [] for f in frameworks}
        for _ in range(args.reps):
            for framework in frameworks:
                runs[framework].append(launch(framework, spec, args, env))
        counts = {f: runs[f][0]["params"] for f in frameworks}
        assert len(set(counts.values())) == 1, f"{spec}: parameter counts differ: {counts}"
        keys = ("latency_median_ms", "latency_p95_ms", "images_per_s", "first_call_s",
                "peak_rss_mb", "export_s", "load_s")
        med = {f: {key: statistics.median(r[key] for r in runs[f]) for key in keys
                   if key in runs[f][0]} for f in frameworks}
        table.append((spec, counts["ms"], med))
        print(f"#   {spec}: done", file=sys.stderr, flush=True)
    others = frameworks[1:]
    head = ["model", "params", "MindIR b1 median / p95 ms"]
    head += [f"{LABELS[f]} b1 median / p95 ms" for f in others]
    head += [f"ms/{f} latency" for f in others]
    print("\nBatch-1 latency (ratio > 1: MindIR is slower)\n")
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for spec, params, med in table:
        cells = [spec, f"{params / 1e6:.2f}M"]
        cells += [f"{med[f]['latency_median_ms']:.2f} / {med[f]['latency_p95_ms']:.2f}"
                  for f in frameworks]
        cells += [f"{med['ms']['latency_median_ms'] / med[f]['latency_median_ms']:.2f}"
                  for f in others]
        print("| " + " | ".join(cells) + " |")
    head = ["model", "MindIR img/s"] + [f"{LABELS[f]} img/s" for f in others]
    head += [f"ms/{f} throughput" for f in others]
    head += ["MindIR export / load / first call s",
             "peak RSS MB (" + " / ".join(frameworks) + ")"]
    print(f"\nBatch-{args.big_batch} throughput (ratio > 1: MindIR is faster)\n")
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for spec, _, med in table:
        cells = [spec] + [f"{med[f]['images_per_s']:.1f}" for f in frameworks]
        cells += [f"{med['ms']['images_per_s'] / med[f]['images_per_s']:.2f}" for f in others]
        setup = med["ms"]
        cells += [f"{setup['export_s']:.2f} / {setup['load_s']:.2f} / {setup['first_call_s']:.2f}",
                  " / ".join(f"{med[f]['peak_rss_mb']:.0f}" for f in frameworks)]
        print("| " + " | ".join(cells) + " |")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Batch-1 latency and large-batch throughput of an exported MindIR vs the "
                    "same network in PyTorch (eager and jit.trace).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="MODEL:CxS",
                        help="models and inputs (1x28, 3x32 or 3x96)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per framework")
    parser.add_argument("--calls", type=int, default=200, help="timed batch-1 calls")
    parser.add_argument("--batches", type=int, default=10, help="timed large-batch calls")
    parser.add_argument("--big_batch", type=int, default=256, help="large batch size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls of each size")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch.set_num_threads and MindSpore's CPU kernel threads")
    parser.add_argument("--no_jit", action="store_true", help="skip torch.jit.trace")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per worker process")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 repetition, 10 batch-1 calls, 2 batch-256 calls, "
                        f"1 warm-up, models {' '.join(QUICK_MODELS)} unless --models is given")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parse_benchmark_args(
        parser, sys.argv[1:] if argv is None else argv,
        quick={"reps": 1, "calls": 10, "batches": 2, "warmup": 1}, quick_models=QUICK_MODELS,
        parse=parse_input_spec, at_least_one=("reps", "calls", "batches", "big_batch", "warmup"))
    if args.worker:
        run_worker(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
