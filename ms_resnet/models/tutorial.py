"""Port of the PyTorch tutorial's small ResNet."""

from .registry import register_model
from .resnet import BasicBlock, ResNet, conv_bn_relu


@register_model
def tutorial_resnet(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                    **kwargs) -> ResNet:
    """Tutorial ResNet: 3x3/3 stem to 32 channels, four stride-1 BasicBlocks, pool, Dense.

    The stem conv uses padding 1, so 28x28 inputs become 10x10 and 32x32 become 11x11.
    Blocks go 32->64->128->256->256 with 1x1 conv+BN projections where channels change
    (identity for 256->256). ``image_size`` is ignored.
    """
    stem = conv_bn_relu(in_channels, 32, 3, 3, 1)
    return ResNet(BasicBlock, (1, 1, 1, 1), (64, 128, 256, 256), (1, 1, 1, 1), stem, 32,
                  num_classes=num_classes, **kwargs)
