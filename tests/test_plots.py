"""Figures: PNGs are written and legible-sized, wrong predictions are marked in red, confusion
counts are right, and Japanese class names never trigger missing-glyph warnings."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from ms_resnet import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KMNIST = ("o (お)", "ki (き)", "su (す)", "tsu (つ)", "na (な)", "ha (は)", "ma (ま)", "ya (や)",
          "re (れ)", "wo (を)")
METRICS = {
    "config": {"model": "resnet20", "dataset": "kmnist"},
    "best_accuracy": 0.95, "best_epoch": 2,
    "epochs": [
        {"epoch": 1, "train_loss": 1.2, "test_loss": 0.8, "test_accuracy": 0.90, "seconds": 10.0},
        {"epoch": 2, "train_loss": 0.6, "test_loss": 0.4, "test_accuracy": 0.95, "seconds": 9.0},
        {"epoch": 3, "train_loss": 0.4, "test_loss": 0.5, "test_accuracy": 0.94, "seconds": 9.5},
    ],
}


@pytest.fixture
def no_cjk_font(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "_cjk_font_family", lambda: None)


def read_png(path: Path) -> np.ndarray:
    """Pixels as uint8 RGB(A), after checking the file really is a PNG."""
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return (mpimg.imread(path) * 255).round().astype(np.uint8)


def red_mask(pixels: np.ndarray) -> np.ndarray:
    red, green, blue = (pixels[..., i].astype(int) for i in range(3))
    return (red > 200) & (green < 80) & (blue < 80)


def glyph_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "Glyph" in str(w.message)]


@pytest.mark.parametrize("shape", [(12, 28, 28), (12, 28, 28, 1), (12, 32, 32, 3)],
                         ids=["gray", "gray-channel", "rgb"])
def test_prediction_grid_writes_png(tmp_path: Path, shape: tuple[int, ...]) -> None:
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    names = [str(i % 10) for i in range(12)]
    target = tmp_path / "nested" / "folder" / "grid.png"
    path = plots.save_prediction_grid(images, names, names[::-1], target, columns=5)
    assert path == target
    pixels = read_png(path)
    # 5 columns x 3 rows at ~1.3 in per tile: readable, not a thumbnail nor a poster.
    height, width = pixels.shape[:2]
    assert width == round(5 * plots.TILE_INCHES * plots.DPI)
    assert 3 * plots.TILE_INCHES * plots.DPI <= height <= 3 * 2 * plots.TILE_INCHES * plots.DPI


def test_prediction_grid_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        plots.save_prediction_grid(np.zeros((2, 8, 8, 2), np.uint8), "ab", "ab", tmp_path / "x.png")
    with pytest.raises(ValueError, match="labels"):
        plots.save_prediction_grid(np.zeros((2, 8, 8), np.uint8), ["a"], ["a"], tmp_path / "x.png")


def test_prediction_grid_marks_only_wrong_tiles_red(tmp_path: Path) -> None:
    # Mid-gray images contain no red, so any red pixel comes from the marking.
    images = np.full((2, 28, 28), 128, np.uint8)
    path = plots.save_prediction_grid(images, ["3", "5"], ["3", "8"], tmp_path / "grid.png",
                                      columns=2)
    red = red_mask(read_png(path))
    half = red.shape[1] // 2
    assert red[:, :half].sum() == 0  # tile 0: right prediction, no red anywhere
    # Tile 1: a frame (long red runs along its columns and rows) plus the red title.
    assert red[:, half:].sum() > 200
    assert red[:, half:].sum(axis=0).max() >= 0.5 * plots.TILE_INCHES * plots.DPI


def test_prediction_grid_shows_once_only_with_display(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt

    calls = []
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: calls.append(1))
    images = np.zeros((3, 8, 8), np.uint8)

    monkeypatch.setattr(plots, "_display_available", lambda: False)
    plots.save_prediction_grid(images, "abc", "abc", tmp_path / "a.png", show=True)
    assert calls == [] and (tmp_path / "a.png").is_file()

    monkeypatch.setattr(plots, "_display_available", lambda: True)
    plots.save_prediction_grid(images, "abc", "abd", tmp_path / "b.png", show=True)
    assert calls == [1] and (tmp_path / "b.png").is_file()
    assert plt.get_fignums() == []  # the shown figure was closed afterwards


def test_confusion_matrix_counts() -> None:
    labels = np.array([0, 0, 1, 1, 1, 3, 3])
    predictions = np.array([0, 1, 1, 1, 3, 3, 0])
    expected = np.array([[1, 1, 0, 0],
                         [0, 2, 0, 1],
                         [0, 0, 0, 0],  # class 2 has no samples and is never predicted
                         [1, 0, 0, 1]])
    matrix = plots.confusion_matrix(labels, predictions, num_classes=4)
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.shape == (4, 4) and matrix.sum() == len(labels)
    np.testing.assert_array_equal(plots.confusion_matrix([], [], 3), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        plots.confusion_matrix([0, 4], [0, 0], num_classes=4)


def test_save_confusion_matrix_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    path = plots.save_confusion_matrix(labels, labels, [f"class {i}" for i in range(10)],
                                       tmp_path / "out" / "cm.png", title="resnet20")
    height, width = read_png(path).shape[:2]
    assert 500 <= height <= 1500 and 500 <= width <= 1800


def test_display_name_strips_kana_without_cjk_font(no_cjk_font: None) -> None:
    assert plots.display_name("o (お)") == "o"
    assert plots.display_name("tsu (つ)") == "tsu"
    assert plots.display_name("T-shirt/top") == "T-shirt/top"
    assert plots.display_name("お")  # still distinguishable, never an empty label


def test_display_name_keeps_kana_with_cjk_font(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "_cjk_font_family", lambda: "Noto Sans CJK JP")
    assert plots.display_name("o (お)") == "o (お)"


def test_kmnist_names_draw_without_glyph_warnings(tmp_path: Path, no_cjk_font: None) -> None:
    labels = np.arange(10).repeat(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.save_confusion_matrix(labels, np.roll(labels, 1), KMNIST, tmp_path / "cm.png")
        plots.save_prediction_grid(np.zeros((10, 8, 8), np.uint8), KMNIST, KMNIST[::-1],
                                   tmp_path / "grid.png")
    assert glyph_warnings(caught) == []


def test_glyph_warning_check_is_meaningful(tmp_path: Path, no_cjk_font: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: without display_name the same figure does warn, so the test above can fail."""
    if ord("お") in plots._default_charmap():
        pytest.skip("the default font draws kana itself")
    monkeypatch.setattr(plots, "display_name", lambda name: name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.save_confusion_matrix(np.arange(10), np.arange(10), KMNIST, tmp_path / "cm.png")
    assert glyph_warnings(caught)


@pytest.mark.parametrize("epochs", [3, 1], ids=["three-epochs", "one-epoch"])
def test_training_curves_writes_png(tmp_path: Path, epochs: int) -> None:
    metrics = dict(METRICS, epochs=METRICS["epochs"][:epochs],
                   best_epoch=2 if epochs > 1 else 1)
    path = plots.save_training_curves(metrics, tmp_path / "run" / "curves.png")
    height, width = read_png(path).shape[:2]
    assert width > 2 * height and 300 <= height <= 800


def test_training_curves_tolerates_missing_fields(tmp_path: Path) -> None:
    metrics = {"epochs": [{"epoch": 1, "test_accuracy": 0.5, "train_loss": float("nan")},
                          {"epoch": 2, "test_accuracy": 0.7, "test_loss": 0.9}]}
    assert plots.save_training_curves(metrics, tmp_path / "c.png").is_file()
    with pytest.raises(ValueError, match="no epochs"):
        plots.save_training_curves({"epochs": []}, tmp_path / "d.png")
