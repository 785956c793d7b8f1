"""Patch whitening of the first convolution (config `whiten_stem`).

A 2x2 stem conv whose filters are the whitening transform of the training images' 2x2 patches
(each principal direction scaled by 1/sqrt(its variance), once with each sign so that the ReLU
after it drops nothing) starts the network on decorrelated, unit-variance inputs. Kept frozen it
saves the first layer's learning, which is what short schedules lack most (Jordan 2024,
airbench: "the single most important trick" for 94% in 10 epochs).
"""

from __future__ import annotations

import numpy as np
from mindspore import Tensor, nn

from ms_resnet.config import Config
from ms_resnet.dataspec import create_split
from ms_resnet.errors import ConfigError

# airbench fits 5,000 images; the estimate of a 12x12 covariance from ~4.8M patches is stable.
WHITENING_IMAGES = 5000
# Added to every variance, so the noise-level directions are not blown up.
EPSILON = 5e-4


def whitening_sample(config: Config) -> np.ndarray:
    """Up to WHITENING_IMAGES training images as the network sees them, without augmentation
    (the PyTorch twin in benchmarks/ whitens from the same images)."""
    data = create_split(config, "train", 500, train=False, num_samples=WHITENING_IMAGES,
                        num_parallel_workers=config.num_parallel_workers)
    return np.concatenate([batch["image"] for batch in
                           data.create_dict_iterator(num_epochs=1, output_numpy=True)])


def whitening_conv(net: nn.Cell, model: str) -> nn.Conv2d:
    """The network's first convolution, which must be a 2x2 conv with a bias and
    2 x 4 x in_channels filters (as pool_resnet8's stem)."""
    conv = next((cell for _, cell in net.cells_and_names() if isinstance(cell, nn.Conv2d)), None)
    if conv is None or tuple(conv.kernel_size) != (2, 2) or conv.bias is None or \
            conv.out_channels != 8 * conv.in_channels:
        raise ConfigError(f"whiten_stem: model {model} does not start with a 2x2 convolution "
                          "with a bias and 8 x in_channels filters (use pool_resnet8)")
    return conv


def patch_whitening(images: np.ndarray, epsilon: float = EPSILON) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """Weight (8C, C, 2, 2) and bias (8C,) of the 2x2 conv that whitens `images`' (N, C, H, W)
    2x2 patches: centred, rotated to the principal directions and scaled to unit variance."""
    _, c, h, w = images.shape
    # Every 2x2 patch as a row of C*4 values, ordered as a (C, 2, 2) conv filter is.
    patches = np.stack([images[:, :, i:h - 1 + i, j:w - 1 + j]
                        for i in range(2) for j in range(2)], axis=2)
    patches = patches.transpose(0, 3, 4, 1, 2).reshape(-1, c * 4)
    mean = patches.mean(axis=0)
    covariance = np.cov(patches, rowvar=False)  # float64, centred
    variances, directions = np.linalg.eigh(covariance)
    # Largest variance first, so filter k is the same direction on every run.
    order = np.argsort(variances)[::-1]
    filters = directions[:, order].T / np.sqrt(variances[order] + epsilon)[:, None]
    filters = np.concatenate([filters, -filters])
    weight = filters.reshape(-1, c, 2, 2).astype(np.float32)
    bias = (-filters @ mean).astype(np.float32)
    return weight, bias


def whiten(conv: nn.Conv2d, images: np.ndarray) -> None:
    """Set `conv` to the patch whitening of `images` (normalised, NCHW)."""
    weight, bias = patch_whitening(images)
    conv.weight.set_data(Tensor(weight))
    conv.bias.set_data(Tensor(bias))


def freeze(conv: nn.Conv2d) -> None:
    """Keep the whitening filters fixed; the bias still trains."""
    conv.weight.requires_grad = False
