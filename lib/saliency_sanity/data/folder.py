"""Images from a folder, with the standard ImageNet preprocessing, for checks on your own model.

A folder of images, or a folder of class subfolders (ImageNet's layout: the subfolder names are
the classes in sorted order, as torchvision's ``ImageFolder`` numbers them). Preprocessing as for
torchvision's ImageNet weights: resize the shorter side to 256, centre-crop 224, scale to [0, 1],
normalise with the ImageNet mean and standard deviation.

Which files are images is decided by their suffix (:data:`IMAGE_SUFFIXES`, any case): other files
(a ``notes.txt``, ``.DS_Store``, ``Thumbs.db``) are ignored, as torchvision's ``ImageFolder`` does,
and a folder without any image file is an error. A file with an image suffix that cannot be decoded
(corrupt, truncated, not an image) is an error, one line naming the file, raised while loading --
before any computing -- rather than skipped: a silently smaller set of images would change the
results.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FolderImages:
    """Preprocessed images [N, 3, S, S], their folder labels (-1 without class subfolders), the file
    paths (relative to the folder) and the folder's class names (empty without subfolders)."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    folder_classes: list[str]


def imagenet_transform(resize: int = 256, crop: int = 224):
    """Resize the shorter side, centre-crop, to tensor, ImageNet normalisation."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop), transforms.ToTensor(),
                               transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def find_images(folder: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """Image files under ``folder``: its own images (label -1) or those of its class subfolders."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist or is not a folder")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and _image_files(p))
    files, labels = [], []
    if classes:
        for index, name in enumerate(classes):
            for path in _image_files(folder / name):
                files.append(path)
                labels.append(index)
    for path in _image_files(folder):
        files.append(path)
        labels.append(-1)
    if not files:
        raise ValueError(f"no images in {folder} or its subfolders (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files, labels, classes


def load_image_folder(folder: str | Path, *, limit: int | None = None, resize: int = 256,
                      crop: int = 224) -> FolderImages:
    """The first ``limit`` images of ``folder`` (all by default) in sorted order, preprocessed."""
    from PIL import Image, UnidentifiedImageError

    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    files, labels, classes = find_images(folder)
    files, labels = files[:limit], labels[:limit]
    transform = imagenet_transform(resize, crop)
    images = []
    for path in files:
        try:
            with Image.open(path) as image:
                images.append(transform(image.convert("RGB")))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise ValueError(f"cannot read image {path}: {reason}") from err
    root = Path(folder)
    return FolderImages(torch.stack(images), torch.tensor(labels), [str(p.relative_to(root)) for p in files], classes)
