"""Which class a map explains: explicit indices, or "top1", "bottom1", "random" read off the logits.

"random" follows the random-logit test of Sixt et al. (2020): a class drawn uniformly among the
classes other than the top-1 class, from a seeded generator so that reruns explain the same class.
With one seed per image (:mod:`saliency_sanity._core.draws`) each image's class is drawn from its own
generator, so it does not depend on the batch the image is in.
"""
from __future__ import annotations

from typing import Union

import torch

from .._core.draws import Seed, image_generators

TargetSpec = Union[str, int, torch.Tensor, list, tuple]
TARGET_NAMES = ("top1", "bottom1", "random")


def resolve_targets(logits: torch.Tensor, target: TargetSpec, seed: Seed = 0) -> torch.Tensor:
    """Turn a target spec into a LongTensor[B] of class indices, validated against ``logits`` [B, K]."""
    batch, classes = logits.shape[0], logits.shape[-1]
    if isinstance(target, str):
        if target == "top1":
            return logits.argmax(dim=1)
        if target == "bottom1":
            return logits.argmin(dim=1)
        if target == "random":
            if classes < 2:
                raise ValueError("target='random' needs a model with at least two classes")
            gens = image_generators(seed, batch, "random class")
            if gens is None:
                offset = torch.randint(1, classes, (batch,), generator=torch.Generator().manual_seed(int(seed)))
            else:
                offset = torch.cat([torch.randint(1, classes, (1,), generator=g) for g in gens])
            offset = offset.to(logits.device)
            # a uniform draw among the K-1 classes that are not the top-1 class
            return (logits.argmax(dim=1) + offset) % classes
        raise ValueError(f"unknown target {target!r}; use a class index, a LongTensor[B], "
                         f"or one of {list(TARGET_NAMES)}")
    return check_in_range(as_index_tensor(target, batch, logits.device), classes)


def as_index_tensor(target, batch: int, device=None) -> torch.Tensor:
    """An explicit target (int, list, tensor) as a LongTensor[batch]; the class range is checked
    separately (:func:`check_in_range`) once the number of classes is known."""
    if isinstance(target, bool):
        raise TypeError("target must be a class index, a LongTensor[B] or a name, not a bool")
    if isinstance(target, int):
        t = torch.full((batch,), target, dtype=torch.long, device=device)
    elif isinstance(target, (list, tuple)):
        t = torch.as_tensor(target, device=device)
    elif isinstance(target, torch.Tensor):
        t = target.to(device) if device is not None else target
    else:
        raise TypeError(f"target must be a class index, a LongTensor[B] or one of {list(TARGET_NAMES)}, "
                        f"got {type(target).__name__}")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"target tensor must hold integer class indices, got dtype {t.dtype}")
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"target must have shape [B] = [{batch}], got {tuple(t.shape)}")
    return t.long()


def check_in_range(t: torch.Tensor, classes: int) -> torch.Tensor:
    bad = (t < 0) | (t >= classes)
    if bad.any():
        raise ValueError(f"target {t[bad][0].item()} is out of range for a model with {classes} classes "
                         f"(valid: 0..{classes - 1})")
    return t
