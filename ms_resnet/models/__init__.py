"""Model registry and the registered networks: ``create_model(name, ...)`` builds any of them
by name."""

# The factories register themselves when their modules are imported here.
from .flip import FlipAverage
from .registry import create_model, list_models, register_model
from .resnet import (
    IMAGENET_RESNETS,
    BasicBlock,
    Bottleneck,
    PoolBlock,
    ResNet,
    ZeroPadShortcut,
)
from .tutorial import tutorial_resnet

__all__ = [
    "IMAGENET_RESNETS",
    "BasicBlock",
    "Bottleneck",
    "FlipAverage",
    "PoolBlock",
    "ResNet",
    "ZeroPadShortcut",
    "create_model",
    "list_models",
    "register_model",
    "tutorial_resnet",
]
