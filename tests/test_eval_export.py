"""Evaluation, MindIR/ONNX export with its parity check, and prediction on user image files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from PIL import Image, ImageDraw

from ms_resnet.errors import UserError
from ms_resnet.export import ParityError, check_parity
from ms_resnet.inference import Classifier, from_mindir
from ms_resnet.models import FlipAverage, create_model
from tests import fakedata
from tests.conftest import run_command

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _ok(result) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _one_line_error(result, *parts: str) -> str:
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for part in parts:
        assert part in lines[0]
    return lines[0]


def _eval_json(tmp_path: Path, *source: str) -> dict:
    report = tmp_path / f"{source[0].strip('-')}.json"
    _ok(run_command("eval.py", *source, "--json", str(report)))
    return json.loads(report.read_text())


def test_training_exported_a_verified_mindir(mnist_run: dict) -> None:
    folder = mnist_run["dir"]
    assert (folder / "best.mindir").is_file()
    sidecar = json.loads((folder / "best.json").read_text())
    assert sidecar["input_shape"] == [None, 1, 28, 28]
    assert sidecar["classes"] == [str(d) for d in range(10)]
    assert sidecar["mean"] == [0.1307] and sidecar["std"] == [0.3081]
    assert "parity check on 256 real test images" in mnist_run["stdout"]


def test_checkpoint_and_mindir_give_the_recorded_best_accuracy(mnist_run: dict,
                                                                tmp_path: Path) -> None:
    folder, metrics = mnist_run["dir"], mnist_run["metrics"]
    from_ckpt = _eval_json(tmp_path, "--ckpt", str(folder / "best.ckpt"))
    from_mindir = _eval_json(tmp_path, "--mindir", str(folder / "best.mindir"), "--data_dir",
                             metrics["config"]["data_dir"])
    assert from_ckpt["num_samples"] == from_mindir["num_samples"] == 1000
    assert from_ckpt["accuracy"] == from_mindir["accuracy"] == metrics["best_accuracy"]
    assert from_ckpt["per_class_accuracy"] == from_mindir["per_class_accuracy"]
    assert from_mindir["loss"] == pytest.approx(from_ckpt["loss"], abs=1e-5)


def test_predict_lines_grid_and_plots(mnist_run: dict, tmp_path: Path) -> None:
    out = _ok(run_command("scripts/run_eval.sh", str(mnist_run["dir"] / "best.ckpt"),
                          "--predict", "20", "--plots", "--output_dir", str(tmp_path)))
    lines = [line for line in out.splitlines() if line.startswith("predicted: ")]
    assert len(lines) == 20
    # The first MNIST test image is a 7.
    assert lines[0].endswith('actual: "7"')
    for name in ("predictions.png", "confusion_matrix.png", "training_curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(tmp_path / "predictions.png") as grid:
        assert grid.width >= 10 * 100 and grid.height >= 2 * 100


def test_export_onnx_and_fixed_batch(mnist_run: dict, tmp_path: Path) -> None:
    ckpt = str(mnist_run["dir"] / "best.ckpt")
    out = _ok(run_command("export.py", "--ckpt", ckpt, "--file_format", "ONNX", "--file_name",
                          str(tmp_path / "net")))
    assert (tmp_path / "net.onnx").stat().st_size > 100_000 and "net.onnx" in out
    assert json.loads((tmp_path / "net.json").read_text())["input_shape"] == [1, 1, 28, 28]
    out = _ok(run_command("scripts/run_export.sh", ckpt, "--batch_size", "8", "--file_name",
                          str(tmp_path / "b8")))
    assert "all top-1 predictions equal" in out
    assert json.loads((tmp_path / "b8.json").read_text())["input_shape"] == [8, 1, 28, 28]


def _save_other_network(tmp_path: Path, config: str, **model_args) -> Path:
    """A checkpoint of a network that does not match `config` (written as config.yaml)."""
    (tmp_path / "config.yaml").write_text(config)
    ckpt = tmp_path / "other.ckpt"
    ms.save_checkpoint(create_model("resnet20", **model_args), str(ckpt))
    return ckpt


@pytest.mark.parametrize(("model_args", "parameter", "shapes"), [
    ({"num_classes": 5, "in_channels": 1}, "fc.weight", "(5, 64) in the checkpoint but (10, 64)"),
    ({"num_classes": 10, "in_channels": 3}, "stem.0.weight",
     "(16, 3, 3, 3) in the checkpoint but (16, 1, 3, 3)"),
])
def test_export_refuses_a_checkpoint_of_another_shape(tmp_path: Path, model_args: dict,
                                                       parameter: str, shapes: str) -> None:
    ckpt = _save_other_network(tmp_path, "dataset: mnist\nmodel: resnet20\n", **model_args)
    _one_line_error(run_command("export.py", "--ckpt", str(ckpt)),
                    f"parameter '{parameter}' has shape {shapes} in the network")
    assert not list(tmp_path.glob("*.mindir"))


def test_export_refuses_a_checkpoint_of_another_model(tmp_path: Path) -> None:
    ckpt = _save_other_network(tmp_path, "dataset: mnist\nmodel: resnet32\n", in_channels=1)
    _one_line_error(run_command("export.py", "--ckpt", str(ckpt)),
                    "has no parameter", "saved from another model")


def test_export_refuses_a_truncated_checkpoint(mnist_run: dict, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text((mnist_run["dir"] / "config.yaml").read_text())
    whole = (mnist_run["dir"] / "best.ckpt").read_bytes()
    (tmp_path / "best.ckpt").write_bytes(whole[:len(whole) // 2])
    _one_line_error(run_command("export.py", "--ckpt", str(tmp_path / "best.ckpt")),
                    "not a readable MindSpore checkpoint")


def test_parity_check_catches_a_different_model() -> None:
    images = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    net = create_model("resnet20", 10, 1, 28)
    net.set_train(False)
    reference = Classifier(net, "mnist", tuple("0123456789"), 1, 28, (0.1,), (0.3,), "ref")
    assert check_parity(reference, reference, images, None) == 0.0
    shifted = Classifier(lambda x: net(x) + 1e-3, "mnist", tuple("0123456789"), 1, 28, (0.1,),
                         (0.3,), "shifted.mindir")
    with pytest.raises(ParityError, match=r"shifted.mindir: exported model differs .* "
                                          r"max \|logit difference\| 0.001"):
        check_parity(reference, shifted, images, 4)


def test_eval_translate_is_exported(tmp_path: Path) -> None:
    data = tmp_path / "fashion_mnist"
    fakedata.make_mnist_like(data, n_train=32, n_test=64, gz=False, seed=5)
    (tmp_path / "config.yaml").write_text(f"dataset: fashion_mnist\nmodel: fast_resnet8\n"
                                          f"eval_flip: true\neval_translate: true\n"
                                          f"data_dir: {data}\n")
    net = create_model("fast_resnet8", 10, 1, 28)
    ms.save_checkpoint(net, str(tmp_path / "best.ckpt"))
    _ok(run_command("export.py", "--ckpt", str(tmp_path / "best.ckpt"), "--parity_samples",
                    "64"))
    sidecar = json.loads((tmp_path / "best.json").read_text())
    assert sidecar["flip_averaged"] is True and sidecar["translate_averaged"] is True
    net.set_train(False)
    images = np.random.default_rng(1).standard_normal((5, 1, 28, 28)).astype(np.float32)
    expected = FlipAverage(net, translate=True)(ms.Tensor(images)).asnumpy()
    exported = from_mindir(tmp_path / "best.mindir").logits(images)
    np.testing.assert_allclose(exported, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(exported - FlipAverage(net)(ms.Tensor(images)).asnumpy()).max() > 1e-4


def test_eval_flip_is_measured_and_exported(tmp_path: Path) -> None:
    data = tmp_path / "fashion_mnist"
    fakedata.make_mnist_like(data, n_train=32, n_test=64, gz=False, seed=5)
    (tmp_path / "config.yaml").write_text(
        f"dataset: fashion_mnist\nmodel: fast_resnet8\neval_flip: true\ndata_dir: {data}\n")
    net = create_model("fast_resnet8", 10, 1, 28)
    ms.save_checkpoint(net, str(tmp_path / "best.ckpt"))
    assert "parity check on 64 real test images" in _ok(run_command(
        "export.py", "--ckpt", str(tmp_path / "best.ckpt"), "--parity_samples", "64"))
    assert json.loads((tmp_path / "best.json").read_text())["flip_averaged"] is True

    net.set_train(False)
    images = np.random.default_rng(1).standard_normal((4, 1, 28, 28)).astype(np.float32)
    plain = net(ms.Tensor(images)).asnumpy()
    mirrored = net(ms.Tensor(np.ascontiguousarray(images[..., ::-1]))).asnumpy()
    exported = from_mindir(tmp_path / "best.mindir").logits(images)
    np.testing.assert_allclose(exported, (plain + mirrored) / 2, rtol=1e-5, atol=1e-5)
    assert np.abs(exported - plain).max() > 1e-4
    from_ckpt = _eval_json(tmp_path, "--ckpt", str(tmp_path / "best.ckpt"))
    from_mindir_file = _eval_json(tmp_path, "--mindir", str(tmp_path / "best.mindir"),
                                  "--data_dir", str(data))
    assert from_ckpt["loss"] == pytest.approx(from_mindir_file["loss"], abs=1e-6)
    assert from_ckpt["num_samples"] == from_mindir_file["num_samples"] == 64


def _mnist_test_image(mnist_small: Path, index: int) -> tuple[np.ndarray, int]:
    images = np.frombuffer(gzip.decompress(
        (mnist_small / "t10k-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8)
    labels = gzip.decompress((mnist_small / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:]
    return images.reshape(-1, 28, 28)[index], labels[index]


def _top_k(line: str) -> list[tuple[str, float]]:
    ranked = line.split(": ", 1)[1].split(", ")
    return [(item.rsplit(" ", 1)[0].strip('"'), float(item.rsplit(" ", 1)[1]))
            for item in ranked]


def test_predict_png_digits(mnist_run: dict, mnist_small: Path, tmp_path: Path) -> None:
    digit, label = _mnist_test_image(mnist_small, 0)
    # As a user would have it: larger, RGB, and a dark digit on a light background.
    Image.fromarray(255 - digit).resize((112, 112)).convert("RGB").save(tmp_path / "seven.png")
    drawn = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(drawn).line([(32, 8), (32, 56)], fill=255, width=6)
    drawn.save(tmp_path / "one.png")
    out = _ok(run_command("-m", "ms_resnet", "predict", str(tmp_path / "seven.png"), "--invert",
                          "--mindir", str(mnist_run["dir"] / "best.mindir")))
    seven = _top_k(out.strip().splitlines()[-1])
    assert seven[0][0] == str(label) == "7"
    out = _ok(run_command("-m", "ms_resnet", "predict", str(tmp_path / "one.png"),
                          "--ckpt", str(mnist_run["dir"] / "best.ckpt")))
    one = _top_k(out.strip().splitlines()[-1])
    for ranked in (seven, one):
        assert len(ranked) == 3
        probabilities = [p for _, p in ranked]
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1.0 + 1e-6


def test_predict_rgb_jpeg_with_a_three_channel_model(tmp_path: Path) -> None:
    ckpt = _save_other_network(tmp_path, "dataset: cifar10\nmodel: resnet20\n", in_channels=3)
    pixels = np.random.default_rng(0).integers(0, 255, (61, 97, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", quality=90)
    out = _ok(run_command("-m", "ms_resnet", "predict", str(tmp_path / "photo.jpg"), "--ckpt",
                          str(ckpt), "--top_k", "3"))
    ranked = _top_k(out.strip().splitlines()[-1])
    cifar = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck")
    assert len(ranked) == 3 and all(name in cifar for name, _ in ranked)
    assert sum(p for _, p in ranked) <= 1.0 + 1e-6


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file, expected an image"),
    (b"hello, not an image", "not a readable image"),
])
def test_predict_refuses_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    ckpt = _save_other_network(tmp_path, "dataset: mnist\nmodel: resnet20\n", in_channels=1)
    (tmp_path / "bad.png").write_bytes(content)
    _one_line_error(run_command("-m", "ms_resnet", "predict", str(tmp_path / "bad.png"),
                                "--ckpt", str(ckpt)), "bad.png", message)


def test_predict_refuses_huge_images_before_decoding(tmp_path: Path) -> None:
    from ms_resnet.inference import load_image

    Image.new("L", (3000, 2000)).save(tmp_path / "big.png")
    classifier = Classifier(None, "mnist", tuple("0123456789"), 1, 28, (0.1,), (0.3,), "x")
    with pytest.raises(UserError, match="3000x2000 image is larger than the limit of 1000000"):
        load_image(tmp_path / "big.png", classifier, max_pixels=1_000_000)


def test_docs_standalone_inference_snippet_runs(mnist_run: dict, tmp_path: Path) -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text(
        encoding="utf-8")
    block = page.split("<!-- standalone-inference -->", 1)[1]
    code = block.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 12
    for name in ("best.mindir", "best.json"):
        (tmp_path / name).write_bytes((mnist_run["dir"] / name).read_bytes())
    (tmp_path / "snippet.py").write_text(code)
    out = _ok(run_command("snippet.py", cwd=tmp_path))
    label, probability = out.split()
    assert label in [str(d) for d in range(10)] and 0.1 <= float(probability) <= 1.0
