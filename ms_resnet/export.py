"""`python export.py` / `ms-resnet export`: checkpoint -> MindIR (or ONNX) plus a JSON sidecar."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import mindspore as ms
import numpy as np

from ms_resnet.checkpoint import config_for_checkpoint, load_weights
from ms_resnet.config import CommandParser
from ms_resnet.data import get_dataset_info
from ms_resnet.train import build_network, set_up_context

_SUFFIX = {"MINDIR": ".mindir", "ONNX": ".onnx"}


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="ms-resnet export",
        description="Export a checkpoint with mindspore.export; writes <file_name>.json beside "
                    "it with what inference needs (input shape, mean/std, class names).")
    parser.add_argument("--ckpt", required=True, help="checkpoint, e.g. ckpt/mnist/best.ckpt")
    parser.add_argument("--config", help="YAML config (default: config.yaml beside --ckpt)")
    parser.add_argument("--file_name", help="output path without suffix "
                        "(default: the checkpoint's path without .ckpt)")
    parser.add_argument("--file_format", default="MINDIR", choices=sorted(_SUFFIX))
    parser.add_argument("--batch_size", type=int, default=1, help="batch size of the input")
    return parser


def export_checkpoint(ckpt: Path, config_path: str | None = None,
                      file_name: str | None = None, file_format: str = "MINDIR",
                      batch_size: int = 1) -> Path:
    """Export `ckpt`; return the path of the exported file."""
    config = config_for_checkpoint(ckpt, config_path)
    set_up_context(config)
    info = get_dataset_info(config.dataset)
    net = build_network(config)
    load_weights(net, ckpt)
    net.set_train(False)
    base = Path(file_name) if file_name else ckpt.with_suffix("")
    shape = (batch_size, info.channels, info.image_size, info.image_size)
    ms.export(net, ms.Tensor(np.zeros(shape, np.float32)), file_name=str(base),
              file_format=file_format)
    sidecar = {"model": config.model, "dataset": config.dataset, "input_shape": list(shape),
               "channel_order": "NCHW", "pixel_scale": 1 / 255, "mean": list(info.mean),
               "std": list(info.std), "classes": list(info.classes)}
    base.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, ensure_ascii=False))
    return base.with_suffix(_SUFFIX[file_format])


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    path = export_checkpoint(Path(args.ckpt), args.config, args.file_name, args.file_format,
                             args.batch_size)
    print(f"exported {path} (+ {path.with_suffix('.json').name})")
