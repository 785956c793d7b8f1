"""Config -> network: the registered model sized for the config's dataset, and the form in which
it is evaluated and exported."""

from __future__ import annotations

from mindspore import nn

from ms_resnet.config import Config
from ms_resnet.dataspec import dataset_info
from ms_resnet.models import FlipAverage, create_model


def build_network(config: Config) -> nn.Cell:
    info = dataset_info(config)
    kwargs = {"zero_init_residual": config.zero_init_residual}
    if config.shortcut:
        kwargs["shortcut"] = config.shortcut
    return create_model(config.model, num_classes=len(info.classes), in_channels=info.channels,
                        image_size=info.image_size, **kwargs)


def inference_network(net: nn.Cell, config: Config) -> nn.Cell:
    """The network as it is evaluated and exported: under `eval_flip`, flip-averaged."""
    return FlipAverage(net) if config.eval_flip else net
