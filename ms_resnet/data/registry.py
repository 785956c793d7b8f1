"""What ms_resnet knows about each dataset: reader, shape, statistics, class names, files."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteFile:
    """One file as upstream distributes it."""

    name: str
    md5: str
    urls: tuple[str, ...]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    reader: str  # name of the mindspore.dataset class that reads the prepared files
    layout: str  # how files are prepared for the reader: "idx", "cifar10", "svhn" or "stl10"
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    files: tuple[RemoteFile, ...]
    hflip: bool  # horizontal flips keep the label (objects yes, digits and characters no)
    crop_padding: int
    homepage: str
    license: str = ""


def _idx_files(base_urls: tuple[str, ...], md5s: dict[str, str]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(name, md5, tuple(url + name for url in base_urls))
                 for name, md5 in md5s.items())


_DIGITS = tuple(str(d) for d in range(10))

# Per-channel statistics of each training split, on the 0..1 pixel scale.
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist", title="MNIST", reader="MnistDataset", layout="idx",
        channels=1, image_size=28, mean=(0.1307,), std=(0.3081,), classes=_DIGITS,
        files=_idx_files(
            ("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "http://yann.lecun.com/exdb/mnist/"),
            {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
             "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
             "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
             "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
        hflip=False, crop_padding=2, homepage="http://yann.lecun.com/exdb/mnist/",
        license="CC BY-SA 3.0"),
    "kmnist": DatasetInfo(
        name="kmnist", title="Kuzushiji-MNIST", reader="KMnistDataset", layout="idx",
        channels=1, image_size=28, mean=(0.1918,), std=(0.3483,),
        classes=("o (お)", "ki (き)", "su (す)", "tsu (つ)", "na (な)", "ha (は)", "ma (ま)",
                 "ya (や)", "re (れ)", "wo (を)"),
        files=_idx_files(
            ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
            {"train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
             "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
             "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
             "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134"}),
        hflip=False, crop_padding=2, homepage="http://codh.rois.ac.jp/kmnist/",
        license="CC BY-SA 4.0"),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist", title="Fashion-MNIST", reader="FashionMnistDataset", layout="idx",
        channels=1, image_size=28, mean=(0.2860,), std=(0.3530,),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
        files=_idx_files(
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
             "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
             "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
             "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}),
        # Clothes are left/right symmetric, so flips are label-preserving here.
        hflip=True, crop_padding=2,
        homepage="https://github.com/zalandoresearch/fashion-mnist", license="MIT"),
    "cifar10": DatasetInfo(
        name="cifar10", title="CIFAR-10 (binary version)", reader="Cifar10Dataset",
        layout="cifar10", channels=3, image_size=32,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"),
        files=(RemoteFile("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                          ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)),),
        hflip=True, crop_padding=4, homepage="https://www.cs.toronto.edu/~kriz/cifar.html"),
    "svhn": DatasetInfo(
        name="svhn", title="SVHN (cropped digits)", reader="SVHNDataset", layout="svhn",
        channels=3, image_size=32, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
        classes=_DIGITS,
        files=(RemoteFile("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373",
                          ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",)),
               RemoteFile("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3",
                          ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",))),
        hflip=False, crop_padding=4, homepage="http://ufldl.stanford.edu/housenumbers/",
        license="non-commercial use"),
    "stl10": DatasetInfo(
        name="stl10", title="STL-10 (labelled part)", reader="STL10Dataset", layout="stl10",
        channels=3, image_size=96, mean=(0.4467, 0.4398, 0.4066), std=(0.2603, 0.2566, 0.2713),
        classes=("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship",
                 "truck"),
        files=(RemoteFile("stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb",
                          ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",)),),
        hflip=True, crop_padding=12, homepage="https://cs.stanford.edu/~acoates/stl10/"),
}


def get_dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset '{name}'; choose one of: "
                         f"{', '.join(sorted(DATASETS))}") from None
