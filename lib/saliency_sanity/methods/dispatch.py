"""One call for one method: ``attribute(model, x, target, method, **options)`` and the channel reduction."""
from __future__ import annotations

import torch
from torch import nn

from .._core.guard import preserved
from .._core.validation import check_images, check_model
from .registry import get_method

REDUCTIONS = ("sum", "abs_sum", None)


def reduce_channels(maps: torch.Tensor, reduce: str | None) -> torch.Tensor:
    """Collapse the channel axis of pixel-space maps [B, C, H, W]: ``sum``, ``abs_sum`` or keep (None)."""
    if reduce is None:
        return maps
    if reduce == "sum":
        return maps.sum(dim=1)
    if reduce == "abs_sum":
        return maps.abs().sum(dim=1)
    raise ValueError(f"unknown reduce {reduce!r}; choose 'sum', 'abs_sum' or None")


def attribute(model: nn.Module, x: torch.Tensor, target="top1", method: str = "gradient", *,
              reduce: str | None = "sum", seed: int = 0, **options) -> torch.Tensor:
    """Compute one saliency map per image of ``x`` for the class ``target`` with ``method``.

    ``target`` is a LongTensor[B], an int, or ``"top1"`` / ``"bottom1"`` / ``"random"`` (seeded by
    ``seed``; see :func:`resolve_targets`). Pixel-space methods return [B, H, W] (``reduce="sum"``
    or ``"abs_sum"``) or the input's shape (``reduce=None``); CAM methods return [B, H, W]
    upsampled to the input size. The model is evaluated in eval mode and left as it was.
    """
    check_model(model)
    check_images(x)
    spec = get_method(method)
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduce {reduce!r}; choose 'sum', 'abs_sum' or None")
    options = {**spec.defaults, **options}
    with preserved(model):
        maps = spec.fn(model, x, target, seed=seed, **options)
    if spec.kind == "pixel":
        return reduce_channels(maps, reduce)
    return maps
