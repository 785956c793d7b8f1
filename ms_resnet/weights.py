"""Published ImageNet weights by name, for `--pretrained` and `ms-resnet convert`:
`torchvision:resnet50`, `mindcv:resnet50`, `timm:resnet50.a1_in1k`, ... or any http(s)/file URL.

A file is downloaded once into $MS_RESNET_CACHE/weights (default ~/.cache/ms_resnet/weights),
with a progress bar, and checked before it is used. The check is the published hash: the
8 hex digits in the file name (`resnet50-11ad3fa6.pth`) are the start of its SHA-256, the
convention of torch hub; MindCV names its files the same way but publishes no rule, so an MD5
prefix is accepted there too. Hugging Face (timm) sends the SHA-256 in its X-Linked-ETag header.
$MS_RESNET_WEIGHTS_MIRROR (a URL or file:// folder holding the files under their cache names)
replaces the publishers' servers, for machines that cannot reach them.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ms_resnet.data.download import fetch
from ms_resnet.data.prepare import cache_root
from ms_resnet.errors import UserError

_TORCHVISION = "https://download.pytorch.org/models/"
_MINDCV = "https://download.mindspore.cn/toolkits/mindcv/resnet/"
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8})\.[a-z]+$")


@dataclass(frozen=True)
class Published:
    url: str
    top1: float | None = None  # the publisher's ImageNet top-1 (%), where it states one
    cache_name: str | None = None  # when the URL's file name is not unique (Hugging Face)

    @property
    def file(self) -> str:
        return self.cache_name or self.url.rsplit("/", 1)[-1]


def _timm(name: str) -> Published:
    return Published(f"https://huggingface.co/timm/{name}/resolve/main/model.safetensors",
                     cache_name=f"timm-{name}.safetensors")


# torchvision's top-1 from its weights' metadata; MindCV's resnet50 from its model table.
PUBLISHED = {
    "torchvision:resnet18": Published(f"{_TORCHVISION}resnet18-f37072fd.pth", 69.758),
    "torchvision:resnet34": Published(f"{_TORCHVISION}resnet34-b627a593.pth", 73.314),
    "torchvision:resnet50": Published(f"{_TORCHVISION}resnet50-11ad3fa6.pth", 80.858),
    "torchvision:resnet50.v1": Published(f"{_TORCHVISION}resnet50-0676ba61.pth", 76.130),
    "torchvision:resnet101": Published(f"{_TORCHVISION}resnet101-cd907fc2.pth", 81.886),
    "torchvision:resnet101.v1": Published(f"{_TORCHVISION}resnet101-63fe2227.pth", 77.374),
    "torchvision:resnet152": Published(f"{_TORCHVISION}resnet152-f82ba261.pth", 82.284),
    "torchvision:resnet152.v1": Published(f"{_TORCHVISION}resnet152-394f9c45.pth", 78.312),
    "mindcv:resnet18": Published(f"{_MINDCV}resnet18-1e65cd21.ckpt"),
    "mindcv:resnet34": Published(f"{_MINDCV}resnet34-f297d27e.ckpt"),
    "mindcv:resnet50": Published(f"{_MINDCV}resnet50-e0733ab8.ckpt", 76.76),
    "mindcv:resnet101": Published(f"{_MINDCV}resnet101-689c5e77.ckpt"),
    "mindcv:resnet152": Published(f"{_MINDCV}resnet152-beb689d8.ckpt"),
    **{f"timm:{name}": _timm(name) for name in (
        "resnet18.a1_in1k", "resnet34.a1_in1k", "resnet50.a1_in1k", "resnet101.a1_in1k",
        "resnet152.a1_in1k", "resnet50.tv_in1k", "resnet50.tv2_in1k")},
}
_SCHEMES = ("http://", "https://", "file://")


def is_named(source: str) -> bool:
    """A name (torchvision:..., mindcv:..., timm:...) or a URL, rather than a local path."""
    return source.startswith(_SCHEMES) or source.split(":", 1)[0] in ("torchvision", "mindcv",
                                                                        "timm")


def _digest(path: Path, kind: str) -> str:
    digest = hashlib.new(kind)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path, source: str, etag: str | None) -> None:
    """The published hash, where there is one; a file that fails it is deleted."""
    match = _HASH_IN_NAME.search(path.name)
    expected = etag.strip('"').lower() if etag and re.fullmatch(r'"?[0-9a-f]{64}"?', etag) \
        else match.group(1) if match else None
    if expected is None:
        return
    sha256 = _digest(path, "sha256")
    if sha256.startswith(expected) or (source.startswith("mindcv:")
                                       and _digest(path, "md5").startswith(expected)):
        return
    path.unlink()
    raise UserError(f"{source}: {path.name} has SHA-256 {sha256[:16]}..., not the published "
                    f"{expected[:16]}...: a damaged or different file (deleted; try again)")


def resolve(source: str, timeout: float = 60.0) -> Path:
    """The local file of a named source or URL, downloaded (and checked) on first use."""
    if source in PUBLISHED:
        entry = PUBLISHED[source]
    elif source.startswith(_SCHEMES):
        entry = Published(source)
    else:
        raise UserError(f"{source}: unknown weights; choose one of {', '.join(PUBLISHED)}, a URL, "
                        "or a local file")
    target = cache_root() / "weights" / entry.file
    if target.is_file():
        return target
    mirror = os.environ.get("MS_RESNET_WEIGHTS_MIRROR")
    url = f"{mirror.rstrip('/')}/{entry.file}" if mirror and source in PUBLISHED else entry.url
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        etag = fetch(url, target, timeout)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        reason = getattr(reason, "strerror", None) or reason  # an OSError names the path again
        raise UserError(f"{source}: cannot download {url} ({reason}); on a machine without "
                        f"access, download it elsewhere and put it at {target} (or set "
                        "MS_RESNET_WEIGHTS_MIRROR)") from None
    _check(target, source, etag)
    return target
