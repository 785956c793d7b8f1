"""`ms-resnet convert`: published ImageNet ResNet weights as an ms_resnet model folder.

Reads what ms_resnet.published reads (MindCV .ckpt, torchvision .pth, torchvision/timm
.safetensors) and writes what a training run writes: best.ckpt, config.yaml (the ImageNet
recipe: 224 px, ImageNet mean/std, the 1,000 class names), and best.mindir + best.json +
best_explain.mindir, exported with the usual parity check.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ms_resnet.config import CommandParser, Config, build_config, number_option
from ms_resnet.errors import CheckpointError, UserError
from ms_resnet.published import load_into, read_weights, source_layout, source_model, to_ms_resnet

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_CONFIG = ROOT / "configs" / "imagenet_resnet50.yaml"
IMAGENET_CLASSES = Path(__file__).resolve().parent / "data" / "imagenet_classes.txt"


def imagenet_classes() -> list[str]:
    return IMAGENET_CLASSES.read_text(encoding="utf-8").splitlines()


def converted_config(model: str, stem_pool_padding: str, num_classes: int, image_size: int,
                     data_dir: str | None) -> Config:
    """The ImageNet recipe (configs/imagenet_resnet50.yaml) for `model`, with the class names of
    the source's classifier."""
    classes = imagenet_classes() if num_classes == 1000 else [str(i) for i in range(num_classes)]
    return build_config(IMAGENET_CONFIG, {
        "model": model, "stem_pool_padding": stem_pool_padding, "classes": classes,
        "image_size": image_size, "data_dir": data_dir}, training=False)


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="ms-resnet convert",
        description="Convert published ResNet weights (a MindCV .ckpt, a torchvision .pth, a "
                    "torchvision/timm .safetensors) into an ms_resnet model folder: best.ckpt, "
                    "config.yaml (ImageNet recipe, 1,000 class names), best.mindir + best.json "
                    "+ best_explain.mindir, checked against each other.")
    parser.add_argument("source", help="weights file: .ckpt (MindCV), .pth (torchvision, needs "
                        "PyTorch) or .safetensors (torchvision, timm); or a published name, "
                        "downloaded once and hash-checked: torchvision:resnet50, "
                        "mindcv:resnet50, timm:resnet50.a1_in1k, ... (docs/own_images.md), or "
                        "a URL; with --to, an ms_resnet checkpoint or run folder")
    parser.add_argument("--out", required=True, help="output folder (with --to: a .pth or "
                        ".safetensors file)")
    parser.add_argument("--to", choices=["torchvision"],
                        help="the other way: SOURCE is an ms_resnet resnet18-152 checkpoint or "
                        "run folder, written as a torchvision state dict (torchvision.models."
                        "resnetN(num_classes=...).load_state_dict)")
    parser.add_argument("--model", help="resnet18, 34, 50, 101 or 152 (default: read from the "
                        "file; given, it must match)")
    parser.add_argument("--image_size", type=number_option(int, 65), default=224,
                        help="input size of the exported model (default: 224)")
    parser.add_argument("--data_dir", help="a folder of images in class folders (train/, test/) "
                        "for the export's parity check; default: random inputs")
    parser.add_argument("--parity_samples", type=number_option(int, 0), default=16,
                        help="inputs for the export's parity check")
    return parser


def convert(source: Path, out: Path, model: str | None = None, image_size: int = 224,
            data_dir: str | None = None, parity_samples: int = 16) -> Path:
    """Write the model folder; return its best.ckpt."""
    from ms_resnet.callbacks import checkpoint_file
    from ms_resnet.cpu_isa import choose_cpu_isa
    from ms_resnet.export import export_checkpoint
    from ms_resnet.files import check_writable, write_files
    from ms_resnet.network import build_network
    from ms_resnet.runtime import set_up_context

    check_writable(out, "--out")
    weights = read_weights(source)
    layout = source_layout(weights, source)
    found = source_model(weights, source)
    if model and model != found:
        raise CheckpointError(f"{source}: a {found} file, not {model} (--model)")
    mapped = to_ms_resnet(weights, layout)
    num_classes = int(mapped["fc.weight"].shape[0]) if "fc.weight" in mapped else 1000
    config = converted_config(found, "same" if layout == "mindcv" else "symmetric", num_classes,
                              image_size, data_dir)
    choose_cpu_isa()
    set_up_context(config)
    net = build_network(config)
    load_into(net, mapped, source, found)
    ckpt = out / "best.ckpt"
    config.ckpt_dir = str(out)
    from ms_resnet.config import save_config

    write_files([checkpoint_file(net, ckpt)])
    save_config(config, out / "config.yaml")
    print(f"{source}: {layout} {found}, {sum(v.size for v in mapped.values()):,} values -> {ckpt}")
    export_checkpoint(ckpt, parity_samples=parity_samples, data_dir=data_dir)
    return ckpt


def to_torchvision_file(source: Path, out: Path) -> Path:
    """Write an ms_resnet resnet18-152 checkpoint (or a run folder's best.ckpt) as a torchvision
    state dict: .safetensors (needs only `safetensors`) or .pth (needs PyTorch)."""
    import numpy as np

    from ms_resnet.checkpoint import config_for_checkpoint
    from ms_resnet.dataspec import dataset_info
    from ms_resnet.files import NewFile, write_files
    from ms_resnet.models import IMAGENET_RESNETS
    from ms_resnet.published import to_torchvision
    from ms_resnet.runtime import load_ckpt

    ckpt = source / "best.ckpt" if source.is_dir() else source
    if out.suffix.lower() not in (".pth", ".safetensors"):
        raise UserError(f"--out {out}: expected a .pth or .safetensors file name")
    config = config_for_checkpoint(ckpt, None)
    if config.model not in IMAGENET_RESNETS:
        raise UserError(f"{ckpt}: a {config.model}; torchvision has {', '.join(IMAGENET_RESNETS)} "
                        "only")
    channels = dataset_info(config).channels
    if config.stem_pool_padding != "symmetric" or channels != 3:
        raise UserError(f"{ckpt}: {config.model} with {channels} input channel(s) and "
                        f"stem_pool_padding {config.stem_pool_padding}; torchvision's takes 3 "
                        "and pads its stem pool symmetrically: refusing a conversion that would "
                        "change the outputs")
    state = to_torchvision({name: value.asnumpy() for name, value in load_ckpt(ckpt).items()})
    if out.suffix.lower() == ".safetensors":
        from safetensors.numpy import save_file

        def write(tmp: Path) -> None:
            save_file({name: np.ascontiguousarray(value) for name, value in state.items()},
                      str(tmp))
    else:
        try:
            import torch
        except ImportError:
            raise UserError(f"--out {out}: writing a .pth file needs PyTorch (pip install "
                            "torch); a .safetensors file needs only `pip install safetensors`"
                            ) from None

        def write(tmp: Path) -> None:
            torch.save({name: torch.from_numpy(np.array(value)) for name, value in state.items()},
                       tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_files([NewFile(out, write, sum(value.nbytes for value in state.values()))])
    classes = state["fc.weight"].shape[0]
    print(f"{ckpt}: {config.model} -> {out} (torchvision.models.{config.model}"
          f"(num_classes={classes}).load_state_dict)")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.to:
        to_torchvision_file(Path(args.source), Path(args.out))
        return
    from ms_resnet.weights import is_named, resolve

    source = resolve(args.source) if is_named(args.source) else Path(args.source)
    convert(source, Path(args.out), args.model, args.image_size, args.data_dir,
            args.parity_samples)
