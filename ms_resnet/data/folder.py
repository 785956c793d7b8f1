"""Your own images: a folder of class folders, read by `mindspore.dataset.ImageFolderDataset`.

    DIR/train/<class>/*.png|jpg|jpeg|bmp     the class names are the folder names, sorted
    DIR/test/<class>/...  (or DIR/val/...)   optional; else `val_split` of train/ is held out

One rule decides what a folder holds (`scan_folder`), and everything reads that one list: the
checks, the mean/std pass, the train/val split and MindSpore's reader, which is handed a view of
it (a folder of links under $MS_RESNET_CACHE) rather than the user's folder. Extensions match in
any case (.JPG, .Jpg); hidden files (.DS_Store, macOS's ._* AppleDouble files), Thumbs.db and
__MACOSX/ are not images; symbolic links are followed, and a broken one is named.

Images are decoded on the fly (nothing is preloaded), converted to grey or RGB and resized.
Before the first read every file's header (and, for JPEG and PNG, its end marker) is checked
once: MindSpore's decoder can take the whole process down on a truncated file (a floating-point
exception in libjpeg) instead of raising, so a damaged image is fatal here, named, up front. The
result of the check and the per-channel mean/std of the training images are cached under
$MS_RESNET_CACHE, keyed by the folder, so they are computed once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ms_resnet.data.prepare import cache_root
from ms_resnet.data.registry import DatasetInfo
from ms_resnet.errors import DataError

if TYPE_CHECKING:
    import mindspore.dataset as ds

# mindspore is imported inside the functions that build pipelines: this module's names (FOLDER,
# AUGMENTATIONS, FolderSpec, scan_folder) are read by processes that must not load it (the
# config's help, the benchmarks' PyTorch workers).

FOLDER = "folder"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
EVAL_FOLDERS = ("test", "val")
# Folders that archives and file managers leave beside the class folders.
NOT_CLASSES = ("__MACOSX",)
AUGMENTATIONS = ("none", "crop", "flip", "crop_flip", "resized_crop", "resized_crop_flip")
STATS_SAMPLE = 2000  # images the mean/std are computed from (all of them if fewer)


@dataclass(frozen=True)
class FolderSpec:
    """How a folder-trained model sees its images: everything but the folder itself, so that
    the saved config (or the MindIR sidecar) describes the model without the training data."""

    classes: tuple[str, ...]
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eval_crop: float = 1.0
    val_split: float = 0.1
    seed: int = 42
    augmentation: str = "crop"
    title: str = "images"

    def info(self) -> DatasetInfo:
        """The registry-style description used for display and metadata."""
        return DatasetInfo(name=FOLDER, title=self.title, reader="ImageFolderDataset",
                           layout=FOLDER, channels=self.channels, image_size=self.image_size,
                           mean=self.mean, std=self.std, classes=self.classes, files=(),
                           hflip="flip" in self.augmentation,
                           crop_padding=crop_padding(self.image_size), homepage="")


@dataclass
class FolderLayout:
    """What `scan_folder` found: the class names and the image files of each split."""

    root: Path
    classes: tuple[str, ...]
    train: list[Path] = field(default_factory=list)
    eval_dir: Path | None = None
    eval_files: list[Path] = field(default_factory=list)
    # The class index of each folder, when the folders are not named after the classes.
    indexing: dict[str, int] | None = None


def crop_padding(image_size: int) -> int:
    """Padding of the random crop: 1/8 of the side, as CIFAR's 4 pixels for 32."""
    return max(1, image_size // 8)


def _is_image(path: Path) -> bool:
    """The one rule: an image by its name (any case of extension), not a hidden file."""
    return path.suffix.lower() in EXTENSIONS and not path.name.startswith(".")


def _is_class_folder(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and path.name not in NOT_CLASSES


def _image_file(path: Path) -> bool:
    """Whether `path` (named like an image) is a file to read; a broken link is an error."""
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except FileNotFoundError:
            raise DataError(f"{path}: broken symbolic link (to {os.readlink(path)}, which does "
                            "not exist); remove it or fix its target") from None
        except (OSError, RuntimeError):
            raise DataError(f"{path}: symbolic link loop; remove it or fix its target") from None
        return target.is_file()
    return path.is_file()


def _class_files(split_dir: Path) -> dict[str, list[Path]]:
    """{class folder: its image files, sorted}, checking what a user may get wrong."""
    entries = sorted(split_dir.iterdir())
    loose = [p.name for p in entries if _is_image(p) and _image_file(p)]
    if loose:
        raise DataError(f"{split_dir}: holds images ({loose[0]}, ...) directly; put each image "
                        f"in a folder named after its class ({split_dir}/<class>/{loose[0]})")
    classes = {}
    for folder in filter(_is_class_folder, entries):
        files = sorted(p for p in folder.iterdir() if _is_image(p) and _image_file(p))
        if not files:
            raise DataError(f"{folder}: empty class folder (no {'/'.join(EXTENSIONS)} files); "
                            "add images or remove the folder")
        classes[folder.name] = files
    return classes


def scan_folder(root: Path, classes: Sequence[str] | None = None) -> FolderLayout:
    """Check DIR/train/<class>/ (and test/ or val/) and list the image files. To evaluate a
    model that knows its `classes`, test/ or val/ alone will do."""
    if not root.is_dir():
        raise DataError(f"--data_dir {root}: folder not found (expected {root}/train/<class>/)")
    train_dir = root / "train"
    eval_dir = next((root / n for n in EVAL_FOLDERS if (root / n).is_dir()), None)
    if not train_dir.is_dir() and classes is not None and eval_dir is not None:
        return _evaluation_layout(root, eval_dir, tuple(classes))
    if not train_dir.is_dir():
        loose = [p.name for p in sorted(root.iterdir()) if _is_image(p) and p.is_file()]
        what = f"it holds images ({loose[0]}, ...) directly" if loose else "no train/ folder"
        raise DataError(f"{root}: {what}; expected {root}/train/<class>/<image> "
                        "(and optionally test/<class>/ or val/<class>/)")
    train = _class_files(train_dir)
    if len(train) < 2:
        found = f"only the class '{next(iter(train))}'" if train else "no class folders"
        raise DataError(f"{train_dir}: {found}; a classifier needs at least 2 class folders")
    classes = tuple(train)
    layout = FolderLayout(root, classes, [f for files in train.values() for f in files])
    if eval_dir is not None:
        evaluated = _class_files(eval_dir)
        unknown = [name for name in evaluated if name not in train]
        if unknown:
            raise DataError(f"{eval_dir / unknown[0]}: class '{unknown[0]}' is not in "
                            f"{train_dir} (its classes: {', '.join(classes)})")
        layout.eval_dir = eval_dir
        layout.eval_files = [f for name in classes for f in evaluated.get(name, [])]
    return layout


def _evaluation_layout(root: Path, eval_dir: Path, classes: tuple[str, ...]) -> FolderLayout:
    """test/ or val/ without train/, for a model with these classes: folders named after (some
    of) them, or one folder per class under other names, taken in sorted order (ImageNet's
    val/<WordNet ID>/ for a converted 1,000-class model)."""
    evaluated = _class_files(eval_dir)
    unknown = [name for name in evaluated if name not in classes]
    if not unknown:
        indexing = {name: classes.index(name) for name in evaluated}
    elif len(evaluated) == len(classes):
        indexing = {name: index for index, name in enumerate(evaluated)}
        print(f"note: {eval_dir}: the {len(classes)} folders are not named after the model's "
              f"classes; sorted, they are taken as its classes in order ({unknown[0]} = "
              f"{classes[indexing[unknown[0]]]})", flush=True)
    else:
        raise DataError(
            f"{eval_dir / unknown[0]}: '{unknown[0]}' is not one of the model's {len(classes)} "
            f"classes ({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); name "
            f"the folders after them, or give exactly one folder per class ({len(classes)}), "
            "which are taken in sorted order")
    # In the folders' sorted order, the order in which MindSpore's reader lists them.
    files = [f for name in evaluated for f in evaluated[name]]
    return FolderLayout(root, classes, eval_dir=eval_dir, eval_files=files, indexing=indexing)


def cache_dir(root: Path) -> Path:
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    path = cache_root() / f"folder-{key}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _signature(files: list[Path]) -> str:
    """Changes when a file is added, removed or rewritten."""
    digest = hashlib.sha1()
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def image_problem(path: Path) -> str | None:
    """Why `path` is not a readable image (None if its header and end look right)."""
    return inspect_image(path)[0]


def inspect_image(path: Path) -> tuple[str | None, str, tuple[int, int]]:
    """(why `path` is not a readable image or None, its Pillow mode, its size).

    Reads the header with Pillow and, for JPEG and PNG, looks for the end marker among the
    last bytes: a truncated download or copy, the common damage, loses it.
    """
    from PIL import Image, UnidentifiedImageError

    mode, width, height = "", 0, 0
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file", mode, (0, 0)
        with Image.open(path) as image:
            kind, mode, (width, height) = image.format, image.mode, image.size
        with open(path, "rb") as f:
            f.seek(max(0, size - 1024))
            tail = f.read()
    except Image.DecompressionBombError as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        what = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        problem = (f"{what}, over twice Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} for one "
                   "image (a decompression bomb, or a scan far larger than training needs); "
                   "downscale it")
        return problem, mode, (0, 0)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return f"not a readable image ({exc})", mode, (0, 0)
    problem = None
    if width < 1 or height < 1:
        problem = f"{width}x{height} image"
    elif kind == "JPEG" and b"\xff\xd9" not in tail:
        problem = "truncated JPEG (no end-of-image marker)"
    elif kind == "PNG" and b"IEND" not in tail:
        problem = "truncated PNG (no IEND chunk)"
    return problem, mode, (width, height)


# Pillow modes by what a user calls them; the reader converts every one of them.
_MODE_NAMES = {"1": "black-and-white", "L": "grey", "LA": "grey with alpha", "P": "palette",
               "RGB": "RGB", "RGBA": "RGB with alpha", "CMYK": "CMYK", "I;16": "16-bit",
               "I;16B": "16-bit", "I": "32-bit integer", "F": "floating-point"}


def check_images(root: Path, files: list[Path]) -> dict:
    """Raise DataError naming the first damaged image; checked once per folder content.
    Returns what the images are: {"modes": {mode: count}, "sizes": {"WxH": count}}."""
    cache = cache_dir(root) / "checked.json"
    signature = _signature(files)
    saved = _read_cache(cache)
    if saved.get("signature") == signature and "modes" in saved:
        return {"modes": saved["modes"], "sizes": saved["sizes"]}
    bad, modes, sizes = [], {}, {}
    for path in files:
        problem, mode, (width, height) = inspect_image(path)
        if problem:
            bad.append((path, problem))
            continue
        modes[mode] = modes.get(mode, 0) + 1
        sizes[f"{width}x{height}"] = sizes.get(f"{width}x{height}", 0) + 1
    if bad:
        more = f" (and {len(bad) - 1} more damaged files)" if len(bad) > 1 else ""
        raise DataError(f"{bad[0][0]}: {bad[0][1]}{more}; damaged images are not skipped: "
                        "delete or replace them")
    _write_cache(cache, {"signature": signature, "files": len(files), "modes": modes,
                         "sizes": sizes})
    return {"modes": modes, "sizes": sizes}


def _images_are(count: int) -> str:
    return f"{count} images are" if count != 1 else "1 image is"


def conversion_notes(found: dict, channels: int, image_size: int) -> list[str]:
    """What the reader does to images that are not already what the network takes: said once
    per run, so that a grey scan or a thumbnail in a photo folder is not a silent surprise."""
    notes = []
    wanted = ("RGB",) if channels == 3 else ("L",)
    other = {mode: count for mode, count in found["modes"].items() if mode not in wanted}
    if other:
        kinds = ", ".join(f"{count} {_MODE_NAMES.get(mode, mode)}"
                          for mode, count in sorted(other.items(), key=lambda i: -i[1]))
        target = "8-bit RGB" if channels == 3 else "8-bit grey"
        notes.append(f"{_images_are(sum(other.values()))} not {target} ({kinds}): each is "
                     f"converted to {target} as it is read")
    small = {size: count for size, count in found["sizes"].items()
             if min(int(side) for side in size.split("x")) < image_size}
    if small:
        smallest = min(small, key=lambda size: min(int(side) for side in size.split("x")))
        notes.append(f"{_images_are(sum(small.values()))} smaller than {image_size}x{image_size} "
                     f"(the smallest {smallest}): each is scaled up to {image_size}x{image_size}")
    return notes


def _to_channels(channels: int) -> list:
    from mindspore.dataset import vision
    # Decode always gives 8-bit RGB (grey, palette, RGBA, 16-bit and CMYK files included).
    return [vision.Decode()] + ([vision.ConvertColor(vision.ConvertMode.COLOR_RGB2GRAY)]
                                if channels == 1 else [])


def _to_tensor(spec: FolderSpec) -> list:
    from mindspore.dataset import vision
    # ToTensor gives CHW float 0..1, also for the 2-D array that grey conversion leaves.
    return [vision.ToTensor(), vision.Normalize(mean=list(spec.mean), std=list(spec.std),
                                                is_hwc=False)]


def eval_resize(image_size: int, eval_crop: float) -> list:
    """Evaluation: the whole image resized to the square input (as `ms-resnet predict` and the
    XiHe app do), or, with eval_crop < 1, the shorter side resized to image_size / eval_crop
    and the centre cropped (ImageNet: 256 -> 224)."""
    from mindspore.dataset import vision
    if eval_crop >= 1.0:
        return [vision.Resize((image_size, image_size))]
    return [vision.Resize(round(image_size / eval_crop)), vision.CenterCrop(image_size)]


def folder_transforms(spec: FolderSpec, train: bool, augment: bool = True,
                      padding: int | None = None) -> list:
    """Per-image ops from an encoded file to a normalised CHW float32 array."""
    from mindspore.dataset import vision
    size, how = spec.image_size, spec.augmentation if (train and augment) else "none"
    ops = _to_channels(spec.channels)
    if how.startswith("resized_crop"):
        ops.append(vision.RandomResizedCrop(size))
    elif train and augment:
        ops.append(vision.Resize((size, size)))
    else:
        ops += eval_resize(size, spec.eval_crop)
    if how in ("crop", "crop_flip"):
        ops.append(vision.RandomCrop(size, padding=crop_padding(size) if padding is None
                                     else padding))
    if how.endswith("flip"):
        ops.append(vision.RandomHorizontalFlip())
    return ops + _to_tensor(spec)


def holdout(count: int, val_split: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) indices of `count` files: a seeded shuffle, the same every run."""
    order = np.random.default_rng(seed).permutation(count)
    held = max(1, round(count * val_split)) if val_split > 0 else 0
    return sorted(order[held:].tolist()), sorted(order[:held].tolist())


def _build_view(view: Path, groups: dict[str, list[Path]]) -> None:
    """view/<split>/<class>/<position><ext>: a link to each listed file, named so that sorting
    (ImageFolderDataset's order) gives the list's order, with a lower-case extension."""
    tmp = view.with_name(f"{view.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, files in groups.items():
        for position, path in enumerate(files):
            link = tmp / split / path.parent.name / f"{position:07d}{path.suffix.lower()}"
            link.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.symlink(path.absolute(), link)
            except OSError:  # no symbolic links (Windows without the right): a link or a copy
                try:
                    os.link(path.resolve(), link)
                except OSError:
                    shutil.copyfile(path, link)
    try:
        os.rename(tmp, view)
    except OSError:  # another process (an msrun rank) built the same view first
        shutil.rmtree(tmp, ignore_errors=True)


def reader_view(layout: FolderLayout) -> Path:
    """The folder MindSpore's reader is given: exactly the files of `layout`, in its order
    (built once per folder content, under $MS_RESNET_CACHE)."""
    groups = {"train": layout.train, **({"eval": layout.eval_files} if layout.eval_dir else {})}
    signature = _signature([f for files in groups.values() for f in files])
    view = cache_dir(layout.root) / f"view-{signature[:16]}"
    if not view.is_dir():
        for old in view.parent.glob("view-*"):  # views of the folder's earlier contents
            shutil.rmtree(old, ignore_errors=True)
        _build_view(view, groups)
    return view


def split_source(layout: FolderLayout, split: str, spec: FolderSpec) -> tuple[Path, list[int]]:
    """The folder ImageFolderDataset reads for `split` (in the reader view), and the indices
    (in its sorted order) of the files that belong to the split."""
    view = reader_view(layout)
    if split == "train" or layout.eval_dir is None:
        if split != "train" and spec.val_split <= 0:
            raise DataError(f"{layout.root}: no test/ or val/ folder, and val_split is 0; add "
                            "one, or hold out part of train/ with --val_split 0.1")
        kept, held = holdout(len(layout.train), spec.val_split if layout.eval_dir is None
                             else 0.0, spec.seed)
        return view / "train", kept if split == "train" else held
    return view / "eval", list(range(len(layout.eval_files)))


def folder_reader(layout: FolderLayout, split: str, spec: FolderSpec, shuffle: bool,
                  num_samples: int | None = None, num_shards: int | None = None,
                  shard_id: int | None = None, workers: int = 2) -> ds.Dataset:
    """ImageFolderDataset (encoded bytes) over one split, with the class order of `spec`."""
    import mindspore.dataset as ds
    folder, indices = split_source(layout, split, spec)
    if not indices:
        raise DataError(f"{folder}: no images in the {split} split")
    if num_samples and num_samples < len(indices):
        # A seeded random subset: the files are sorted by class, so "the first N" would drop
        # whole classes.
        picked = np.random.default_rng(spec.seed + 1).permutation(len(indices))[:num_samples]
        indices = sorted(indices[i] for i in picked)
    if num_shards and shuffle:
        # Training: shards of equal length, so every rank runs the same number of steps (their
        # gradients are all-reduced at each one); up to num_shards - 1 images are left out.
        indices = indices[:len(indices) - len(indices) % num_shards]
    if num_shards:
        # Evaluation shards may differ in length by one: every image is evaluated once.
        indices = indices[shard_id::num_shards]
    sampler = ds.SubsetRandomSampler(indices) if shuffle else ds.SubsetSampler(indices)
    return ds.ImageFolderDataset(str(folder), decode=False, extensions=list(EXTENSIONS),
                                 class_indexing=layout.indexing or {
                                     name: i for i, name in enumerate(spec.classes)},
                                 sampler=sampler, num_parallel_workers=workers)


def compute_stats(layout: FolderLayout, channels: int, image_size: int, seed: int,
                  workers: int = 2) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..1 scale) of up to STATS_SAMPLE training images, as the
    network sees them (converted and resized); cached per folder, channels and size."""
    import mindspore.dataset as ds
    from mindspore.dataset import vision
    cache = cache_dir(layout.root) / f"stats-{channels}x{image_size}.json"
    signature = _signature(layout.train)
    saved = _read_cache(cache)
    if saved.get("signature") == signature:
        return tuple(saved["mean"]), tuple(saved["std"])
    count = len(layout.train)
    sample = sorted(np.random.default_rng(seed).permutation(count)[:STATS_SAMPLE].tolist())
    reader = ds.ImageFolderDataset(str(reader_view(layout) / "train"), decode=False,
                                   extensions=list(EXTENSIONS),
                                   sampler=ds.SubsetSampler(sample), num_parallel_workers=workers)
    ops = _to_channels(channels) + eval_resize(image_size, 1.0) + [vision.ToTensor()]
    data = reader.map(operations=ops, input_columns="image", num_parallel_workers=workers)
    total, squares, pixels = np.zeros(channels), np.zeros(channels), 0
    with translate_decode_error():
        for (image,) in data.create_tuple_iterator(columns=["image"], num_epochs=1,
                                                    output_numpy=True):
            flat = image.reshape(channels, -1).astype(np.float64)
            total += flat.sum(axis=1)
            squares += (flat ** 2).sum(axis=1)
            pixels += flat.shape[1]
    mean = total / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean ** 2, 1e-12))
    result = tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)
    _write_cache(cache, {"signature": signature, "images": len(sample), "mean": result[0],
                         "std": result[1]})
    return result


@contextmanager
def translate_decode_error() -> Iterator[None]:
    """An image that passed the up-front check but fails to decode mid-epoch: MindSpore raises
    a RuntimeError whose message names the file; make it one DataError line."""
    try:
        yield
    except RuntimeError as exc:
        match = re.search(r"The corresponding data file is: (.+?)\. (.*)", str(exc))
        if not match:
            raise
        reason = match.group(2).split(" Dump the abnormal image")[0].strip().rstrip(".")
        path = Path(match.group(1))
        if path.is_symlink():  # the reader view's link: name the user's own file
            path = Path(os.readlink(path))
        raise DataError(f"{path}: cannot be decoded ({reason}); damaged images are "
                        "not skipped: delete or replace it") from None
