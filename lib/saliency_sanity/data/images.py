"""Datasets: Fashion-MNIST from IDX files (the embedded default), image folders, synthetic data.

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) is looked up in ``$FASHION_MNIST_DIR``, Debian's
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), ``data/fashion-mnist`` and,
last, torchvision's download.
"""
from __future__ import annotations

from dataclasses import dataclass
import gzip
import os
from pathlib import Path
import struct

import numpy as np
import torch

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
LOCAL_DIR = Path("data/fashion-mnist")
_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
# IDX type codes (LeCun's format): code -> (numpy dtype, bytes per item)
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
# Per-pixel mean and std of the Fashion-MNIST training images in [0, 1].
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530


class DatasetNotFoundError(FileNotFoundError):
    """No copy of the dataset could be found or downloaded."""


class CorruptDatasetError(ValueError):
    """An IDX file exists but its header or size is wrong."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into an array, checking header and payload size."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:  # gzip raises these on a truncated or non-gzip file
        raise CorruptDatasetError(f"{path}: cannot be read as {'gzip' if opener is gzip.open else 'IDX'} "
                                  f"({err}); delete it and reinstall the dataset") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise CorruptDatasetError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise CorruptDatasetError(f"{path}: IDX header is truncated ({len(raw)} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise CorruptDatasetError(
            f"{path}: IDX payload has {len(raw) - header} bytes but the header {shape} needs {expected}; "
            "the file is truncated or corrupt, delete it and reinstall the dataset")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).copy()


def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def candidate_dirs() -> list[Path]:
    """Where Fashion-MNIST is looked for, in order."""
    dirs = []
    if os.environ.get("FASHION_MNIST_DIR"):
        dirs.append(Path(os.environ["FASHION_MNIST_DIR"]))
    dirs += [DEBIAN_DIR, LOCAL_DIR]
    return dirs


def find_fashion_mnist(download: bool = True) -> Path:
    """Return a directory holding all four Fashion-MNIST IDX files, downloading as a last resort."""
    looked = []
    for d in candidate_dirs():
        looked.append(str(d))
        if all(_find_file(d, stem) for stem in _FILES.values()):
            return d
    if download:
        looked.append("torchvision download into data/")
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST("data", train=True, download=True)
            FashionMNIST("data", train=False, download=True)
            raw = Path("data/FashionMNIST/raw")
            if all(_find_file(raw, stem) for stem in _FILES.values()):
                return raw
        except Exception as err:  # network errors come in many types; report them all the same way
            looked[-1] += f" (failed: {err.__class__.__name__}: {err})"
    raise DatasetNotFoundError(
        "Fashion-MNIST not found. Looked in:\n  - " + "\n  - ".join(looked) +
        "\nInstall it with `apt-get install dataset-fashion-mnist` (Debian), or put the four IDX files "
        "(train-images-idx3-ubyte[.gz], ...) in a folder and set FASHION_MNIST_DIR to it.")


@dataclass
class ImageSet:
    """Images [N, C, H, W] as float in [0, 1], integer labels [N] and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None = None, *, per_class: int | None = None, seed: int = 0) -> "ImageSet":
        """The first ``n`` images of a seeded shuffle, or ``per_class`` images of every class."""
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self), generator=gen)
        if per_class is not None:
            picks = [order[self.labels[order] == c][:per_class] for c in range(len(self.classes))]
            order = torch.stack(picks, 1).flatten() if per_class else order[:0]
        elif n is not None:
            order = order[:n]
        return ImageSet(self.images[order], self.labels[order], self.classes)


def load_fashion_mnist(split: str = "train", *, directory: str | os.PathLike | None = None,
                       download: bool = True) -> ImageSet:
    """Load a Fashion-MNIST split (``"train"`` or ``"test"``) as an :class:`ImageSet` in [0, 1]."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    d = Path(directory) if directory is not None else find_fashion_mnist(download=download)
    paths = {kind: _find_file(d, _FILES[(split, kind)]) for kind in ("images", "labels")}
    missing = [_FILES[(split, k)] for k, p in paths.items() if p is None]
    if missing:
        raise DatasetNotFoundError(f"{d}: missing {', '.join(missing)}")
    images, labels = read_idx(paths["images"]), read_idx(paths["labels"])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise CorruptDatasetError(f"{d}: images {images.shape} and labels {labels.shape} do not match")
    if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
        raise CorruptDatasetError(f"{paths['labels']}: label {labels.max()} is not a Fashion-MNIST class")
    x = torch.from_numpy(images).float().div_(255.0).unsqueeze(1)
    return ImageSet(x, torch.from_numpy(labels.astype(np.int64)), FASHION_MNIST_CLASSES)


def synthetic(n: int = 64, *, classes: int = 10, size: int = 28, channels: int = 1, seed: int = 0) -> ImageSet:
    """A tiny learnable dataset for tests: each class is a bright square at its own position."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    x = 0.1 * torch.rand(n, channels, size, size, generator=gen)
    side = max(1, size // 5)
    for i, c in enumerate(labels.tolist()):
        r, col = divmod(c % 16, 4)  # up to 16 distinct positions on a 4x4 grid
        x[i, :, r * side:(r + 1) * side, col * side:(col + 1) * side] += 0.8
    return ImageSet(x.clamp_(0, 1), labels, tuple(f"class {c}" for c in range(classes)))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array as an IDX file (gzipped if the name ends in .gz); used to make test fixtures."""
    codes = {np.dtype(v).newbyteorder(">") if np.dtype(v).itemsize > 1 else np.dtype(v): k
             for k, v in _IDX_TYPES.items()}
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    payload = bytes([0, 0, codes[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(dtype).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(payload)
