"""A Gradio app that classifies images with a MindIR exported by ms_resnet.

Made for the XiHe (昇思大模型平台) inference runtime, and runs the same anywhere: XiHe downloads
the files listed in `config.json` ("model_path") next to this file, runs
`pip install -r requirements.txt`, then `python3 app.py`, and serves port 7860.

The network comes from the MindIR file; its JSON sidecar (written by `ms-resnet export` beside
it) holds the input shape, normalisation and class names. When the sidecar names an explain
graph (`best_explain.mindir`, also written by `ms-resnet export`), the app shows a Grad-CAM heat
map beside the answer: where in the image the network found its evidence. This file needs only
mindspore, numpy, Pillow, gradio, matplotlib (a dependency of gradio: its colour map) and
`cpu_isa.py` beside it (ms_resnet's choice of oneDNN's CPU ISA, which needs only the standard
library), and keeps to Python 3.9 syntax (XiHe's image).

Local use:
    python app.py --model ../ckpt/mnist/best.mindir [--port 7860] [--host 127.0.0.1]
The model is --model, else $MS_RESNET_MODEL, else the .mindir named in config.json (beside
this file). The port is --port, else $PORT, else $GRADIO_SERVER_PORT, else 7860.

Grey-scale datasets (MNIST, KMNIST, Fashion-MNIST) have a light object on a dark background.
"Invert colours: auto" inverts an image whose border is light (a dark digit on white paper);
transparent pixels count as white. Drawings are also cropped and centred as MNIST's digits are
(20x20 box, centred by centre of mass in 28x28).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

# Before gradio is imported: no usage statistics or version checks over the network.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import mindspore as ms
import numpy as np

# cpu_isa.py is ms_resnet's own module, shipped beside this file: the same rule as training.
from cpu_isa import CpuIsaError, choose_cpu_isa
from matplotlib import colormaps
from PIL import Image, ImageOps, UnidentifiedImageError

HERE = Path(__file__).resolve().parent
DEFAULT_PORT = 7860
DEFAULT_MAX_PIXELS = 25_000_000  # ~5000x5000; larger images are refused from their header
DEFAULT_MAX_FILE_SIZE = "20mb"
INVERT_CHOICES = ["auto", "yes", "no"]
HEAT_SIZE = 280  # pixels of the heat-map picture's longer side
HEAT_ALPHA = 0.5
# Small images (MNIST's are 28x28) fill the preview instead of showing as a speck.
CSS = "#upload-image img { width: 100%; height: 100%; object-fit: contain; " \
      "image-rendering: pixelated; }"
DATASET_TITLES = {
    "mnist": "MNIST handwritten digits",
    "kmnist": "Kuzushiji-MNIST (KMNIST) characters",
    "fashion_mnist": "Fashion-MNIST clothing",
    "cifar10": "CIFAR-10 objects",
    "svhn": "SVHN house-number digits",
    "stl10": "STL-10 objects",
}


class AppError(Exception):
    """A startup problem the user can fix; printed as one line."""


# ---------------------------------------------------------------------------------------------
# The model


def model_names_from_config(config_path: Path) -> list[str]:
    """Basenames of the files that XiHe downloads next to app.py (config.json's model_path)."""
    try:
        entries = json.loads(config_path.read_text(encoding="utf-8"))["model_path"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AppError(f"{config_path}: cannot read model_path ({exc})") from None
    if isinstance(entries, str):
        entries = [entries]
    return [str(entry).rstrip("/").split("/")[-1] for entry in entries]


def find_model(explicit: str | None) -> Path:
    """--model, else $MS_RESNET_MODEL, else the .mindir named in config.json beside app.py."""
    chosen = explicit or os.environ.get("MS_RESNET_MODEL")
    if chosen:
        return Path(chosen).expanduser()
    names = []
    if (HERE / "config.json").is_file():
        names = [n for n in model_names_from_config(HERE / "config.json") if n.endswith(".mindir")]
    return HERE / (names[0] if names else "best.mindir")


def _cannot_run(path: Path, exc: Exception) -> AppError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    return AppError(f"{path}: MindSpore {ms.__version__} cannot load or run it ({first}); was it "
                    "exported by a newer MindSpore?")


def load_graph(path: Path) -> Any:
    try:
        return ms.nn.GraphCell(ms.load(str(path)))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise _cannot_run(path, exc) from None


def run_check(path: Path, run: Any) -> None:
    """Run the graph of `path` once: compiles it, and turns a failure into one line."""
    try:
        run()
    except (RuntimeError, ValueError, TypeError) as exc:
        raise _cannot_run(path, exc) from None


class Model:
    """An exported MindIR and its sidecar: image pixels in, class probabilities out."""

    def __init__(self, path: Path) -> None:
        meta_path = path.with_suffix(".json")
        if not path.is_file():
            raise AppError(
                f"{path}: model file not found. On XiHe, the files listed in config.json's "
                "model_path are downloaded next to app.py: check that the model repository "
                "holds them. Locally, pass --model PATH or set MS_RESNET_MODEL.")
        if not meta_path.is_file():
            raise AppError(f"{path}: its sidecar {meta_path.name} (written by `ms-resnet export`) "
                           "must be beside it: it holds the class names and normalisation")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            batch, channels, height, width = meta["input_shape"]
            self.classes = [str(c) for c in meta["classes"]]
            self.mean = np.asarray(meta["mean"], np.float32)
            self.std = np.asarray(meta["std"], np.float32)
            self.scale = float(meta.get("pixel_scale", 1 / 255))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AppError(f"{meta_path}: not a valid sidecar ({exc!r})") from None
        if meta.get("channel_order", "NCHW") != "NCHW" or channels not in (1, 3):
            raise AppError(f"{meta_path}: expected an NCHW input with 1 or 3 channels")
        self.batch = batch  # None: any batch size
        self.channels = int(channels)
        self.size = (int(width), int(height))
        self.dataset = str(meta.get("dataset") or "")
        # A model trained on your own images (`--dataset folder`) is named after its folder.
        self.title = str(meta.get("title") or "")
        # Light objects on a dark background (MNIST-style data, mean below mid-grey): only then
        # does "auto" invert a light-bordered grey image.
        self.dark_data = float(np.mean(self.mean)) < 0.5
        self.model_name = str(meta.get("model") or path.stem)
        self.path = path
        self._lock = threading.Lock()  # one inference at a time through the graph
        # The Grad-CAM graph, if the export wrote one (older exports did not: no heat map then).
        explain = meta.get("explain") if isinstance(meta.get("explain"), dict) else {}
        explain_path = path.with_name(str(explain["file"])) if explain.get("file") else None
        self.explain_layer = str(explain.get("layer", ""))
        self.explain_graph = None
        self.graph = load_graph(path)
        blank = np.zeros((height, width, channels), np.float32)
        run_check(path, lambda: self.probabilities(blank))  # compile now
        if explain_path is not None:
            if not explain_path.is_file():
                raise AppError(f"{explain_path}: explain graph named in {meta_path.name} not "
                               "found; put it beside the model (on XiHe: list it in "
                               "config.json's model_path)")
            self.explain_graph = load_graph(explain_path)
            run_check(explain_path, lambda: self.heat_map(blank))

    def _batch(self, pixels: np.ndarray) -> np.ndarray:
        x = (pixels * self.scale - self.mean) / self.std
        x = x.transpose(2, 0, 1)[None].astype(np.float32)
        if self.batch not in (None, 1):  # exported with a fixed batch size
            x = np.concatenate([x, np.zeros((self.batch - 1,) + x.shape[1:], np.float32)])
        return x

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """`pixels`: HWC float32 in 0..255, already of the model's size and channels."""
        with self._lock:
            logits = self.graph(ms.Tensor(self._batch(pixels))).asnumpy()[0].astype(np.float64)
        exp = np.exp(logits - logits.max())
        return exp / exp.sum()

    def heat_map(self, pixels: np.ndarray) -> np.ndarray | None:
        """The Grad-CAM map (H x W, 0..1) of the predicted class, or None without an explain
        graph."""
        if self.explain_graph is None:
            return None
        x = self._batch(pixels)
        predicted = ms.Tensor(np.full(len(x), -1, np.int32))  # -1: the predicted class
        with self._lock:
            _, maps = self.explain_graph(ms.Tensor(x), predicted)
        return maps.asnumpy()[0]


# ---------------------------------------------------------------------------------------------
# Images


def check_image_file(path: Path, max_pixels: int) -> None:
    """Refuse an empty file, a non-image, or an image above `max_pixels` (from its header,
    before anything is decoded), with a message for the user."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise gr.Error(f"Cannot read the uploaded file ({exc.strerror}).") from None
    if size == 0:
        raise gr.Error("The file is empty: upload an image (PNG, JPEG, BMP, ...).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        raise gr.Error(f"The image is larger than the limit of {max_pixels} pixels.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise gr.Error("This file is not an image that Pillow can read: upload a PNG, JPEG, "
                       "BMP, GIF or WebP image.") from None
    if width * height > max_pixels:
        raise gr.Error(f"The image is {width}x{height} pixels, more than the limit of "
                       f"{max_pixels} pixels: make it smaller.")


def guard_uploads(component: Any, max_pixels: int) -> None:
    """Check an uploaded file before the component's own preprocessing decodes it."""
    original = component.preprocess

    def preprocess(payload: Any) -> Any:
        path = getattr(payload, "path", None)  # gradio 4: FileData of the uploaded file
        if path:
            check_image_file(Path(path), max_pixels)
        return original(payload)

    component.preprocess = preprocess


def flatten(image: Image.Image) -> Image.Image:
    """Grey or RGB; transparent pixels become white, like paper."""
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("RGB")
    if image.mode in ("L", "RGB"):
        return image
    if image.mode.startswith(("I", "F")):  # 16/32-bit grey: rescale, convert() would clip
        array = np.asarray(image, np.float64)
        top = float(array.max())
        scale = 1.0 if top <= 255 else 255.0 / (65535.0 if top <= 65535 else top)
        return Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def border_is_light(grey: np.ndarray) -> bool:
    """Is the image's outer frame (1/16 of each side, at least 1 pixel) light on average?"""
    height, width = grey.shape
    band = max(1, min(height, width) // 16)
    frame = np.concatenate([grey[:band].ravel(), grey[-band:].ravel(),
                            grey[:, :band].ravel(), grey[:, -band:].ravel()])
    return float(frame.mean()) > 127.5


def centre_like_mnist(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """MNIST's normalisation: the ink's bounding box scaled into a 20x20 box (for 28x28),
    placed so that its centre of mass is at the centre. None when there is no ink."""
    ink = grey > max(40.0, 0.25 * float(grey.max()))
    if not ink.any():
        return None
    rows, cols = np.nonzero(ink)
    crop = grey[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    width, height = size
    box = max(1, round(min(width, height) * 20 / 28))
    factor = box / max(crop.shape)
    new_w, new_h = max(1, round(crop.shape[1] * factor)), max(1, round(crop.shape[0] * factor))
    small = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize((new_w, new_h),
                                                                     Image.LANCZOS), np.float32)
    total = small.sum()
    if total <= 0:
        return None
    cy = (small.sum(axis=1) * np.arange(new_h)).sum() / total
    cx = (small.sum(axis=0) * np.arange(new_w)).sum() / total
    top = int(np.clip(round((height - 1) / 2 - cy), 0, height - new_h))
    left = int(np.clip(round((width - 1) / 2 - cx), 0, width - new_w))
    canvas = np.zeros((height, width), np.float32)
    canvas[top:top + new_h, left:left + new_w] = small
    return canvas


def without_paths(text: str) -> str:
    """`text` with every file path cut to its file name: errors shown to the web user must not
    reveal the server's folders."""
    return re.sub(r"(?:[A-Za-z]:)?[/\\][^\s'\"]*[/\\]([^/\\\s'\"]*)", r"\1", text)


def to_pixels(image: Image.Image, model: Model, invert: str, centre: bool
              ) -> tuple[np.ndarray, str]:
    """The model's HWC float input (0..255) from any image, and a note on what was done."""
    try:
        image = flatten(ImageOps.exif_transpose(image) or image)
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise gr.Error(f"The image cannot be decoded ({without_paths(str(exc))}).") from None
    original = f"{image.width}x{image.height}"
    grey_input = model.channels == 1
    image = image.convert("L" if grey_input else "RGB")
    array = np.asarray(image, np.float32)
    light = border_is_light(array if grey_input else array.mean(axis=2))
    # "auto" inverts only for grey-scale models of light-on-dark data (MNIST and the like).
    do_invert = invert == "yes" or (invert == "auto" and grey_input and model.dark_data
                                    and light)
    if do_invert:
        array = 255.0 - array
    notes = [f"{original} image", "inverted (light background)" if do_invert and invert == "auto"
             else "inverted" if do_invert else "not inverted"]
    if centre and grey_input:
        centred = centre_like_mnist(array, model.size)
        if centred is None:
            raise gr.Error("The drawing is empty: draw a digit first.")
        notes.append("cropped and centred as in MNIST")
        pixels = centred[:, :, None]
    else:
        resized = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
        pixels = np.asarray(resized.resize(model.size, Image.BILINEAR), np.float32)
        pixels = pixels.reshape(model.size[1], model.size[0], model.channels)
    return pixels, ", ".join(notes)


def overlay(pixels: np.ndarray, heat: np.ndarray) -> Image.Image:
    """The model's input (HWC 0..255) enlarged to about HEAT_SIZE pixels, with the heat map
    (red: most evidence) blended over it."""
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8).squeeze(2)
                            if pixels.shape[2] == 1 else np.clip(pixels, 0, 255).astype(np.uint8))
    scale = max(1, HEAT_SIZE // max(image.size))
    size = (image.width * scale, image.height * scale)
    image = image.convert("RGB").resize(size, Image.NEAREST)
    heat = np.asarray(Image.fromarray(heat.astype(np.float32), "F").resize(size, Image.BILINEAR))
    colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    return Image.blend(image, Image.fromarray((colours * 255).astype(np.uint8)), HEAT_ALPHA)


# ---------------------------------------------------------------------------------------------
# The app


def classify(model: Model, image: Image.Image | None, invert: str, centre: bool,
             max_pixels: int) -> tuple[dict[str, float], str, Image.Image | None]:
    if image is None:
        raise gr.Error("No image: upload an image or draw one first.")
    if image.width * image.height > max_pixels:
        raise gr.Error(f"The image is {image.width}x{image.height} pixels, more than the limit "
                       f"of {max_pixels} pixels: make it smaller.")
    if invert not in INVERT_CHOICES:
        invert = "auto"
    start = time.perf_counter()
    pixels, note = to_pixels(image, model, invert, centre)
    probabilities = model.probabilities(pixels)
    milliseconds = (time.perf_counter() - start) * 1000
    result = {name: float(p) for name, p in zip(model.classes, probabilities)}
    heat = model.heat_map(pixels)
    if heat is None:
        return result, f"{note}; {milliseconds:.0f} ms; no heat map (no explain graph)", None
    return result, f"{note}; {milliseconds:.0f} ms", overlay(pixels, heat)


def drawing_image(value: Any) -> Image.Image | None:
    """The composite image of a gr.Sketchpad value (gradio 4: a dict), or None."""
    if isinstance(value, dict):
        value = value.get("composite")
    if isinstance(value, np.ndarray):
        value = Image.fromarray(value)
    return value if isinstance(value, Image.Image) else None


def example_files(model: Model) -> list[str]:
    folder = HERE / "examples" / model.dataset
    return sorted(str(p) for p in folder.glob("*.png")) if model.dataset else []


def build_app(model: Model, top_k: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    top_k = max(1, min(top_k, len(model.classes)))
    dataset = DATASET_TITLES.get(model.dataset) or model.title or model.dataset or "images"
    grey = model.channels == 1
    # System fonts: the default theme loads Google Fonts, which are not reachable everywhere.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "Consolas", "monospace"])
    with gr.Blocks(title=f"{model.model_name} · {dataset}", theme=theme, css=CSS,
                   analytics_enabled=False) as app:
        gr.Markdown(
            f"# {model.model_name} · {dataset}\n"
            f"Upload or draw an image: the network ({model.path.name}, exported by ms_resnet "
            f"with MindSpore) gives its top {top_k} of {len(model.classes)} classes."
            + (" MNIST-style data is a light object on a dark background: with *auto*, an "
               "image with a light border is inverted." if grey and model.dark_data else ""))
        with gr.Row():
            with gr.Column():
                with gr.Tab("Upload"):
                    image = gr.Image(label="Image", type="pil", image_mode=None,
                                     sources=["upload", "clipboard"], height=280,
                                     elem_id="upload-image")
                    upload_button = gr.Button("Classify", variant="primary",
                                              elem_id="classify-button")
                    examples = example_files(model)
                    if examples:
                        gr.Examples(examples, inputs=image,
                                    label=f"Examples: real {model.title or model.dataset.upper()} "
                                          "test images")
                with gr.Tab("Draw"):
                    sketch = gr.Sketchpad(label="Draw here", type="pil", canvas_size=(280, 280),
                                          brush=gr.Brush(default_size=10, colors=["#000000"],
                                                         color_mode="fixed"),
                                          elem_id="sketchpad")
                    draw_button = gr.Button("Classify drawing", variant="primary",
                                            elem_id="classify-drawing-button")
                invert = gr.Radio(INVERT_CHOICES, value="auto", label="Invert colours",
                                  info="auto: invert when the border is light (grey models)")
            with gr.Column():
                label = gr.Label(num_top_classes=top_k, label="Prediction", elem_id="prediction")
                heat = gr.Image(label=f"Where the evidence is: Grad-CAM at {model.explain_layer} "
                                "(red: most)", type="pil", interactive=False, height=280,
                                elem_id="gradcam", visible=model.explain_graph is not None)
                details = gr.Textbox(label="Details", interactive=False, elem_id="details")
        guard_uploads(image, max_pixels)

        # Callbacks without `X | None` hints: gradio evaluates them (Python 3.9 cannot).
        def classify_upload(picture: Any, mode: str) -> Any:
            return classify(model, picture, mode, False, max_pixels)

        def classify_drawing(value: Any, mode: str) -> Any:
            return classify(model, drawing_image(value), mode, grey, max_pixels)

        upload_button.click(classify_upload, [image, invert], [label, details, heat],
                            api_name="classify")
        draw_button.click(classify_drawing, [sketch, invert], [label, details, heat],
                          api_name="classify_drawing")
    return app


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def fail(message: str) -> None:
    """One line on stderr and exit code 2, as the ms_resnet commands do."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env_port = os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT")
    parser = argparse.ArgumentParser(description="Serve an ms_resnet MindIR with Gradio.")
    parser.add_argument("--model", help="MindIR file, its .json sidecar beside it (default: "
                        "$MS_RESNET_MODEL, else the .mindir named in config.json beside app.py)")
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"),
                        help="address to bind (default: $HOST, else 0.0.0.0)")
    parser.add_argument("--port", type=positive_int, default=int(env_port or DEFAULT_PORT),
                        help="port (default: $PORT, else $GRADIO_SERVER_PORT, else "
                        f"{DEFAULT_PORT})")
    parser.add_argument("--top_k", type=positive_int, default=3, help="classes shown (default: 3)")
    parser.add_argument("--max_pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                        help=f"largest image accepted (default: {DEFAULT_MAX_PIXELS})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if int(gr.__version__.split(".")[0]) < 4:
        fail(f"gradio {gr.__version__} is too old for this app; "
             "run pip install -r requirements.txt (gradio 4.44.1)")
    # A second guard for images decoded by gradio itself (drawings): Pillow refuses images
    # above twice this number of pixels from their header.
    Image.MAX_IMAGE_PIXELS = args.max_pixels
    try:
        # Before the model's first kernel runs: oneDNN reads the ISA cap once.
        cpu_isa = choose_cpu_isa()
        model = Model(find_model(args.model))
    except (AppError, CpuIsaError) as exc:
        fail(str(exc))
    heat = (f"Grad-CAM at {model.explain_layer}" if model.explain_graph is not None
            else "no explain graph: no heat maps")
    print(f"model {model.path} ({model.model_name}, {model.dataset}, {len(model.classes)} "
          f"classes, input {model.channels}x{model.size[1]}x{model.size[0]}; {heat}), MindSpore "
          f"{ms.__version__} (oneDNN ISA: {cpu_isa.summary()}), gradio {gr.__version__}; "
          f"serving on http://{args.host}:{args.port}", flush=True)
    app = build_app(model, args.top_k, args.max_pixels)
    app.queue(max_size=64).launch(server_name=args.host, server_port=args.port,
                                  show_error=True, max_file_size=DEFAULT_MAX_FILE_SIZE,
                                  share=False, inbrowser=False)


if __name__ == "__main__":
    main()
