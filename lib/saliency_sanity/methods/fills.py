"""What fills the pixels a map leaves out, and the probability of a label: shared by the sound-mask
method (Gupta et al. 2022, the masked pixels filled with random training images while it is trained)
and the insertion / deletion curves of completeness and soundness (filled with the mean, zeros, a
blur or random training images while it is evaluated).
"""
from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn.functional as F

from .._core.validation import check_images

FILLS = ("mean", "zeros", "blur", "random_images")
FillSpec = Union[str, torch.Tensor]

# Paper: 10 random training images per evaluation, probabilities averaged.
DEFAULT_N_FILL = 10
# Gaussian blur width in pixels for fill="blur": removes Fashion-MNIST's texture, keeps the silhouette.
DEFAULT_SIGMA = 2.0


# ---------------------------------------------------------------------------------------------
# fills
# ---------------------------------------------------------------------------------------------
def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of images [B, C, H, W], truncated at 3 sigma, mirror-padded.

    The padding reflects about the edge pixel (scipy's ``mode="mirror"``), so a constant image
    stays constant; the radius is capped at ``size - 1``, which is all mirror padding allows.
    """
    if not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a positive number of pixels, got {sigma!r}")
    _, channels, height, width = x.shape
    radius = min(int(math.ceil(3 * sigma)), height - 1, width - 1)
    if radius == 0:
        return x.clone()
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-t.square() / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def channel_mean(mean, x: torch.Tensor) -> torch.Tensor:
    """The fill value ``mean`` (a number, or one number per channel) as a [C, 1, 1] tensor like ``x``.

    There is no default: the mean belongs to the model's training data, and a wrong one (another
    dataset's, a grey for an RGB model) would change every score without an error.
    """
    if mean is None:
        raise ValueError("fill='mean' needs the per-channel mean of the model's training data: pass mean=... "
                         "(e.g. saliency_sanity.data.FASHION_MNIST_MEAN, or (0.485, 0.456, 0.406) for ImageNet "
                         "images in [0, 1]), or choose another fill")
    value = torch.as_tensor(mean, dtype=x.dtype, device=x.device).flatten()
    channels = x.shape[1]
    if value.numel() == 1:
        value = value.expand(channels)
    if value.numel() != channels:
        raise ValueError(f"mean must be one number or one per channel ({channels}), got {value.numel()} values")
    if not torch.isfinite(value).all():
        raise ValueError("mean must be finite")
    return value.view(channels, 1, 1)


def check_fill_images(fill_images, x: torch.Tensor) -> torch.Tensor:
    """Validate the images that ``fill="random_images"`` draws from: [N, C, H, W] like ``x``."""
    if fill_images is None:
        raise ValueError("fill='random_images' needs fill_images=<training images [N, C, H, W]> to draw from")
    check_images(fill_images, "fill_images")
    if fill_images.shape[1:] != x.shape[1:]:
        raise ValueError(f"fill_images must have images of shape {tuple(x.shape[1:])} like x, "
                         f"got {tuple(fill_images.shape[1:])}")
    return fill_images.to(device=x.device, dtype=x.dtype)


def draw_fill_indices(n_images: int, rows: int, n_fill: int, seed: int) -> torch.Tensor:
    """Which of ``n_images`` fill images each of ``rows`` inputs uses: LongTensor[rows, n_fill].

    Drawn uniformly with replacement from a CPU generator seeded by ``seed`` (so CPU and GPU runs
    use the same fills).
    """
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, n_images, (rows, n_fill), generator=gen)


def check_n_fill(n_fill) -> int:
    if isinstance(n_fill, bool) or not isinstance(n_fill, int) or n_fill < 1:
        raise ValueError(f"n_fill must be an integer >= 1, got {n_fill!r}")
    return n_fill


def make_fills(x: torch.Tensor, fill: FillSpec, *, mean=None, sigma: float = DEFAULT_SIGMA,
               fill_images: torch.Tensor | None = None, n_fill: int = DEFAULT_N_FILL,
               seed: int = 0) -> torch.Tensor:
    """The values that replace removed pixels, one stack per image: [B, F, C, H, W].

    ``F`` is 1 except for ``"random_images"`` (``n_fill`` training images drawn per image, seeded).
    ``"mean"`` is the per-channel dataset mean ``mean`` (required, see :func:`channel_mean`), ``"zeros"`` black, ``"blur"`` the image
    blurred with a Gaussian of ``sigma`` pixels; a tensor is used as given and must broadcast to
    ``x``'s shape ([C, H, W], [B, C, H, W], [C, 1, 1], ...).
    """
    batch = x.shape[0]
    if isinstance(fill, torch.Tensor):
        if not fill.is_floating_point() or not torch.isfinite(fill).all():
            raise ValueError("a fill tensor must be floating point and finite")
        try:
            shape = torch.broadcast_shapes(fill.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(f"fill tensor of shape {tuple(fill.shape)} does not broadcast to the images' shape "
                             f"{tuple(x.shape)}; pass [C, H, W], [B, C, H, W] or [C, 1, 1]")
        return fill.to(device=x.device, dtype=x.dtype).expand_as(x).unsqueeze(1)
    if not isinstance(fill, str):
        raise TypeError(f"fill must be one of {list(FILLS)} or a tensor, got {type(fill).__name__}")
    if fill == "mean":
        return channel_mean(mean, x).expand_as(x).unsqueeze(1)
    if fill == "zeros":
        return torch.zeros_like(x).unsqueeze(1)
    if fill == "blur":
        return gaussian_blur(x, sigma).unsqueeze(1)
    if fill == "random_images":
        pool = check_fill_images(fill_images, x)
        idx = draw_fill_indices(len(pool), batch, check_n_fill(n_fill), seed).to(x.device)
        return pool[idx]
    raise ValueError(f"unknown fill {fill!r}; choose one of {list(FILLS)} or pass a tensor")


def subset_positions(softmax_over, classes: int, device) -> torch.Tensor | None:
    """For a label subset, the position of every class inside it (-1 when outside)."""
    if softmax_over is None:
        return None
    subset = torch.as_tensor(softmax_over, device=device)
    if subset.dim() != 1 or subset.numel() == 0 or subset.is_floating_point() or subset.dtype == torch.bool:
        raise ValueError("softmax_over must be None or a non-empty 1-D list/LongTensor of class indices")
    subset = subset.long()
    if (subset < 0).any() or (subset >= classes).any():
        raise ValueError(f"softmax_over holds a class outside 0..{classes - 1}")
    if len(torch.unique(subset)) != len(subset):
        raise ValueError("softmax_over lists a class twice")
    pos = torch.full((classes,), -1, dtype=torch.long, device=device)
    pos[subset] = torch.arange(len(subset), device=device)
    return pos


def label_log_probabilities(logits: torch.Tensor, labels: torch.Tensor, softmax_over=None) -> torch.Tensor:
    """log p(label) per row of ``logits`` [N, classes], the softmax over all classes or ``softmax_over``."""
    classes = logits.shape[1]
    if (labels < 0).any() or (labels >= classes).any():
        bad = labels[(labels < 0) | (labels >= classes)][0].item()
        raise ValueError(f"label {bad} is out of range for a model with {classes} classes (valid: 0..{classes - 1})")
    pos = subset_positions(softmax_over, classes, logits.device)
    if pos is not None:
        outside = pos[labels] < 0
        if outside.any():
            raise ValueError(f"label {labels[outside][0].item()} is not in softmax_over; add it to the subset")
        # classes outside the subset get -inf logits, i.e. no share of the softmax
        logits = logits.masked_fill(pos[None] < 0, float("-inf"))
    return logits.log_softmax(dim=1).gather(1, labels[:, None])[:, 0]


def label_probabilities(logits: torch.Tensor, labels: torch.Tensor, softmax_over=None) -> torch.Tensor:
    """p(label) per row of ``logits`` [N, classes], the softmax over all classes or ``softmax_over``."""
    return label_log_probabilities(logits, labels, softmax_over).exp()
