"""Config -> network: the registered model sized for the config's dataset, and the form in which
it is evaluated and exported."""

from __future__ import annotations

from typing import Any

import numpy as np
from mindspore import nn

from ms_resnet.config import Config
from ms_resnet.dataspec import dataset_info
from ms_resnet.errors import ConfigError
from ms_resnet.models import IMAGENET_RESNETS, FlipAverage, create_model


def build_network(config: Config) -> nn.Cell:
    info = dataset_info(config)
    return create_model(config.model, num_classes=len(info.classes), in_channels=info.channels,
                        image_size=info.image_size, **model_kwargs(config))


def model_kwargs(config: Config) -> dict[str, Any]:
    """The config's keys that shape the registered model (create_model's keyword arguments;
    the PyTorch twin in benchmarks/ takes the same)."""
    kwargs: dict[str, Any] = {key: getattr(config, key) for key in (
        "zero_init_residual", "dirac_init", "bn_momentum", "freeze_bn_gamma")}
    if config.shortcut:
        kwargs["shortcut"] = config.shortcut
    if config.stem_pool_padding != "symmetric":
        if config.model not in IMAGENET_RESNETS:
            raise ConfigError(f"stem_pool_padding: {config.stem_pool_padding} applies to "
                              f"{', '.join(IMAGENET_RESNETS)} only, not {config.model}")
        kwargs["stem_pool_padding"] = config.stem_pool_padding
    return kwargs


def classifier_names(net: nn.Cell) -> set[str]:
    """Names of the classifier's parameters: the network's last Dense layer (a new head when
    fine-tuning); empty if it has none."""
    dense = [cell for _, cell in net.cells_and_names() if isinstance(cell, nn.Dense)]
    return {param.name for param in dense[-1].get_parameters()} if dense else set()


def inference_network(net: nn.Cell, config: Config) -> nn.Cell:
    """The network as it is evaluated and exported: under `eval_flip`, flip-averaged (and
    under `eval_translate`, also over 1-px shifts)."""
    if not config.eval_flip:
        return net
    return FlipAverage(net, translate=config.eval_translate)


def build_second_network(config: Config) -> nn.Cell:
    """Another instance of the config's network, built without changing the training run:
    initialising draws from NumPy's global RNG, which RandomErasing also draws from."""
    rng_state = np.random.get_state()
    try:
        return build_network(config)
    finally:
        np.random.set_state(rng_state)


def float32_twin(net: nn.Cell, config: Config) -> nn.Cell:
    """A float32 instance of `net`'s architecture that uses `net`'s own parameters.

    Mixed precision (amp O1-O3) casts the trained network in place; its twin computes in float32
    with the same weights, as eval.py and the exported MindIR do, without copying anything."""
    twin = build_second_network(config)
    # By parameter name: amp may have wrapped cells of `net` (BatchNorm under O2), which moves
    # them in the cell tree but keeps their parameters' names.
    params = {param.name: param for param in net.get_parameters()}
    for _, cell in twin.cells_and_names():
        for attribute, param in list(cell.parameters_and_names(expand=False)):
            setattr(cell, attribute, params[param.name])
    return twin
