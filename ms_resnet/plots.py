"""Figures for a training run: prediction grids, confusion matrices and training curves.

Every figure is saved to a PNG and works without a display. Figures are built on
`matplotlib.figure.Figure` (not pyplot) so saving never touches, needs or changes the global
backend: the matplotlib docs recommend this for servers, and it means a training job on a headless
machine can't fail on a missing display and a notebook's backend is left alone. Only
`save_prediction_grid(..., show=True)` uses pyplot, and only when a display exists.
"""

from __future__ import annotations

import math
import os
import re
import sys
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font
from matplotlib.ticker import MaxNLocator

from ms_resnet.files import NewFile, write_files

__all__ = ["confusion_matrix", "display_name", "explanation_file", "save_confusion_matrix",
           "save_prediction_grid", "save_training_curves"]

DPI = 120
TILE_INCHES = 1.3
WRONG_COLOR = "#ff0000"  # pure red: the frame must stand out against any image
WRONG_TEXT_COLOR = "#d40000"  # slightly darker for legible text on white
RIGHT_TEXT_COLOR = "#137333"
HEAT_COLORMAP = "jet"  # pytorch-grad-cam's and the Grad-CAM paper's choice: red = most evidence
HEAT_ALPHA = 0.5

# Families that cover hiragana; tried in this order (first installed one wins).
CJK_FONT_FAMILIES = ("Noto Sans CJK JP", "Noto Sans JP", "Noto Sans CJK SC", "Source Han Sans JP",
                     "Source Han Sans", "IPAGothic", "IPAexGothic", "IPAPGothic", "TakaoGothic",
                     "VL Gothic", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback",
                     "Hiragino Sans", "Yu Gothic", "MS Gothic", "Meiryo")


@lru_cache(maxsize=1)
def _cjk_font_family() -> str | None:
    """Name of an installed font family that can draw Japanese kana, or None."""
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((family for family in CJK_FONT_FAMILIES if family in installed), None)


@lru_cache(maxsize=1)
def _default_charmap() -> frozenset[int]:
    """Code points the default text font can draw (DejaVu Sans unless the user configured
    otherwise)."""
    path = font_manager.findfont(font_manager.FontProperties(), fallback_to_default=True)
    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError):
        # Unreadable font file: assume plain ASCII only, the safe side for stripping.
        return frozenset(range(32, 127))


def display_name(name: str) -> str:
    """`name` as it can be drawn: unchanged if every character has a glyph (or a CJK font is
    installed), otherwise without the undrawable characters, e.g. "o (お)" -> "o"."""
    name = str(name)
    if _cjk_font_family() is not None:
        return name
    charmap = _default_charmap()
    if all(ord(char) in charmap for char in name):
        return name
    kept = "".join(char for char in name if ord(char) in charmap)
    # Drop brackets left empty by the stripping ("o ()") and the spaces around them.
    kept = re.sub(r"[(\[{（]\s*[)\]}）]", "", kept)
    kept = " ".join(kept.split())
    # A name made only of undrawable characters still needs to be told apart from the others.
    return kept or name.encode("ascii", "backslashreplace").decode("ascii")


def _font_rc() -> dict:
    """rcParams that make text fall back to the CJK font when one is installed."""
    family = _cjk_font_family()
    if family is None:
        return {}
    # matplotlib >= 3.6 falls back glyph by glyph along this list.
    return {"font.family": ["sans-serif", family]}


def _display_available() -> bool:
    """True if an interactive window can be opened."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    # The format comes from the name (the staged file keeps it).
    write_files([NewFile(path, lambda tmp: fig.savefig(tmp, dpi=DPI))])
    return path


def _new_figure(figsize: tuple[float, float], pyplot: bool = False) -> Figure:
    """A figure outside pyplot (headless, garbage collected), or a pyplot one to be shown."""
    if pyplot:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize, layout="constrained")
    return Figure(figsize=figsize, layout="constrained")


def _as_tiles(images: np.ndarray) -> np.ndarray:
    """(N, H, W) grey or (N, H, W, 3) colour images from (N, H, W[, 1 or 3])."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C) with C = 1 or 3, "
                         f"got shape {images.shape}")
    return images


def _draw(ax, image: np.ndarray, heat: np.ndarray | None = None) -> None:
    """`image` (uint8 grey keeps its absolute brightness), and `heat` (0..1) overlaid."""
    gray = image.ndim == 2
    limits = {"vmin": 0, "vmax": 255} if gray and image.dtype == np.uint8 else {}
    ax.imshow(image, cmap="gray" if gray else None, interpolation="nearest", **limits)
    if heat is not None:
        ax.imshow(heat, cmap=HEAT_COLORMAP, alpha=HEAT_ALPHA, vmin=0, vmax=1,
                  interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])


def explanation_file(image: np.ndarray, heat: np.ndarray, title: str, path: str | Path) -> NewFile:
    """A figure of `image` (H, W[, C] uint8) beside it with its heat map `heat` (H, W, 0..1)
    overlaid, as a file for `files.write_files`."""
    image = _as_tiles(np.asarray(image)[None])[0]
    with matplotlib.rc_context(_font_rc()):
        fig = _new_figure((6.4, 3.6))
        left, right = fig.subplots(1, 2)
        _draw(left, image)
        _draw(right, image, heat)
        left.set_title("image", fontsize=9)
        right.set_title("Grad-CAM: red = most evidence", fontsize=9)
        fig.suptitle(title, fontsize=10)
    return NewFile(Path(path), lambda tmp: fig.savefig(tmp, dpi=DPI))


def save_prediction_grid(images: np.ndarray, predicted: Sequence[str], actual: Sequence[str],
                         path: str | Path, columns: int = 10, show: bool = False,
                         heat: np.ndarray | None = None) -> Path:
    """Save a grid of images titled "pred: ...\\ntrue: ..."; wrong predictions get a red title and
    a red frame. `images` is (N, H, W) or (N, H, W, C) uint8 with C = 1 or 3; `heat`, if given,
    (N, H, W) maps in 0..1 drawn over them. With `show=True` the figure is also shown in one
    window if a display exists (blocks until it is closed)."""
    images = _as_tiles(images)
    count = len(images)
    if count == 0:
        raise ValueError("no images to draw")
    if len(predicted) != count or len(actual) != count:
        raise ValueError(f"{count} images but {len(predicted)} predicted and {len(actual)} "
                         "actual labels")
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    if heat is not None and np.shape(heat) != images.shape[:3]:
        raise ValueError(f"heat maps of shape {np.shape(heat)} for images of shape "
                         f"{images.shape}")
    show = show and _display_available()

    with matplotlib.rc_context(_font_rc()):
        # Extra height per row for the two title lines.
        fig = _new_figure((columns * TILE_INCHES, rows * (TILE_INCHES + 0.35)), pyplot=show)
        axes = fig.subplots(rows, columns, squeeze=False)
        for index, ax in enumerate(axes.flat):
            if index >= count:
                ax.set_axis_off()
                continue
            wrong = str(predicted[index]) != str(actual[index])
            # Ticks hidden, spines kept: they are the frame of a wrong tile.
            _draw(ax, images[index], None if heat is None else heat[index])
            for spine in ax.spines.values():
                spine.set_visible(wrong)
                spine.set_color(WRONG_COLOR)
                spine.set_linewidth(3)
            ax.set_title(f"pred: {display_name(predicted[index])}\n"
                         f"true: {display_name(actual[index])}", fontsize=8,
                         color=WRONG_TEXT_COLOR if wrong else RIGHT_TEXT_COLOR,
                         fontweight="bold" if wrong else "normal")
        path = _save(fig, path)

    if show:
        import matplotlib.pyplot as plt

        with warnings.catch_warnings():
            # A display but a non-interactive backend chosen by the user: saving was enough.
            warnings.filterwarnings("ignore", message=".*non-interactive.*")
            plt.show()
        plt.close(fig)
    return path


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: row = true class, column = predicted class."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"{labels.size} labels but {predictions.size} predictions")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must be in [0, {num_classes}), "
                             f"got [{values.min()}, {values.max()}]")
    counts = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def save_confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: Sequence[str],
                          path: str | Path, title: str | None = None) -> Path:
    """Save the confusion matrix (rows = true, columns = predicted) with cell counts, class names
    and the overall accuracy in the title."""
    num_classes = len(classes)
    matrix = confusion_matrix(labels, predictions, num_classes)
    total = int(matrix.sum())
    accuracy = f"{np.trace(matrix) / total:.2%}" if total else "n/a"
    names = [display_name(name) for name in classes]
    side = max(4.5, 0.55 * num_classes + 2.5)  # ~0.55 in per cell keeps 4-digit counts legible
    font_size = 9 if num_classes <= 12 else 7 if num_classes <= 20 else 5

    with matplotlib.rc_context(_font_rc()):
        fig = _new_figure((side + 1.0, side))
        ax = fig.subplots()
        image = ax.imshow(matrix, cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, shrink=0.8, label="images")
        ax.set_xticks(range(num_classes), names, rotation=45, ha="right",
                      rotation_mode="anchor", fontsize=font_size)
        ax.set_yticks(range(num_classes), names, fontsize=font_size)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        # White text on dark cells, black on light ones.
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, column), value in np.ndenumerate(matrix):
            ax.text(column, row, str(value), ha="center", va="center", fontsize=font_size,
                    color="white" if value > threshold else "black")
        ax.set_title(f"{title or 'Confusion matrix'}\naccuracy {accuracy} "
                     f"({np.trace(matrix)}/{total})")
        return _save(fig, path)


def save_training_curves(metrics: dict, path: str | Path) -> Path:
    """Save loss (train, test) and test accuracy per epoch side by side from a run's
    metrics.json content, with the best epoch marked."""
    records = metrics.get("epochs") or []
    if not records:
        raise ValueError("metrics has no epochs to plot")
    epochs = [record.get("epoch", index + 1) for index, record in enumerate(records)]

    def series(key: str) -> np.ndarray:
        # Missing values (or NaN loss from an empty epoch) become gaps, not errors.
        return np.array([np.nan if record.get(key) is None else float(record[key])
                         for record in records])

    accuracy = series("test_accuracy") * 100
    best_epoch = metrics.get("best_epoch")
    if best_epoch not in epochs and not np.isnan(accuracy).all():
        best_epoch = epochs[int(np.nanargmax(accuracy))]

    config = metrics.get("config") or {}
    model, dataset = config.get("model"), config.get("dataset")
    title = " on ".join(str(part) for part in (model, dataset) if part)

    with matplotlib.rc_context(_font_rc()):
        fig = _new_figure((10, 4))
        loss_ax, accuracy_ax = fig.subplots(1, 2)
        for key, label in (("train_loss", "train"), ("test_loss", "test")):
            values = series(key)
            if not np.isnan(values).all():
                loss_ax.plot(epochs, values, marker="o", markersize=4, label=label)
        loss_ax.set_title("loss")
        loss_ax.set_ylabel("cross-entropy")

        accuracy_ax.plot(epochs, accuracy, marker="o", markersize=4, color="tab:green",
                         label="test")
        accuracy_ax.set_title("test accuracy")
        accuracy_ax.set_ylabel("accuracy (%)")
        if best_epoch is not None:
            best = accuracy[epochs.index(best_epoch)]
            for ax in (loss_ax, accuracy_ax):
                ax.axvline(best_epoch, color="gray", linestyle="--", linewidth=1)
            accuracy_ax.plot([best_epoch], [best], marker="*", markersize=14, color="tab:red",
                             linestyle="none", clip_on=False,
                             label=f"best {best:.2f}% (epoch {best_epoch})")

        for ax in (loss_ax, accuracy_ax):
            ax.set_xlabel("epoch")
            # Epochs are whole numbers: label each one on short runs (a single-epoch run would
            # otherwise get ticks 0.96, 0.98, ...), at most ~10 integer ticks on long ones.
            if len(epochs) <= 12:
                ax.set_xticks(epochs)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
        if title:
            fig.suptitle(title)
        return _save(fig, path)


def save_error_curves(panels: dict[str, dict[str, dict]], path: str | Path) -> Path:
    """He et al. (2016) Fig. 1/6 style: one panel per entry of `panels` ({title: {run label:
    metrics.json content}}), training error (1 - train_accuracy) solid and test error dashed
    per epoch, one colour per run, the same y scale on every panel."""
    panels = {title: runs for title, runs in panels.items() if runs}
    if not panels:
        raise ValueError("no runs to plot")
    colours = ["tab:orange", "tab:red", "tab:blue", "tab:green", "tab:purple"]
    with matplotlib.rc_context(_font_rc()):
        fig = _new_figure((5 * len(panels), 4))
        axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
        for ax, (title, runs) in zip(axes, panels.items()):
            for colour, (label, metrics) in zip(colours, runs.items()):
                records = metrics.get("epochs") or []
                epochs = [record["epoch"] for record in records]
                for key, style, kind in (("train_accuracy", "-", "train"),
                                         ("test_accuracy", "--", "test")):
                    errors = [100 * (1 - record[key]) if record.get(key) is not None
                              else np.nan for record in records]
                    ax.plot(epochs, errors, style, color=colour, marker="o", markersize=3,
                            label=f"{label} ({kind})")
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        axes[0].set_ylabel("error (%): training solid, test dashed")
        return _save(fig, path)


def save_layer_norms(norms: dict[str, Sequence[float]], path: str | Path) -> Path:
    """One line per network of a per-layer quantity (e.g. gradient norms at initialisation),
    layer 1 = the input side, on a log scale."""
    with matplotlib.rc_context(_font_rc()):
        fig = _new_figure((6, 4))
        ax = fig.subplots()
        for label, values in norms.items():
            ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("convolution layer (input side first)")
        ax.set_ylabel("gradient norm at initialisation")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        return _save(fig, path)
