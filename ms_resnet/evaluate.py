"""`python eval.py` / `ms-resnet eval`: test loss, accuracy, per-class accuracy, prediction grid and
plots, for a checkpoint or an exported MindIR."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ms_resnet.config import CommandParser, number_option
from ms_resnet.data.folder import translate_decode_error
from ms_resnet.data.pipeline import create_dataset
from ms_resnet.errors import UserError
from ms_resnet.explain import display_images, load_explainer
from ms_resnet.files import check_writable, read_json, write_json
from ms_resnet.inference import Classifier, add_device_argument, load_classifier


def run_test_split(classifier: Classifier, data, keep_images: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits and labels of every test image, and the first `keep_images` network inputs."""
    logits, labels, kept = [], [], []
    count = 0
    for images, label in data.create_tuple_iterator(num_epochs=1, output_numpy=True):
        logits.append(classifier.logits(images))
        labels.append(label)
        if count < keep_images:
            kept.append(images[:keep_images - count])
        count += len(label)
    shown = np.concatenate(kept) if kept else np.zeros((0,), np.float32)
    return np.concatenate(logits), np.concatenate(labels), shown


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


def gradcam_grid(classifier: Classifier, inputs: np.ndarray, images: np.ndarray,
                 predicted: list[str], actual: list[str], output_dir: Path) -> list[Path]:
    """gradcam.png: the prediction grid with each image's Grad-CAM map of its predicted class;
    nothing (and a note) for a MindIR exported without an explain graph."""
    from ms_resnet import plots

    try:
        explainer = load_explainer(classifier)
    except UserError as exc:
        print(f"note: no gradcam.png: {exc}")
        return []
    # The classifier's own predictions: under eval_translate the explain graph's logits are
    # the flip-averaged ones only, which may rank the classes differently.
    chosen = [classifier.classes.index(name) for name in predicted]
    maps = explainer.explain(inputs, chosen).maps
    return [plots.save_prediction_grid(images, predicted, actual, output_dir / "gradcam.png",
                                       heat=maps)]


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="ms-resnet eval",
        description="Evaluate a checkpoint or an exported MindIR on the test split.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="checkpoint, e.g. ckpt/mnist/best.ckpt")
    source.add_argument("--mindir", help="exported MindIR (with its .json sidecar beside it); "
                        "runs through mindspore.load + nn.GraphCell, without the model code")
    parser.add_argument("--config", help="YAML config for --ckpt "
                        "(default: config.yaml beside the checkpoint)")
    parser.add_argument("--data_dir", help="dataset folder (default: as in training, else "
                        "$MS_RESNET_DATA/<dataset>, else ./data/<dataset>); for a folder "
                        "model, test/ or val/ alone will do")
    parser.add_argument("--num_samples", type=number_option(int, 1),
                        help="evaluate only the first N test images")
    parser.add_argument("--batch_size", type=number_option(int, 1), default=256,
                        help="evaluation batch size")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--predict", type=number_option(int, 0), default=0, metavar="N",
                        help="print predicted/actual for the first N test images and save them "
                        "as a grid PNG")
    parser.add_argument("--plots", action="store_true",
                        help="save the confusion matrix and the training curves (from "
                        "metrics.json beside the model) as PNGs; with --predict N, also "
                        "gradcam.png: the N images with their Grad-CAM heat maps")
    parser.add_argument("--output_dir", help="where PNGs go (default: the model's folder)")
    parser.add_argument("--show", action="store_true",
                        help="also open the prediction grid in a window when a display exists "
                        "(one window, never one per image)")
    add_device_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    # Output places are checked before the evaluation, not after it.
    if args.json:
        check_writable(Path(args.json).parent, "--json")
        if Path(args.json).is_dir():
            raise UserError(f"--json {args.json}: a folder; give a file name")
    if args.output_dir and (args.plots or args.predict):
        check_writable(Path(args.output_dir), "--output_dir")
    classifier = load_classifier(args.ckpt, args.mindir, args.config,
                                 device_target=args.device_target)
    data_dir = args.data_dir or (classifier.config.data_dir if classifier.config else None)
    if classifier.folder and not data_dir:
        raise UserError(f"{classifier.source}: trained on a folder of images; give --data_dir "
                        "(the folder holding train/ and test/ or val/)")
    data = create_dataset(classifier.dataset, "test", args.batch_size, data_dir=data_dir,
                          num_samples=args.num_samples, folder=classifier.folder)
    with translate_decode_error():
        logits, labels, inputs = run_test_split(classifier, data, keep_images=args.predict)
    results = summarize(logits, labels, classifier.classes)
    print(f"{classifier.source}: {results['num_samples']} test images of {classifier.title}: "
          f"test loss {results['loss']:.4f}, test accuracy {results['accuracy']:.2%}")
    per_class = results["per_class_accuracy"]
    untested = [name for name, accuracy in per_class.items() if accuracy is None]
    for name, accuracy in per_class.items():
        # A subset of many classes (ImageNet's 1,000): only the classes that were tested.
        if accuracy is not None or len(untested) <= 10:
            print(f"  {name:>14s}: {'n/a' if accuracy is None else f'{accuracy:.2%}'}")
    if len(untested) > 10:
        print(f"  ({len(untested)} of the {len(per_class)} classes have no test images)")
    if args.json:
        write_json(Path(args.json), results)
    if not (args.predict or args.plots):
        return

    from ms_resnet import plots

    model_dir = Path(classifier.source).parent
    output_dir = Path(args.output_dir) if args.output_dir else model_dir
    predictions = logits.argmax(axis=1)
    names = classifier.classes
    saved = []
    if args.predict:
        shown = len(inputs)
        images = display_images(inputs, classifier.mean, classifier.std)
        predicted = [names[i] for i in predictions[:shown]]
        actual = [names[i] for i in labels[:shown]]
        for p, a in zip(predicted, actual):
            print(f'predicted: "{p}", actual: "{a}"')
        saved.append(plots.save_prediction_grid(images, predicted, actual,
                                                output_dir / "predictions.png", show=args.show))
        if args.plots:
            saved += gradcam_grid(classifier, inputs, images, predicted, actual, output_dir)
    if args.plots:
        saved.append(plots.save_confusion_matrix(labels, predictions, names,
                                                 output_dir / "confusion_matrix.png"))
        metrics_file = model_dir / "metrics.json"
        if metrics_file.is_file():
            metrics = read_json(metrics_file)
            saved.append(plots.save_training_curves(metrics, output_dir / "training_curves.png"))
    print("saved " + ", ".join(str(p) for p in saved))
