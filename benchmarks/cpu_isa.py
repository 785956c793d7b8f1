#!/usr/bin/env python
"""What ms_resnet's choice of oneDNN's CPU ISA (ms_resnet/cpu_isa.py) is worth on this machine.

1. Convolution GFLOPS per ISA cap: the probe's 32->32 3x3 convolution on Bx32x28x28 (B =
   --conv_batch, 128 as in training), each cap in its own process (ONEDNN_MAX_CPU_ISA=...;
   "default" = no cap), median of --reps.
2. Each user-facing path under three settings, interleaved (the order rotates from one
   repetition to the next), medians of --reps:
   - "auto": no variable set, as a user runs it (the fix: ms_resnet measures and chooses);
   - "AVX2 by hand": ONEDNN_MAX_CPU_ISA=AVX2 set by the user;
   - "off": MS_RESNET_CPU_ISA=off, oneDNN's own choice (the behaviour before the fix).
   The paths:
   - training: the README path (configs/mnist.yaml, fast_resnet8, batch 128, real MNIST, 2 data
     workers, MindSpore's default threads) through train_throughput.py's MindSpore worker;
   - MindIR (`from_mindir`, as `eval.py --mindir` and `ms-resnet predict`): batch-256 img/s and
     batch-1 latency through infer_throughput.py's MindSpore worker;
   - `eval.py --mindir` (full MNIST test split) and `ms-resnet predict --mindir` (one image):
     the real commands, wall time, the median of 5 invocations per repetition;
   - the XiHe app: inference/app.py's start-up steps, then the median time of its `classify`
     (pre-processing + MindIR) on an example image.
   The MindIR has freshly initialised weights: the timing does not depend on them.

Usage (alone on the machine):
    MS_RESNET_DATA=../shared/datasets python benchmarks/cpu_isa.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from specs import cpu_name, find_mnist, warn_if_busy

# specs puts the repository on sys.path; ms_resnet.cpu_isa needs only the standard library.
from ms_resnet.cpu_isa import CHOSEN_MARK, ONEDNN_VARIABLES, SWITCH, measure_conv_gflops

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULT_TAG = "BENCH_RESULT "
ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
        "AVX512_CORE_BF16", "AVX512_CORE_AMX", None)
SETTINGS = {"auto": {}, "AVX2 by hand": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
            "off": {"MS_RESNET_CPU_ISA": "off"}}
MODEL = "fast_resnet8:1x28"  # configs/mnist.yaml's network and input
EXAMPLE = ROOT / "inference" / "examples" / "mnist" / "mnist_test_00_label_7.png"


def clean_env(cache: Path, extra: dict) -> dict:
    """The caller's environment without any ISA variable, plus `extra`."""
    drop = {*ONEDNN_VARIABLES, SWITCH, CHOSEN_MARK}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "MS_RESNET_CACHE": str(cache), "GLOG_v": "3", **extra}


def run(command: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command[1:4])} failed (exit {done.returncode}):\n"
                 f"{done.stderr.strip()[-2000:]}")
    return done


def tagged(done: subprocess.CompletedProcess) -> dict:
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_TAG)]
    return json.loads(lines[-1][len(RESULT_TAG):])


def timed(command: list[str], env: dict, timeout: int, invocations: int = 5) -> float:
    """The median wall time of `invocations` runs of `command`."""
    times = []
    for _ in range(invocations):
        start = time.perf_counter()
        run(command, env, timeout)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------- workers (one per subprocess)

def worker_export(out: Path) -> None:
    """A fresh fast_resnet8 for MNIST, exported with its sidecar as `ms-resnet export` does."""
    from ms_resnet.cpu_isa import choose_cpu_isa
    from ms_resnet.data import get_dataset_info
    from ms_resnet.export import export_model
    from ms_resnet.inference import Classifier
    from ms_resnet.models import create_model

    choose_cpu_isa()
    info = get_dataset_info("mnist")
    net = create_model(MODEL.split(":")[0], num_classes=10, in_channels=1, image_size=28)
    net.set_train(False)
    classifier = Classifier(net, info.name, info.classes, 1, 28, info.mean, info.std, "fresh")
    print(RESULT_TAG + json.dumps({"mindir": str(export_model(classifier, out / "model"))}))


def worker_app(mindir: Path, calls: int) -> None:
    """The XiHe app's start-up (main's ISA choice, then Model) and its per-request work."""
    sys.path.insert(0, str(ROOT / "inference"))
    import app
    from PIL import Image

    choice = app.choose_cpu_isa()
    model = app.Model(mindir)
    image = Image.open(EXAMPLE)
    times = []
    for i in range(calls + 5):
        start = time.perf_counter()
        app.classify(model, image, "auto", True, app.DEFAULT_MAX_PIXELS)
        if i >= 5:
            times.append(time.perf_counter() - start)
    print(RESULT_TAG + json.dumps({"latency_ms": 1e3 * statistics.median(times),
                                   "isa": choice.summary()}))


# ---------------------------------------------------------------- driver

def conv_table(reps: int, batch: int) -> None:
    # measure_conv_gflops starts each probe without any ISA variable but the one it sets.
    print(f"\n1. Convolution 32->32 3x3 on {batch}x32x28x28, GFLOPS by ONEDNN_MAX_CPU_ISA, "
          f"median of {reps}\n")
    medians = {}
    for isa in ISAS:
        medians[isa or "default (unset)"] = statistics.median(
            measure_conv_gflops(isa, batch) for _ in range(reps))
    print("| " + " | ".join(medians) + " |")
    print("|" + " --- |" * len(medians))
    print("| " + " | ".join(f"{v:.1f}" for v in medians.values()) + " |", flush=True)


def measure_setting(name: str, env: dict, args: argparse.Namespace, mindir: Path,
                    mnist: Path) -> dict:
    slow = name == "off" and not args.full_off
    # Without the fix the kernels are ~50x slower: fewer steps and calls keep the run short.
    steps, calls, batches = (8, 20, 2) if slow else (args.steps, 200, 10)
    py = sys.executable
    train = tagged(run([py, str(BENCH / "train_throughput.py"), "--worker", "ms", "--model",
                        MODEL, "--steps", str(steps), "--warmup", "3", "--batch_size", "128",
                        "--threads", str(os.cpu_count() or 1), "--ms_default_threads",
                        "--worker_data_dir", str(mnist)], env, args.timeout))
    infer = tagged(run([py, str(BENCH / "infer_throughput.py"), "--worker", "ms", "--model",
                        MODEL, "--calls", str(calls), "--batches", str(batches), "--warmup",
                        "2" if slow else "5", "--big_batch", "256", "--threads",
                        str(os.cpu_count() or 1)], env, args.timeout))
    app = tagged(run([py, str(Path(__file__).resolve()), "--worker", "app", "--mindir",
                      str(mindir), "--calls", str(calls if slow else 500)], env, args.timeout))
    result = {"train img/s": train["images_per_s"], "MindIR b256 img/s": infer["images_per_s"],
              "MindIR b1 ms": infer["latency_median_ms"], "app classify ms": app["latency_ms"],
              "predict command s": timed([py, "-m", "ms_resnet", "predict", "--mindir",
                                          str(mindir), str(EXAMPLE)], env, args.timeout)}
    if not slow:
        result["eval.py --mindir s"] = timed(
            [py, "eval.py", "--mindir", str(mindir), "--data_dir", str(mnist)], env,
            args.timeout)
    return result


def speed_ratio(med: dict, key: str, other: str) -> str:
    """auto's speed over `other`'s for the figure `key` (img/s: higher is faster; else time)."""
    if key not in med.get(other, {}):
        return "n/a"
    auto, theirs = med["auto"][key], med[other][key]
    return f"{auto / theirs if 'img/s' in key else theirs / auto:.2f}"


def paths_table(args: argparse.Namespace, work: Path, cache: Path, mnist: Path) -> None:
    mindir = Path(tagged(run([sys.executable, str(Path(__file__).resolve()), "--worker",
                              "export", "--out", str(work)], clean_env(cache, {}),
                             args.timeout))["mindir"])
    names = [name for name in SETTINGS if not (args.skip_off and name == "off")]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for rep in range(args.reps):
        # The order rotates, so that no setting always runs first or after the slow one.
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            runs[name].append(measure_setting(name, clean_env(cache, SETTINGS[name]), args,
                                              mindir, mnist))
            print(f"#   repetition {rep + 1}, {name}: done", file=sys.stderr, flush=True)
    med = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
           for name, rs in runs.items()}
    print(f"\n2. User-facing paths ({MODEL}), median of {args.reps}; speed ratios are "
          "auto's speed over the other's (>= 1: auto is as fast)\n")
    print("| path | auto | AVX2 by hand | off | auto / AVX2 by hand | auto / off |")
    print("|" + " --- |" * 6)
    for key in med["auto"]:
        cells = [f"{med[n][key]:.2f}" if key in med.get(n, {}) else "not run" for n in SETTINGS]
        ratios = [speed_ratio(med, key, other) for other in ("AVX2 by hand", "off")]
        print(f"| {key} | " + " | ".join(cells + ratios) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs}, indent=1), encoding="utf-8")


def drive(args: argparse.Namespace) -> None:
    mnist = find_mnist(args.data_dir, ("train", "test"))
    print(f"# {os.cpu_count()}-core {cpu_name()}; {time.strftime('%Y-%m-%d %H:%M')}; "
          f"{args.reps} interleaved repetitions, medians; MNIST from {mnist}")
    warn_if_busy()
    with tempfile.TemporaryDirectory(prefix="ms_resnet_cpu_isa_") as tmp:
        work = Path(tmp)
        cache = work / "cache"  # a fresh probe verdict, shared by every "auto" process
        verdict = run([sys.executable, "-m", "ms_resnet.cpu_isa"], clean_env(cache, {}),
                      args.timeout).stdout.strip()
        print(f"# ms_resnet's verdict here (auto): {verdict}", flush=True)
        if args.only != "paths":
            conv_table(args.reps, args.conv_batch)
        if args.only != "conv":
            paths_table(args, work, cache, mnist)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="oneDNN ISA caps: convolution GFLOPS per ISA, and ms_resnet's training, "
                    "MindIR, eval, predict and XiHe-app speed with its automatic choice, with "
                    "ONEDNN_MAX_CPU_ISA=AVX2 set by hand, and with the choice off.")
    parser.add_argument("--data_dir", help="MNIST folder (default: $MS_RESNET_DATA/mnist, "
                        "else ./data/mnist)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (medians reported)")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per run")
    parser.add_argument("--full_off", action="store_true",
                        help="time 'off' with the full step and call counts and run eval.py "
                        "under it too (slow: minutes per repetition)")
    parser.add_argument("--skip_off", action="store_true",
                        help="time only 'auto' and 'AVX2 by hand' (the comparison that matters "
                        "once the fix is known to work; 'off' is the slow part of a run)")
    parser.add_argument("--conv_batch", type=int, default=128,
                        help="batch of the per-ISA convolution (default: 128)")
    parser.add_argument("--only", choices=("conv", "paths"),
                        help="run only the per-ISA table or only the user-facing paths")
    parser.add_argument("--json", metavar="FILE", help="also write every repetition here")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per process")
    parser.add_argument("--worker", choices=("export", "app"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--mindir", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=200, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if min(args.reps, args.steps, args.conv_batch) < 1:
        build_parser().error("--reps, --steps and --conv_batch must be >= 1")
    if args.worker == "export":
        worker_export(Path(args.out))
    elif args.worker == "app":
        worker_app(Path(args.mindir), args.calls)
    else:
        drive(args)


if __name__ == "__main__":
    main()
