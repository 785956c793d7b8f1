"""`python train.py` / `ms-resnet train`: config -> dataset -> model -> Model.train -> best.ckpt."""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from pathlib import Path

import mindspore as ms
import mindspore.dataset as ds
from mindspore import nn
from mindspore.train import Accuracy, Model

from ms_resnet.callbacks import EvalCheckpoint, MeanLoss, ProgressBar
from ms_resnet.config import (
    CommandParser,
    Config,
    add_config_arguments,
    config_from_args,
    save_config,
)
from ms_resnet.data import get_dataset_info
from ms_resnet.data.pipeline import create_dataset
from ms_resnet.errors import UserError
from ms_resnet.models import create_model
from ms_resnet.optim import create_optimizer

DEFAULT_CONFIG = "configs/mnist.yaml"


class EvalNet(nn.Cell):
    """Outputs (per-image loss, logits, label) so one pass gives both accuracy and loss."""

    def __init__(self, net: nn.Cell) -> None:
        super().__init__(auto_prefix=False)
        self.net = net
        self.loss = nn.CrossEntropyLoss(reduction="none")

    def construct(self, image, label):
        logits = self.net(image)
        return self.loss(logits, label), logits, label


def set_up_context(config: Config) -> None:
    """Execution mode, device and every random seed (same seed => same metrics)."""
    mode = ms.GRAPH_MODE if config.mode == "graph" else ms.PYNATIVE_MODE
    ms.set_context(mode=mode)
    ms.set_device(config.device_target)
    ms.set_seed(config.seed)
    ds.config.set_seed(config.seed)


def build_network(config: Config) -> nn.Cell:
    info = get_dataset_info(config.dataset)
    kwargs = {"zero_init_residual": config.zero_init_residual}
    if config.shortcut:
        kwargs["shortcut"] = config.shortcut
    return create_model(config.model, num_classes=len(info.classes), in_channels=info.channels,
                        image_size=info.image_size, **kwargs)


def build_eval_model(net: nn.Cell) -> Model:
    return Model(net, eval_network=EvalNet(net), eval_indexes=[0, 1, 2],
                 metrics={"accuracy": Accuracy(), "loss": MeanLoss()})


def run_training(config: Config) -> dict:
    """Train with `config`; return the metrics that were written to metrics.json."""
    set_up_context(config)
    ckpt_dir = Path(config.ckpt_dir)
    train_data = create_dataset(config.dataset, "train", config.batch_size,
                                data_dir=config.data_dir, augment=config.augment,
                                num_samples=config.num_samples,
                                num_parallel_workers=config.num_parallel_workers)
    test_data = create_dataset(config.dataset, "test", config.eval_batch_size,
                               data_dir=config.data_dir, num_samples=config.eval_num_samples,
                               num_parallel_workers=config.num_parallel_workers)
    steps = train_data.get_dataset_size()
    if steps == 0:
        raise UserError(f"batch_size {config.batch_size} is larger than the training set; "
                        "lower --batch_size or raise --num_samples")
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, ckpt_dir / "config.yaml")
    except OSError as exc:
        raise UserError(f"ckpt_dir {ckpt_dir}: cannot write there ({exc.strerror})") from None

    net = build_network(config)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    optimizer = create_optimizer(net, config, steps)
    eval_model = build_eval_model(net)
    model = Model(net, loss_fn=loss_fn, optimizer=optimizer)

    progress = ProgressBar(config.batch_size, config.epochs)
    header = {"config": config.to_dict(), "mindspore": ms.__version__,
              "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    evaluator = EvalCheckpoint(net, lambda: eval_model.eval(test_data, dataset_sink_mode=False),
                               progress, ckpt_dir, config.epochs, header)
    params = sum(p.size for p in net.trainable_params())
    print(f"training {config.model} ({params / 1e6:.2f}M parameters) on {config.dataset}: "
          f"{steps} steps x {config.batch_size} images per epoch, {config.epochs} epochs, "
          f"{config.mode} mode on {config.device_target}; output in {ckpt_dir}", flush=True)
    started = time.perf_counter()
    model.train(config.epochs, train_data, callbacks=[progress, evaluator],
                dataset_sink_mode=False)
    metrics = evaluator.metrics
    print(f"done in {time.perf_counter() - started:.0f} s: best test accuracy "
          f"{metrics['best_accuracy']:.2%} at epoch {metrics['best_epoch']}, "
          f"checkpoint {evaluator.best_path}", flush=True)
    if config.export_mindir:
        from ms_resnet.export import export_checkpoint

        export_checkpoint(evaluator.best_path, str(ckpt_dir / "config.yaml"))
    return metrics


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="ms-resnet train",
        description="Train a ResNet; every config key can be overridden as --key value.")
    add_config_arguments(parser, DEFAULT_CONFIG)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    config = config_from_args(build_parser(), argv)
    run_training(config)
