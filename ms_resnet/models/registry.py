"""Model registry: ``register_model`` names a factory, ``create_model(name, ...)`` builds it."""

from collections.abc import Callable

from mindspore import nn

ModelFactory = Callable[..., nn.Cell]

_MODELS: dict[str, ModelFactory] = {}


def register_model(fn: ModelFactory) -> ModelFactory:
    """Decorator: register ``fn`` under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model '{fn.__name__}' is already registered")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_MODELS)


def create_model(
    name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, **kwargs
) -> nn.Cell:
    """Build the registered model ``name``; extra kwargs go to its factory."""
    if name not in _MODELS:
        raise ValueError(f"unknown model '{name}'; choose one of: {', '.join(list_models())}")
    return _MODELS[name](
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs
    )
