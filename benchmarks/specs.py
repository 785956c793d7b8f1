"""Model specs shared by the benchmark scripts: "MODEL:CxS", e.g. "resnet20:1x28".

Kept free of torch and mindspore so that each framework's worker process imports only its own
framework (peak RSS is measured per framework).
"""

from __future__ import annotations

import argparse
from collections.abc import Collection


def parse_spec(spec: str, inputs: Collection[tuple[int, int]] | None = None
               ) -> tuple[str, int, int]:
    """'resnet20:1x28' -> ('resnet20', 1, 28); `inputs` limits the (channels, size) allowed."""
    try:
        name, shape = spec.split(":")
        channels, size = (int(v) for v in shape.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MODEL:CxS such as resnet20:1x28, "
                                         f"got {spec!r}") from None
    if inputs is not None and (channels, size) not in inputs:
        raise argparse.ArgumentTypeError(f"{spec}: input must be one of "
                                         f"{', '.join(f'{c}x{s}' for c, s in inputs)}")
    return name, channels, size
