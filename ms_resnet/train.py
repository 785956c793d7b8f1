"""`python train.py` / `ms-resnet train`: config -> dataset -> model -> Model.train -> best.ckpt."""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import mindspore as ms
import mindspore.dataset as ds
from mindspore import nn
from mindspore.train import Model

from ms_resnet.callbacks import EvalCheckpoint, EvalTotals, ProgressBar, StopSignal
from ms_resnet.checkpoint import (
    freeze_backbone,
    load_pretrained,
    load_training_state,
    read_extras,
)
from ms_resnet.config import (
    CommandParser,
    Config,
    ConfigError,
    add_config_arguments,
    build_config,
    parse_config_args,
    save_config,
)
from ms_resnet.data.folder import translate_decode_error
from ms_resnet.dataspec import complete_folder_config, create_split
from ms_resnet.device import amp_workspace, apply_jit_level, device_summary, model_options
from ms_resnet.ema import WeightAverage
from ms_resnet.errors import UserError, WorkerFailed
from ms_resnet.files import folder_lock, read_json
from ms_resnet.msrun_report import banner, failure_line
from ms_resnet.network import (
    build_network,
    build_second_network,
    float32_twin,
    inference_network,
)
from ms_resnet.optim import create_optimizer
from ms_resnet.parallel import RankSum, average_moving_statistics
from ms_resnet.runtime import machine_description, parameter_digest, set_up_context
from ms_resnet.train_accuracy import COUNTER_NAMES, CountingLoss
from ms_resnet.whitening import freeze, whiten, whitening_conv, whitening_sample

DEFAULT_CONFIG = "configs/mnist.yaml"
# Keys that may differ when resuming: where things are, not what is trained (`distribute` is
# checked as the number of workers, see _check_resume_workers).
RESUME_MAY_CHANGE = {"data_dir", "ckpt_dir", "num_parallel_workers", "export_mindir",
                     "device_id", "distribute"}


class EvalNet(nn.Cell):
    """Outputs (per-image loss, logits, label) so one pass gives both accuracy and loss."""

    def __init__(self, net: nn.Cell) -> None:
        super().__init__(auto_prefix=False)
        self.net = net
        self.loss = nn.CrossEntropyLoss(reduction="none")

    def construct(self, image, label):
        logits = self.net(image)
        return self.loss(logits, label), logits, label


def build_eval_model(net: nn.Cell) -> Model:
    # No eval_indexes: EvalTotals takes all three outputs at once.
    return Model(net, eval_network=EvalNet(net), metrics={"totals": EvalTotals()})


def data_parallel_evaluation(eval_model: Model, test_shard: ds.Dataset, evaluated_net: nn.Cell,
                             workers: int) -> Callable[[], dict]:
    """Evaluation of the whole test set in which every rank evaluates its shard: the ranks'
    BN statistics are averaged first (ms_resnet.parallel says why), so that every rank evaluates
    the same network, the one best.ckpt saves; the correct counts and loss sums are then summed
    over the ranks. With one worker, the whole test set in this process."""
    rank_sum = RankSum(workers)

    def evaluate() -> dict:
        average_moving_statistics(evaluated_net, rank_sum)
        totals = eval_model.eval(test_shard, dataset_sink_mode=False)["totals"]
        correct, loss_sum, images = rank_sum(totals)
        return {"accuracy": correct / images, "loss": loss_sum / images, "images": images}

    return evaluate


def _prepare_output(ckpt_dir: Path, resuming: bool, overwrite: bool, stack: ExitStack) -> None:
    """Hold the folder for this run (a second run into it is refused), refuse to clobber an
    earlier run, and find out now (not after an epoch) if the folder cannot be written."""
    if ckpt_dir.exists() and not ckpt_dir.is_dir():
        raise UserError(f"ckpt_dir {ckpt_dir}: cannot write there (a file, not a folder)")
    stack.enter_context(folder_lock(ckpt_dir))
    earlier = [p.name for p in (ckpt_dir / "best.ckpt", ckpt_dir / "last.ckpt") if p.exists()]
    if earlier and not (resuming or overwrite):
        raise UserError(f"{ckpt_dir} already holds a training run ({', '.join(earlier)}); "
                        "continue it with --resume, or start over with --overwrite "
                        "(or choose another --ckpt_dir)")


def _resumed_metrics(ckpt_dir: Path, state: dict, header: dict) -> dict:
    """metrics.json up to the resumed epoch, and the best accuracy that best.ckpt really holds."""
    metrics = dict(header, best_accuracy=None, best_epoch=None, epochs=[])
    path = ckpt_dir / "metrics.json"
    if path.is_file():
        saved = read_json(path)
        metrics["epochs"] = [e for e in saved.get("epochs", []) if e["epoch"] <= state["epoch"]]
    best = read_extras(ckpt_dir / "best.ckpt")
    if "accuracy" in best:
        metrics.update(best_accuracy=best["accuracy"], best_epoch=best["epoch"])
    return metrics


def run_training(config: Config, resume: Path | None = None, overwrite: bool = False) -> dict:
    """Train with `config` (continuing from the last.ckpt `resume`); return the metrics that
    were written to metrics.json."""
    with ExitStack() as stack:  # holds the ckpt_dir's lock until the run ends
        return _run_training(config, resume, overwrite, stack)


def _run_training(config: Config, resume: Path | None, overwrite: bool,
                  stack: ExitStack) -> dict:
    rank, workers, cpu_isa = set_up_context(config)
    is_main = rank == 0
    ckpt_dir = Path(config.ckpt_dir)
    if workers > 1:
        # Lets the launcher's failure summary (ms_resnet.msrun_report) name ranks, not pids.
        print(banner(rank, workers, os.getpid(), socket.gethostname()), file=sys.stderr,
              flush=True)
    if resume is not None:
        _check_resume_workers(resume, workers)
    if workers > 1 and config.eval_num_samples and config.eval_num_samples < workers:
        raise ConfigError(f"eval_num_samples {config.eval_num_samples} is smaller than the "
                          f"number of workers ({workers}): each evaluates its share of the test "
                          "set")
    if is_main:
        _prepare_output(ckpt_dir, resume is not None, overwrite, stack)
    shards = {"num_shards": workers, "shard_id": rank} if workers > 1 else {}
    complete_folder_config(config)  # --dataset folder: class names, mean/std from the folder
    train_data = create_split(config, "train", config.batch_size, augment=config.augment,
                              random_erasing=config.random_erasing,
                              num_samples=config.num_samples,
                              num_parallel_workers=config.num_parallel_workers, **shards)
    # Under data parallelism each rank evaluates a disjoint shard: every test image once.
    test_data = create_split(config, "test", config.eval_batch_size,
                             num_samples=config.eval_num_samples,
                             num_parallel_workers=config.num_parallel_workers, **shards)
    steps = train_data.get_dataset_size()
    if steps == 0:
        raise UserError(f"batch_size {config.batch_size} is larger than the training set; "
                        "lower --batch_size or raise --num_samples")

    net = build_network(config)
    if config.pretrained and resume is None:
        from ms_resnet.weights import is_named, resolve

        pretrained = (resolve(config.pretrained) if is_named(config.pretrained)
                      else Path(config.pretrained))
        reinitialised = load_pretrained(net, pretrained, config.model)
        print(f"pretrained {config.pretrained}: re-initialised (shape differs): "
              f"{', '.join(reinitialised) or 'none'}", flush=True)
    if config.freeze_backbone:
        print(f"freeze_backbone: training only {', '.join(freeze_backbone(net))}", flush=True)
    if config.whiten_stem:
        stem = whitening_conv(net, config.model)
        if resume is None and not config.pretrained:
            whiten(stem, whitening_sample(config))
        freeze(stem)
    net = apply_jit_level(net, config)
    # The loss also counts the training batches' correct predictions (train_accuracy).
    loss_fn = CountingLoss(nn.CrossEntropyLoss(label_smoothing=config.label_smoothing))
    with amp_workspace(config):
        model = Model(net, loss_fn=loss_fn,
                      optimizer=create_optimizer(net, config, steps, workers),
                      **model_options(config))
    # What is evaluated, saved to best.ckpt (`best_state`) and to last.ckpt (`training_state`).
    evaluated_net, best_state, training_state = net, net, model.train_network
    averager = None
    if config.ema_decay:
        averager = WeightAverage(net, build_second_network(config), config.ema_decay)
        evaluated_net, best_state = averager.network, averager.network_entries()
        training_state = [*model.train_network.get_parameters(), *averager.state_parameters()]
    elif config.amp_level != "O0":
        # amp cast `net` to float16 in place; evaluate in float32 as eval.py and the MindIR do,
        # so best.ckpt's recorded accuracy is the one they reproduce. (The average above is a
        # float32 network already.)
        evaluated_net = best_state = float32_twin(net, config)
    eval_model = build_eval_model(inference_network(evaluated_net, config))
    apply_jit_level(eval_model.eval_network, config)
    header = {"config": config.to_dict(), "mindspore": ms.__version__,
              "machine": machine_description(), "onednn_isa": cpu_isa.summary(),
              "workers": workers,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    epochs_done, first_step, first_loss_sum, counts_known = 0, 0, 0.0, True
    if resume is None:
        metrics = dict(header, best_accuracy=None, best_epoch=None, epochs=[])
    else:
        state = load_training_state(model.train_network, resume, optional=COUNTER_NAMES)
        if averager:
            averager.load_state(resume)
        epochs_done, first_step = int(state["epoch"]), int(state["step"])
        # A last.ckpt from before loss_sum was saved cannot give the resumed epoch's mean loss.
        first_loss_sum = float(state.get("loss_sum", math.nan if first_step else 0.0))
        # Nor can one from before the training-accuracy counters give its train_accuracy.
        counts_known = not (first_step and state.get("missing"))
        metrics = _resumed_metrics(ckpt_dir, state, header)
        if epochs_done >= config.epochs:
            print(f"{resume}: training already finished ({epochs_done} of {config.epochs} "
                  "epochs); nothing to resume")
            return metrics
        # Replay the data pipeline's random state up to where the run stopped.
        ds.config.set_fast_recovery(False)
        train_data.set_init_step(epochs_done * steps + first_step)
        print(f"resuming from {resume}: epoch {epochs_done + 1}, step {first_step + 1} of "
              f"{steps}", flush=True)

    config_written = []

    def save_config_once() -> None:
        # Written with the first checkpoint, so a run that fails early leaves an earlier run's
        # files as they were.
        if not config_written:
            save_config(config, ckpt_dir / "config.yaml")
            config_written.append(True)

    progress = ProgressBar(config.batch_size * workers, config.epochs, first_step,
                           first_loss_sum, enabled=is_main, counter=loss_fn,
                           first_counts_known=counts_known)
    params = sum(p.size for p in net.trainable_params())
    log = print if is_main else (lambda *args, **kwargs: None)
    scale = f" on {workers} workers" if workers > 1 else ""
    isa_note = f" (oneDNN ISA: {cpu_isa.summary()})" if config.device_target == "CPU" else ""
    isa_note += device_summary(config)
    log(f"training {config.model} ({params / 1e6:.2f}M parameters) on {config.dataset}: "
        f"{steps} steps x {config.batch_size * workers} images per epoch{scale}, "
        f"{config.epochs} epochs, {config.mode} mode on {config.device_target}"
        f"{isa_note}; output in {ckpt_dir}", flush=True)
    started = time.perf_counter()
    stop = StopSignal()
    resume_hint = (f"python train.py --resume {ckpt_dir / 'last.ckpt'}" if workers == 1 else
                   f"bash scripts/run_distribute_train.sh {workers} --ckpt_dir {ckpt_dir} --resume")
    with stop:
        evaluator = EvalCheckpoint(
            best_state, training_state,
            data_parallel_evaluation(eval_model, test_data, evaluated_net, workers), progress,
            ckpt_dir, config.epochs, metrics, stop, resume_hint, save_config_once, is_main,
            workers)
        callbacks = [progress, *([averager] if averager else []), evaluator]
        try:
            with translate_decode_error():
                model.train(config.epochs, train_data, callbacks=callbacks,
                            dataset_sink_mode=config.dataset_sink_mode,
                            sink_size=config.sink_size, initial_epoch=epochs_done)
        except RuntimeError as exc:
            if workers == 1:
                raise
            # Mostly a collective that timed out because another rank died or stalled.
            raise WorkerFailed(failure_line(rank, progress.epoch, progress.step_in_epoch,
                                            steps, evaluator.evaluating, str(exc))) from None
        evaluator.finish()
    if workers > 1:
        # After the last collective: from here on rank 0 may take as long as it needs (the
        # export below) while the others exit.
        print(f"rank {rank}: trainable parameter sha256 {parameter_digest(net)}", flush=True)
        print(f"rank {rank}: evaluated network sha256 "
              f"{parameter_digest(evaluated_net, trainable_only=False)}", flush=True)
    if not is_main:
        return metrics
    print(f"done in {time.perf_counter() - started:.0f} s: best test accuracy "
          f"{metrics['best_accuracy']:.2%} at epoch {metrics['best_epoch']}, "
          f"checkpoint {evaluator.best_path}", flush=True)
    if config.export_mindir:
        from ms_resnet.export import export_checkpoint

        export_checkpoint(evaluator.best_path, str(ckpt_dir / "config.yaml"),
                          parity_samples=min(256, config.eval_num_samples or 256))
    return metrics


def _check_resume_workers(last_ckpt: Path, workers: int) -> None:
    """The data shards, the steps per epoch and the scaled learning rate all depend on the
    number of workers: a run continues only on as many as it started with."""
    saved = read_extras(last_ckpt).get("workers")
    metrics_file = last_ckpt.parent / "metrics.json"
    if saved is None and metrics_file.is_file():  # a last.ckpt from before "workers" was saved
        saved = read_json(metrics_file).get("workers")
    if saved is not None and int(saved) != workers:
        how = ("python train.py --resume" if saved == 1 else
               f"bash scripts/run_distribute_train.sh {saved} ... --resume")
        raise ConfigError(f"{last_ckpt}: written by a run on {saved} worker(s), so it resumes "
                          f"only on {saved} (this run has {workers}; the data shards, steps per "
                          f"epoch and scaled learning rate depend on the count): use {how}")


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="ms-resnet train",
        description="Train a ResNet; every config key can be overridden as --key value. "
                    "--data_url and --output_path (XiHe training jobs) are aliases of "
                    "--data_dir and --ckpt_dir.")
    add_config_arguments(parser, DEFAULT_CONFIG)
    run = parser.add_argument_group("run control")
    run.add_argument("--resume", nargs="?", const="auto", metavar="LAST_CKPT",
                     help="continue an interrupted run from its last.ckpt (default: "
                     "<ckpt_dir>/last.ckpt), with the config saved beside it")
    run.add_argument("--overwrite", action="store_true",
                     help="start over in a ckpt_dir that already holds a run")
    return parser


def _resume_config(last_ckpt: Path, overrides: dict) -> Config:
    saved = last_ckpt.parent / "config.yaml"
    if not last_ckpt.is_file() or not saved.is_file():
        missing = last_ckpt if not last_ckpt.is_file() else saved
        raise UserError(f"cannot resume: {missing} not found (was the run started with this "
                        "--ckpt_dir?)")
    original = build_config(saved)
    changed = {k: v for k, v in overrides.items() if k not in RESUME_MAY_CHANGE}
    resumed = build_config(saved, {**overrides, "ckpt_dir": str(last_ckpt.parent)})
    for key in changed:
        if getattr(resumed, key) != getattr(original, key):
            raise ConfigError(f"command line: {key} cannot change when resuming (the run used "
                              f"{getattr(original, key)!r}); only "
                              f"{', '.join(sorted(RESUME_MAY_CHANGE))} may")
    return resumed


# XiHe (and ModelArts-style) training jobs start the boot file with these names.
PLATFORM_ALIASES = {"--data_url": "--data_dir", "--output_path": "--ckpt_dir"}


def _platform_aliases(argv: Sequence[str]) -> list[str]:
    renamed = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        renamed.append(PLATFORM_ALIASES.get(name, name) + sep + value)
    return renamed


def main(argv: Sequence[str] | None = None) -> None:
    argv = _platform_aliases(sys.argv[1:] if argv is None else argv)
    args, overrides = parse_config_args(build_parser(), argv)
    config = build_config(args.config, overrides)
    resume = None
    if args.resume and "pretrained" in overrides:
        raise ConfigError("command line: --pretrained starts a new run from a checkpoint's "
                          "weights and --resume continues an interrupted one; give only one")
    if args.resume:
        resume = (Path(config.ckpt_dir) / "last.ckpt" if args.resume == "auto"
                  else Path(args.resume))
        config = _resume_config(resume, overrides)
    run_training(config, resume, args.overwrite)
