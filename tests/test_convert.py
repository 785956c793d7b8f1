"""`ms-resnet convert`: MindCV and torchvision ResNets (random weights, BatchNorm statistics away
from 0/1 so that a wrong mapping or eps shows) give the same logits after conversion, through
the checkpoint and through the exported MindIR; bad files get one line each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from ms_resnet.convert import convert
from ms_resnet.inference import from_checkpoint, from_mindir
from tests.conftest import need_torch, run_command

SIZE = 96  # above 64 px: the 7x7 stem with its max-pool, at a fraction of 224 px's cost
TOLERANCE = 1e-4  # relative to the largest logit


def images(count: int = 4) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((count, 3, SIZE, SIZE)).astype(np.float32)


def mindcv_file(depth: int, folder: Path) -> tuple[Path, np.ndarray]:
    """A MindCV ResNet with random weights and BN statistics, saved as MindCV saves it; and its
    logits for `images()`."""
    import mindcv

    net = mindcv.create_model(f"resnet{depth}", num_classes=1000)
    rng = np.random.default_rng(depth)
    for param in net.get_parameters():
        values = {"moving_mean": rng.normal(0, 0.5, param.shape),
                  "moving_variance": rng.uniform(0.5, 2.0, param.shape),
                  "gamma": rng.uniform(0.5, 1.5, param.shape),
                  "beta": rng.normal(0, 0.2, param.shape)}.get(param.name.rsplit(".", 1)[-1])
        if values is not None:
            param.set_data(ms.Tensor(values.astype(np.float32)))
    path = folder / f"mindcv_resnet{depth}.ckpt"
    ms.save_checkpoint(net, str(path))
    net.set_train(False)
    return path, net(ms.Tensor(images())).asnumpy()


def torchvision_state(depth: int):
    """torchvision's ResNet-`depth` (tests/torchvision_twin.py) with random weights and BN
    statistics; and its logits for `images()`."""
    need_torch()
    import torch

    from tests.torchvision_twin import ResNet

    torch.manual_seed(depth)
    net = ResNet(depth)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
        net.eval()
        logits = net(torch.from_numpy(images())).numpy()
    return net.state_dict(), logits


def check_parity(folder: Path, reference: np.ndarray) -> None:
    for classifier in (from_checkpoint(folder / "best.ckpt"), from_mindir(folder / "best.mindir")):
        logits = classifier.logits(images())
        error = np.abs(logits - reference).max() / np.abs(reference).max()
        assert error <= TOLERANCE, (classifier.source, error)
        assert (logits.argmax(axis=1) == reference.argmax(axis=1)).all(), classifier.source


def _slow(*values: object) -> object:
    return pytest.param(*values, marks=pytest.mark.slow)


# Every depth from both frameworks. One of each block (basic: 18, bottleneck: 50) in the default
# run (torchvision's resnet18 through the CLI below); the other depths repeat those blocks more
# often, and take minutes together: CI's second step (`python -m pytest -m slow`) runs them.
@pytest.mark.parametrize("depth", [18, 50, _slow(34), _slow(101), _slow(152)])
def test_mindcv_checkpoints_convert_to_the_same_logits(depth: int, tmp_path: Path) -> None:
    source, reference = mindcv_file(depth, tmp_path)
    # parity_samples=0: check_parity below compares the MindIR itself.
    convert(source, tmp_path / "out", image_size=SIZE, parity_samples=0)
    config = (tmp_path / "out" / "config.yaml").read_text()
    assert f"model: resnet{depth}" in config and "stem_pool_padding: same" in config
    check_parity(tmp_path / "out", reference)


@pytest.mark.parametrize(("depth", "suffix"), [
    (50, ".pth"), _slow(34, ".safetensors"), _slow(101, ".pth"), _slow(152, ".safetensors")])
def test_torchvision_state_dicts_convert_to_the_same_logits(depth: int, suffix: str,
                                                            tmp_path: Path) -> None:
    need_torch()
    import torch

    state, reference = torchvision_state(depth)
    source = tmp_path / f"resnet{depth}{suffix}"
    if suffix == ".pth":
        torch.save(state, source)
    else:
        from safetensors.torch import save_file

        save_file({name: value.contiguous() for name, value in state.items()}, str(source))
    convert(source, tmp_path / "out", image_size=SIZE, parity_samples=0)
    assert "stem_pool_padding: symmetric" in (tmp_path / "out" / "config.yaml").read_text()
    check_parity(tmp_path / "out", reference)


def test_a_converted_safetensors_file_serves_predict_and_xihe_pack(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    need_torch()
    from safetensors.torch import save_file

    state, reference = torchvision_state(18)
    save_file({name: value.contiguous() for name, value in state.items()},
              str(tmp_path / "resnet18.safetensors"))
    result = run_command("-m", "ms_resnet", "convert", str(tmp_path / "resnet18.safetensors"),
                         "--out", str(tmp_path / "model"), "--image_size", str(SIZE))
    assert result.returncode == 0, result.stderr[-2000:]
    check_parity(tmp_path / "model", reference)
    sidecar = json.loads((tmp_path / "model" / "best.json").read_text())
    assert len(sidecar["classes"]) == 1000 and sidecar["classes"][:2] == ["tench", "goldfish"]
    assert sidecar["mean"] == [0.485, 0.456, 0.406] and sidecar["input_shape"][2] == SIZE
    from PIL import Image

    Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 150, 3), np.uint8)).save(
        tmp_path / "photo.jpg")
    from ms_resnet.cli import run

    capsys.readouterr()
    assert run("predict", [str(tmp_path / "photo.jpg"), "--mindir",
                           str(tmp_path / "model" / "best.mindir")]) == 0
    names = [part.rsplit(" ", 1)[0].strip('"') for part in
             capsys.readouterr().out.strip().splitlines()[-1].split(": ", 1)[1].split(", ")]
    assert len(names) == 3 and all(name in sidecar["classes"] for name in names)
    assert run("xihe-pack", ["--ckpt_dir", str(tmp_path / "model"), "--out",
                             str(tmp_path / "xihe")]) == 0
    assert (tmp_path / "xihe" / "model" / "best_explain.mindir").is_file()


def test_a_converted_model_goes_back_to_torchvision(tmp_path: Path, mnist_run: dict,
                                                   capsys: pytest.CaptureFixture) -> None:
    """--to torchvision: the round trip gives back every tensor of the torchvision state dict,
    which the torchvision twin loads strictly and runs to the same logits; what torchvision has
    no twin of is refused with one line."""
    need_torch()
    import torch
    from safetensors.numpy import load_file

    from ms_resnet.cli import run
    from tests.torchvision_twin import ResNet

    state, reference = torchvision_state(18)
    torch.save(state, tmp_path / "resnet18.pth")
    convert(tmp_path / "resnet18.pth", tmp_path / "model", image_size=SIZE, parity_samples=0)
    for suffix in (".safetensors", ".pth"):
        back = tmp_path / f"back{suffix}"
        assert run("convert", [str(tmp_path / "model"), "--to", "torchvision", "--out",
                               str(back)]) == 0
        tensors = (load_file(str(back)) if suffix == ".safetensors" else
                   {k: v.numpy() for k, v in torch.load(back, weights_only=True).items()})
        assert sorted(tensors) == sorted(state)
        for name, value in state.items():
            np.testing.assert_array_equal(tensors[name], value.numpy(), err_msg=name)
    net = ResNet(18)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    with torch.no_grad():
        np.testing.assert_array_equal(net.eval()(torch.from_numpy(images())).numpy(), reference)
    capsys.readouterr()
    assert run("convert", [str(mnist_run["dir"]), "--to", "torchvision", "--out",
                           str(tmp_path / "r20.pth")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "best.ckpt: a resnet20; torchvision has resnet18, resnet34, resnet50, resnet101, "
        "resnet152 only")


def test_a_checkpoint_larger_than_the_free_memory_loads(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """MindSpore 2.10 refuses a .ckpt larger than the free memory (SC_AVPHYS_PAGES), the page
    cache left out: in CI a converted resnet152 (241 MB) was refused with 230 MB free and 22 GB
    available. ms_resnet's loading counts what Linux says is available."""
    import os

    from ms_resnet.checkpoint import load_pretrained
    from ms_resnet.models import create_model
    from ms_resnet.published import read_weights

    source, _ = mindcv_file(18, tmp_path)
    real_sysconf = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 1 if name == "SC_AVPHYS_PAGES"
                        else real_sysconf(name))  # 1 page free: a machine with a full cache
    assert read_weights(source)["conv1.weight"].shape == (64, 3, 7, 7)
    net = create_model("resnet18", num_classes=1000, in_channels=3, image_size=SIZE)
    assert load_pretrained(net, source, "resnet18") == []


def test_bad_files_get_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ms_resnet.cli import run

    def _one_line(args: list[str], *parts: str) -> None:
        capsys.readouterr()
        code = run("convert", args)
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
        assert all(part in lines[0] for part in parts), lines[0]

    source, _ = mindcv_file(18, tmp_path)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(source.read_bytes()[:100_000])
    out = ["--out", str(tmp_path / "out")]
    _one_line([str(truncated), *out], "truncated.ckpt: not a readable .ckpt file")
    _one_line([str(source), "--model", "resnet34", *out],
              "a resnet18 file, not resnet34 (--model)")
    from ms_resnet.models import create_model

    ms.save_checkpoint(create_model("resnet20"), str(tmp_path / "cifar.ckpt"))
    _one_line([str(tmp_path / "cifar.ckpt"), *out], "not a ResNet of torchvision, timm or MindCV")
    (tmp_path / "weights.bin").write_bytes(b"x")
    _one_line([str(tmp_path / "weights.bin"), *out], "expected a .ckpt")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_pth_without_pytorch_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "resnet50.pth").write_bytes(b"PK")
    code = ("import sys; sys.modules['torch'] = None; from ms_resnet.cli import run; "
            f"sys.exit(run('convert', [{str(tmp_path / 'resnet50.pth')!r}, '--out', "
            f"{str(tmp_path / 'out')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'resnet50.pth'}: reading a PyTorch .pth file needs PyTorch (pip "
        "install torch); the same weights as .safetensors need only `pip install safetensors`")


def test_pretrained_takes_published_files_and_a_converted_folder(tmp_path: Path) -> None:
    """--pretrained (checkpoint.load_pretrained): the three formats and convert's folder load
    into a network with another classifier, which is re-initialised and named."""
    need_torch()
    from safetensors.torch import save_file

    from ms_resnet.checkpoint import load_pretrained
    from ms_resnet.errors import CheckpointError
    from ms_resnet.models import create_model

    state, _ = torchvision_state(18)
    save_file({name: value.contiguous() for name, value in state.items()},
              str(tmp_path / "tv.safetensors"))
    source, _ = mindcv_file(18, tmp_path)
    convert(tmp_path / "tv.safetensors", tmp_path / "converted", image_size=SIZE,
            parity_samples=0)
    expected = state["layer2.0.conv1.weight"].numpy()
    for pretrained in (tmp_path / "tv.safetensors", source, tmp_path / "converted"):
        net = create_model("resnet18", num_classes=3, in_channels=3, image_size=SIZE)
        skipped = load_pretrained(net, pretrained, "resnet18")
        assert skipped == ["fc.weight (1000, 512) -> (3, 512)", "fc.bias (1000,) -> (3,)"]
        loaded = dict(net.parameters_and_names())["layers.1.0.branch.0.weight"].asnumpy()
        if pretrained != source:  # MindCV's file has its own random weights
            np.testing.assert_array_equal(loaded, expected)
    with pytest.raises(CheckpointError, match="a resnet18 file, but this run trains resnet34"):
        load_pretrained(create_model("resnet34", 3, 3, SIZE), tmp_path / "tv.safetensors",
                        "resnet34")


def test_named_sources_download_once_and_check_the_published_hash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """A URL (file:// here: no network) is fetched into $MS_RESNET_CACHE/weights and checked
    against the SHA-256 prefix in its name; a wrong file is deleted; offline, a named source
    says which URL failed and where to put the file."""
    need_torch()
    import hashlib

    import torch

    from ms_resnet.cli import run
    from ms_resnet.data.prepare import cache_root
    from ms_resnet.errors import UserError
    from ms_resnet.weights import PUBLISHED, resolve

    state, _ = torchvision_state(18)
    plain = tmp_path / "plain.pth"
    torch.save(state, plain)
    sha256 = hashlib.sha256(plain.read_bytes()).hexdigest()
    published = tmp_path / "server" / f"resnet18-{sha256[:8]}.pth"
    published.parent.mkdir()
    plain.rename(published)
    local = resolve(published.as_uri())
    assert local == cache_root() / "weights" / published.name
    assert local.read_bytes() == published.read_bytes()
    published.unlink()
    assert resolve(published.as_uri()) == local  # from the cache, not the server

    damaged = tmp_path / "server" / "resnet18-00000000.pth"
    damaged.write_bytes(local.read_bytes())
    with pytest.raises(UserError, match="resnet18-00000000.pth has SHA-256 .* not the published "
                                        "00000000"):
        resolve(damaged.as_uri())
    assert not (cache_root() / "weights" / damaged.name).exists()

    monkeypatch.setenv("MS_RESNET_WEIGHTS_MIRROR", (tmp_path / "empty").as_uri())
    target = cache_root() / "weights" / PUBLISHED["torchvision:resnet50"].file
    capsys.readouterr()
    code = run("convert", ["torchvision:resnet50", "--out", str(tmp_path / "out")])
    assert code == 2 and capsys.readouterr().err.strip() == (
        f"error: torchvision:resnet50: cannot download {(tmp_path / 'empty').as_uri()}/"
        "resnet50-11ad3fa6.pth (No such file or directory); on a machine without access, "
        f"download it elsewhere and put it at {target} (or set MS_RESNET_WEIGHTS_MIRROR)")
    assert run("convert", ["torchvision:resnet51", "--out", str(tmp_path / "out")]) == 2
    assert "torchvision:resnet51: unknown weights; choose one of torchvision:resnet18" in \
        capsys.readouterr().err
