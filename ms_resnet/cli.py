"""The `ms-resnet` command: train, eval, export, predict, explain, convert, xihe-pack, download,
models, datasets.

Every subcommand turns a `UserError` into one `error: ...` line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Callable

from ms_resnet.config import CommandParser, number_option
from ms_resnet.cpu_isa import CpuIsaError
from ms_resnet.errors import TrainingInterrupted, UserError, WorkerFailed


def _train(argv: Sequence[str]) -> None:
    from ms_resnet.train import main

    main(argv)


def _eval(argv: Sequence[str]) -> None:
    from ms_resnet.evaluate import main

    main(argv)


def _export(argv: Sequence[str]) -> None:
    from ms_resnet.export import main

    main(argv)


def _predict(argv: Sequence[str]) -> None:
    from ms_resnet.predict import main

    main(argv)


def _explain(argv: Sequence[str]) -> None:
    from ms_resnet.explain import main

    main(argv)


def _convert(argv: Sequence[str]) -> None:
    from ms_resnet.convert import main

    main(argv)


def _xihe_pack(argv: Sequence[str]) -> None:
    from ms_resnet.xihe import main

    main(argv)


def _download(argv: Sequence[str]) -> None:
    from ms_resnet.data import DATASETS, get_dataset_info
    from ms_resnet.data.download import download
    from ms_resnet.data.prepare import resolve_data_dir

    parser = CommandParser(
        prog="ms-resnet download",
        description="Download a dataset's upstream files, verify their md5 and unpack archives.")
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--data_dir", help="target folder "
                        "(default: $MS_RESNET_DATA/<dataset>, else ./data/<dataset>)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per connection")
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir(args.dataset, args.data_dir)
    download(get_dataset_info(args.dataset), data_dir, args.timeout)
    print(f"{args.dataset} is ready in {data_dir}")


def _models(argv: Sequence[str]) -> None:
    parser = CommandParser(prog="ms-resnet models",
                           description="List the registered networks, or the layers of one.")
    parser.add_argument("--layers", metavar="MODEL",
                        help="list MODEL's layers that `ms-resnet explain --layer` accepts, with "
                             "their output shapes")
    parser.add_argument("--in_channels", type=number_option(int, 1), default=3,
                        help="input channels for --layers (default: 3)")
    parser.add_argument("--image_size", type=number_option(int, 8), default=32,
                        help="input size for --layers (default: 32)")
    args = parser.parse_args(argv)
    if not args.layers:
        from ms_resnet.models import list_models

        print("\n".join(list_models()))
        return
    from ms_resnet.cpu_isa import choose_cpu_isa
    from ms_resnet.gradcam import default_layer, layer_shapes
    from ms_resnet.models import create_model

    choose_cpu_isa()
    try:
        net = create_model(args.layers, in_channels=args.in_channels, image_size=args.image_size)
    except ValueError as exc:
        raise UserError(f"--layers: {exc}") from None
    print(f"{args.layers}, input {args.in_channels}x{args.image_size}x{args.image_size}:")
    default = default_layer(net, args.in_channels, args.image_size)
    for name, shape in layer_shapes(net, args.in_channels, args.image_size):
        mark = "  (default for explain)" if name == default else ""
        print(f"  {name:12s} {'x'.join(map(str, shape))}{mark}")


def _datasets(argv: Sequence[str]) -> None:
    from ms_resnet.data import DATASETS
    from ms_resnet.data.prepare import local_files, resolve_data_dir

    parser = CommandParser(
        prog="ms-resnet datasets",
        description="List the datasets, their files, and whether each is present locally "
                    "(in $MS_RESNET_DATA/<dataset>, else ./data/<dataset>).")
    parser.parse_args(argv)
    for name, info in DATASETS.items():
        data_dir = resolve_data_dir(name)
        print(f"{name:14s} {info.title}: {info.channels}x{info.image_size}x{info.image_size}, "
              f"{len(info.classes)} classes, folder {data_dir}")
        for file_name, present in local_files(info, data_dir):
            remote = next(f for f in info.files if f.name == file_name)
            mark = "present" if present else "missing"
            print(f"    [{mark}] {file_name}  md5 {remote.md5}")


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], None], str]] = {
    "train": (_train, "train a network (see `ms-resnet train --help`)"),
    "eval": (_eval, "evaluate a checkpoint or MindIR on the test split"),
    "export": (_export, "export a checkpoint to MindIR or ONNX, with a parity check"),
    "predict": (_predict, "classify image files (top-k classes with probabilities)"),
    "explain": (_explain, "Grad-CAM heat maps: where in each image the evidence is"),
    "convert": (_convert, "ImageNet ResNet weights of MindCV, torchvision, timm as a model"),
    "xihe-pack": (_xihe_pack, "prepare a trained model and the Gradio app for XiHe"),
    "download": (_download, "download a dataset and verify its md5"),
    "models": (_models, "list the registered networks"),
    "datasets": (_datasets, "list the datasets and which files are present"),
}


def run(command: str, argv: Sequence[str]) -> int:
    """Run one subcommand; return the process exit code."""
    try:
        COMMANDS[command][0](argv)
    except (UserError, CpuIsaError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WorkerFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into a reader that stopped early (`| head`): not worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:10s}{help}" for name, (_, help) in COMMANDS.items()]
        print("usage: ms-resnet COMMAND [options]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown command '{argv[0]}'", file=sys.stderr)
            sys.exit(2)
        sys.exit(0 if argv else 2)
    sys.exit(run(argv[0], argv[1:]))
