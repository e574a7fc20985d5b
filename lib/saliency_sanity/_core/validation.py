"""Input checks shared by every public call: say what is wrong and what to do."""
from __future__ import annotations

import torch
from torch import nn


def check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_images(x: object, name: str = "x") -> torch.Tensor:
    """Validate a batch of images [B, C, H, W]: a finite floating tensor with at least one image."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{name} must have shape [B, C, H, W] (rank 4), got rank {x.dim()} with shape "
            f"{tuple(x.shape)}; add a batch dimension with x.unsqueeze(0) for a single image"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); pass at least one image")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}; convert with x.float()")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values; clean the input before computing maps")
    return x


def check_choice(value: str, choices, what: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {sorted(choices)}")
    return value
