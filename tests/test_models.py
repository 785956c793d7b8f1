"""Tests for ms_resnet.models: shapes, parameter counts, shortcuts, init and graph mode."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from ms_resnet.models import (
    BasicBlock,
    Bottleneck,
    FlipAverage,
    PoolBlock,
    ZeroPadShortcut,
    create_model,
    list_models,
)

EXPECTED_MODELS = [
    "fast_resnet14", "fast_resnet14_wide", "fast_resnet8", "fullres_resnet14", "pool_resnet8",
    "resnet101", "resnet110", "resnet152", "resnet18", "resnet20", "resnet32", "resnet34",
    "resnet44", "resnet50", "resnet56", "tutorial_resnet",
]
DEEP = {"resnet101", "resnet152"}


def n_params(net: nn.Cell) -> int:
    return sum(p.size for p in net.trainable_params())


def tensor(*shape: int, seed: int = 0) -> ms.Tensor:
    return ms.Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def blocks(net: nn.Cell) -> list[nn.Cell]:
    return [c for _, c in net.cells_and_names() if isinstance(c, (BasicBlock, Bottleneck))]


# set_device replaces the deprecated set_context(device_target=...) in MindSpore 2.10.
ms.set_device("CPU")


@pytest.fixture(autouse=True)
def _pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


def test_registry_lists_all_models():
    assert list_models() == EXPECTED_MODELS


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match="unknown model 'resnet7'; choose one of: fast_resnet14, "):
        create_model("resnet7")


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "resnet50", "tutorial_resnet",
                                  "fast_resnet8"])
def test_bad_shortcut_raises(name):
    with pytest.raises(ValueError, match="shortcut"):
        create_model(name, shortcut="C")


def test_block_bad_shortcut_raises():
    with pytest.raises(ValueError, match="shortcut"):
        BasicBlock(16, 16, shortcut="C")


@pytest.mark.parametrize(("in_channels", "size"), [(1, 28), (3, 32)])
@pytest.mark.parametrize("name", EXPECTED_MODELS)
def test_forward_shape(name, in_channels, size):
    batch = 1 if name in DEEP else 2
    net = create_model(name, num_classes=7, in_channels=in_channels, image_size=size)
    out = net(tensor(batch, in_channels, size, size))
    assert out.shape == (batch, 7)
    assert np.isfinite(out.asnumpy()).all()


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        # 3x3 stem 464 + stages 14,016 / 51,072 / 203,520 + Dense 650 (He et al.: 0.27M).
        ("resnet20", {"shortcut": "A"}, 269_722),
        # B adds 1x1 conv + BN projections 16->32 (512 + 64) and 32->64 (2048 + 128).
        ("resnet20", {"shortcut": "B"}, 272_474),
        # torchvision resnet18 / resnet50 (BN moving statistics are not trainable).
        ("resnet18", {"num_classes": 1000, "image_size": 224}, 11_689_512),
        ("resnet50", {"num_classes": 1000, "image_size": 224}, 25_557_032),
        ("tutorial_resnet", {"in_channels": 1}, 2_390_506),
        # stem 288 + 64, stages 18,560 / 57,728 / 230,144 (with 1x1 projections), Dense 1,290.
        ("fast_resnet8", {"in_channels": 1}, 308_074),
        # stem 176, stages 4,672 / 33,088 / 131,712 / 230,144 (1/2/2/1 blocks), Dense 1,290.
        ("fullres_resnet14", {"in_channels": 1}, 401_082),
        # fast_resnet14 x1.5 wide: stem 528, stages 83,328 / 295,872 / 1,181,568, Dense 1,930.
        ("fast_resnet14_wide", {"in_channels": 1}, 1_563_226),
        # 2x2 stem 288 + 24 bias, stages (conv + BN, twice) 50,944 / 738,304 / 1,180,672,
        # Dense 2,570.
        ("pool_resnet8", {}, 1_972_802),
    ],
)
def test_parameter_counts(name, kwargs, expected):
    assert n_params(create_model(name, **kwargs)) == expected


def test_resnet20_size_and_shortcut_a_is_cheaper():
    a = n_params(create_model("resnet20", shortcut="A"))
    b = n_params(create_model("resnet20", shortcut="B"))
    assert 260_000 <= a < b <= 280_000


def test_stem_depends_on_image_size():
    small = create_model("resnet18", image_size=64)
    large = create_model("resnet18", image_size=224)
    assert not any(isinstance(c, nn.MaxPool2d) for _, c in small.cells_and_names())
    assert any(isinstance(c, nn.MaxPool2d) for _, c in large.cells_and_names())
    assert small.stem[0].kernel_size == (3, 3) and small.stem[0].stride == (1, 1)
    assert large.stem[0].kernel_size == (7, 7) and large.stem[0].stride == (2, 2)
    assert large(tensor(1, 3, 96, 96)).shape == (1, 10)


def test_large_image_stem_pool_equals_padded_max_pool():
    """The stem's zero-pad + valid max-pool is torchvision's MaxPool2d(3, 2, padding=1) on the
    non-negative (post-ReLU) activations it receives."""
    stem = create_model("resnet18", 10, 3, 96).stem
    pad, pool = stem[3], stem[4]
    x = ms.Tensor(np.random.default_rng(0).random((2, 4, 48, 48), dtype=np.float32))
    reference = nn.MaxPool2d(3, 2, pad_mode="pad", padding=1)(x)
    np.testing.assert_array_equal(pool(pad(x)).asnumpy(), reference.asnumpy())


def test_cifar_layout():
    net = create_model("resnet56")
    stages = list(net.layers)
    assert [len(s) for s in stages] == [9, 9, 9]
    assert [s[0].branch[0].out_channels for s in stages] == [16, 32, 64]
    assert sum(isinstance(b.shortcut, ZeroPadShortcut) for b in blocks(net)) == 2


def test_tutorial_layout():
    net = create_model("tutorial_resnet", in_channels=1)
    assert net.stem(tensor(1, 1, 28, 28)).shape == (1, 32, 10, 10)
    assert net.stem(tensor(1, 1, 32, 32)).shape == (1, 32, 11, 11)
    bs = blocks(net)
    assert [b.branch[0].out_channels for b in bs] == [64, 128, 256, 256]
    assert all(isinstance(b.shortcut, nn.SequentialCell) for b in bs[:3])
    assert isinstance(bs[3].shortcut, nn.Identity)


@pytest.mark.parametrize(("stride", "in_ch", "out_ch"), [(2, 16, 32), (1, 16, 32), (2, 3, 8)])
def test_zero_pad_shortcut_matches_numpy(stride, in_ch, out_ch):
    cell = ZeroPadShortcut(in_ch, out_ch, stride)
    assert len(cell.trainable_params()) == 0 and not list(cell.get_parameters())
    x = tensor(2, in_ch, 9, 9)
    sub = x.asnumpy()[:, :, ::stride, ::stride]
    extra = out_ch - in_ch
    expected = np.pad(sub, ((0, 0), (extra // 2, extra - extra // 2), (0, 0), (0, 0)))
    np.testing.assert_array_equal(cell(x).asnumpy(), expected)


def _check_block(block: nn.Cell, x: ms.Tensor) -> None:
    expected = np.maximum(block.branch(x).asnumpy() + block.shortcut(x).asnumpy(), 0)
    np.testing.assert_allclose(block(x).asnumpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shortcut", ["A", "B"])
@pytest.mark.parametrize("stride", [1, 2])
def test_basic_block_is_relu_branch_plus_shortcut(shortcut, stride):
    block = BasicBlock(16, 32, stride, shortcut)
    want = ZeroPadShortcut if shortcut == "A" else nn.SequentialCell
    assert isinstance(block.shortcut, want)
    x = tensor(2, 16, 8, 8)
    assert block(x).shape == (2, 32, 8 // stride, 8 // stride)
    _check_block(block, x)
    _check_block(BasicBlock(16, 16), x)  # identity shortcut


@pytest.mark.parametrize("shortcut", ["A", "B"])
@pytest.mark.parametrize("stride", [1, 2])
def test_bottleneck_is_relu_branch_plus_shortcut(shortcut, stride):
    block = Bottleneck(32, 16, stride, shortcut)
    x = tensor(2, 32, 8, 8)
    assert block(x).shape == (2, 64, 8 // stride, 8 // stride)
    assert block.branch[3].stride == (stride, stride)  # v1.5: stride on the 3x3
    _check_block(block, x)


@pytest.mark.parametrize("block_cls", [BasicBlock, Bottleneck])
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_zero_init_residual_block(block_cls, shortcut):
    block = block_cls(16, 16, 2, shortcut, zero_init_residual=True)
    assert not block.branch[-1].gamma.asnumpy().any()
    x = tensor(2, 16, 8, 8)
    expected = np.maximum(block.shortcut(x).asnumpy(), 0)
    np.testing.assert_allclose(block(x).asnumpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_zero_init_residual_model(name):
    net = create_model(name, zero_init_residual=True)
    last = {id(b.branch[-1]) for b in blocks(net)}
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            assert (cell.gamma.asnumpy() == (0 if id(cell) in last else 1)).all()
    default = create_model(name)
    assert all(b.branch[-1].gamma.asnumpy().all() for b in blocks(default))


def test_weight_init():
    net = create_model("resnet18")
    conv = net.layers[1][1].branch[0]  # 3x3, 128 -> 128
    std = conv.weight.asnumpy().std()
    assert abs(std - np.sqrt(2 / (128 * 9))) < 0.05 * np.sqrt(2 / (128 * 9))
    bn = net.layers[1][1].branch[1]
    assert (bn.gamma.asnumpy() == 1).all() and (bn.beta.asnumpy() == 0).all()
    assert net.fc.bias is not None


@pytest.mark.parametrize(
    ("name", "in_channels", "size", "kwargs"),
    [
        ("resnet20", 3, 32, {}),
        ("resnet20", 1, 28, {}),
        ("tutorial_resnet", 1, 28, {}),
        ("resnet18", 3, 96, {"image_size": 96}),
    ],
)
def test_graph_mode_forward(graph_mode, name, in_channels, size, kwargs):
    assert ms.get_context("mode") == ms.GRAPH_MODE
    net = create_model(name, in_channels=in_channels, **kwargs)
    net.set_train(False)
    x = tensor(2, in_channels, size, size)
    out = net(x).asnumpy()
    assert out.shape == (2, 10) and np.isfinite(out).all()


def test_graph_mode_matches_pynative(graph_mode):
    net = create_model("resnet20", in_channels=1)
    net.set_train(False)
    x = tensor(2, 1, 28, 28)
    graph_out = net(x).asnumpy()
    ms.set_context(mode=ms.PYNATIVE_MODE)
    np.testing.assert_allclose(net(x).asnumpy(), graph_out, rtol=1e-4, atol=1e-5)


def test_zero_pad_shortcut_graph_mode(graph_mode):
    x = tensor(2, 16, 7, 7)
    expected = np.pad(x.asnumpy()[:, :, ::2, ::2], ((0, 0), (8, 8), (0, 0), (0, 0)))
    np.testing.assert_array_equal(ZeroPadShortcut(16, 32, 2)(x).asnumpy(), expected)


def test_graph_mode_train_step(graph_mode):
    # Gradients must flow through the option-A slice + pad in a compiled graph.
    net = create_model("resnet20", in_channels=1)
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss_fn), nn.SGD(net.trainable_params(), 0.1))
    step.set_train(True)
    x, y = tensor(4, 1, 28, 28), ms.Tensor(np.array([0, 1, 2, 3], dtype=np.int32))
    losses = [float(step(x, y).asnumpy()) for _ in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_flip_average_is_the_mean_over_the_mirror_image(graph_mode):
    net = create_model("fast_resnet8", in_channels=1)
    wrapped = FlipAverage(net)
    wrapped.set_train(False)
    x = tensor(2, 1, 28, 28)
    plain = net(x).asnumpy()
    mirrored = net(ms.Tensor(np.ascontiguousarray(x.asnumpy()[..., ::-1]))).asnumpy()
    averaged = wrapped(x).asnumpy()
    np.testing.assert_allclose(averaged, (plain + mirrored) / 2, rtol=1e-5, atol=1e-6)
    assert np.abs(averaged - plain).max() > 1e-4  # the random input is not mirror-symmetric
    # Unprefixed names: best.ckpt loads into the bare and the wrapped network alike.
    assert [p.name for p in wrapped.get_parameters()] == [p.name for p in net.get_parameters()]


def test_translate_average_adds_two_reflected_one_pixel_shifts(graph_mode):
    net = create_model("fast_resnet8", in_channels=1)
    net.set_train(False)
    wrapped = FlipAverage(net, translate=True)
    x = tensor(2, 1, 28, 28).asnumpy()

    def mirrored(images: np.ndarray) -> np.ndarray:
        return (net(ms.Tensor(np.ascontiguousarray(images))).asnumpy() +
                net(ms.Tensor(np.ascontiguousarray(images[..., ::-1]))).asnumpy()) / 2

    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    expected = (mirrored(x) / 2 + mirrored(padded[:, :, :28, :28]) / 4 +
                mirrored(padded[:, :, 2:, 2:]) / 4)
    averaged = wrapped(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(averaged, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(averaged - FlipAverage(net)(ms.Tensor(x)).asnumpy()).max() > 1e-4


@pytest.mark.parametrize(("block", "in_channels", "channels", "stride"), [
    (BasicBlock, 16, 16, 1), (BasicBlock, 16, 32, 2), (Bottleneck, 64, 16, 1),
    (Bottleneck, 64, 32, 2)])
def test_plain_block_is_relu_of_its_branch(block, in_channels, channels, stride):
    """shortcut 'none' (a plain network) drops the addition: block(x) == ReLU(branch(x)); the
    same block with a shortcut differs by that addition."""
    x = tensor(2, in_channels, 8, 8)
    plain = block(in_channels, channels, stride, shortcut="none")
    assert plain.shortcut is None
    expected = np.maximum(plain.branch(x).asnumpy(), 0)
    np.testing.assert_allclose(plain(x).asnumpy(), expected, rtol=1e-6, atol=1e-6)
    residual = block(in_channels, channels, stride, shortcut="A" if block is BasicBlock else "B")
    ms.load_param_into_net(residual, plain.parameters_dict())
    with_shortcut = residual(x).asnumpy()
    assert not np.allclose(with_shortcut, expected, atol=1e-3)
    np.testing.assert_allclose(
        with_shortcut,
        np.maximum(plain.branch(x).asnumpy() + residual.shortcut(x).asnumpy(), 0), atol=1e-5)


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "resnet18", "resnet50", "fast_resnet8"])
def test_plain_and_residual_networks_have_the_same_parameters_apart_from_projections(name):
    def shapes(shortcut):
        net = create_model(name, in_channels=1, image_size=28, shortcut=shortcut)
        return {p.name: p.shape for p in net.get_parameters()}

    plain, projection = shapes("none"), shapes("B")
    extra = {k: v for k, v in projection.items() if k not in plain}
    assert extra and all(".shortcut." in k for k in extra)  # 1x1 conv + BN projections only
    assert {k: v for k, v in projection.items() if k in plain} == plain
    assert not any(".shortcut." in k for k in plain)
    if name.startswith("resnet") and int(name[6:]) < 100:  # CIFAR nets: option A has no params
        assert shapes("A") == plain


def test_plain_network_trains_in_graph_mode(graph_mode):
    net = create_model("resnet20", in_channels=1, image_size=28, shortcut="none")
    loss = nn.WithLossCell(net, nn.CrossEntropyLoss())
    step = nn.TrainOneStepCell(loss, nn.Momentum(net.trainable_params(), 0.05, 0.9))
    x, y = tensor(8, 1, 28, 28), ms.Tensor(np.arange(8) % 10, ms.int32)
    losses = [float(step(x, y).asnumpy()) for _ in range(4)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_plain_network_refuses_zero_init_residual():
    with pytest.raises(ValueError, match="zero_init_residual needs a shortcut"):
        create_model("resnet20", shortcut="none", zero_init_residual=True)


@pytest.mark.parametrize("shortcut", ["B", "none"])
def test_pool_block_adds_its_branch_to_the_pooled_map(shortcut):
    block = PoolBlock(8, 16, 2, shortcut)
    block.set_train(False)
    x = tensor(2, 8, 9, 9)
    down = block.down(x)
    assert down.shape == (2, 16, 4, 4)  # conv at full size, then the 2x2 max-pool
    expected = block.branch(down) + (down if shortcut == "B" else 0)
    np.testing.assert_allclose(block(x).asnumpy(), expected.asnumpy(), rtol=1e-6)


def test_pool_resnet8_head_is_a_scaled_max_pool():
    net = create_model("pool_resnet8")
    net.set_train(False)
    x = tensor(2, 3, 32, 32)
    features = net.layers(net.stem(x))
    assert features.shape == (2, 256, 3, 3)  # 31 after the 2x2 stem, then 15, 7, 3
    expected = net.fc(ms.Tensor(features.asnumpy().max(axis=(2, 3)))) * 0.125
    np.testing.assert_allclose(net(x).asnumpy(), expected.asnumpy(), rtol=1e-5, atol=1e-6)
