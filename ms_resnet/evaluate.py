"""`python eval.py` / `ms-resnet eval`: test loss, accuracy and per-class accuracy of a checkpoint."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from mindspore import Tensor

from ms_resnet.checkpoint import config_for_checkpoint, load_weights
from ms_resnet.config import CommandParser
from ms_resnet.data import get_dataset_info
from ms_resnet.data.pipeline import create_dataset
from ms_resnet.train import build_network, set_up_context


def predict_split(net, data) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of every image in a batched dataset."""
    net.set_train(False)
    logits, labels = [], []
    for image, label in data.create_tuple_iterator(num_epochs=1, output_numpy=True):
        logits.append(net(Tensor(image)).asnumpy())
        labels.append(label)
    return np.concatenate(logits), np.concatenate(labels)


def summarize(logits: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict:
    """Mean cross-entropy, top-1 accuracy and per-class accuracy."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(labels)), labels].mean())
    correct = logits.argmax(axis=1) == labels
    per_class = {name: float(correct[labels == i].mean()) if (labels == i).any() else None
                 for i, name in enumerate(classes)}
    return {"accuracy": float(correct.mean()), "loss": loss, "num_samples": len(labels),
            "per_class_accuracy": per_class}


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="ms-resnet eval", description="Evaluate a checkpoint on the test split.")
    parser.add_argument("--ckpt", required=True, help="checkpoint, e.g. ckpt/mnist/best.ckpt")
    parser.add_argument("--config", help="YAML config (default: config.yaml beside --ckpt)")
    parser.add_argument("--data_dir", help="dataset folder (default: as in training)")
    parser.add_argument("--num_samples", type=int, help="evaluate only the first N test images")
    parser.add_argument("--batch_size", type=int, help="evaluation batch size")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    ckpt = Path(args.ckpt)
    overrides = {k: v for k, v in (("data_dir", args.data_dir),
                                   ("eval_batch_size", args.batch_size)) if v is not None}
    config = config_for_checkpoint(ckpt, args.config, overrides)
    set_up_context(config)
    info = get_dataset_info(config.dataset)
    net = build_network(config)
    load_weights(net, ckpt)
    data = create_dataset(config.dataset, "test", config.eval_batch_size,
                          data_dir=config.data_dir, num_samples=args.num_samples,
                          num_parallel_workers=config.num_parallel_workers)
    results = summarize(*predict_split(net, data), info.classes)
    print(f"{ckpt}: {config.model} on {info.title} test split, {results['num_samples']} images: "
          f"test loss {results['loss']:.4f}, test accuracy {results['accuracy']:.2%}")
    for name, accuracy in results["per_class_accuracy"].items():
        shown = "n/a" if accuracy is None else f"{accuracy:.2%}"
        print(f"  {name:>14s}: {shown}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False))
