"""The sound/complete mask of Gupta et al. (2022): a smooth low-resolution mask that keeps a label.

Gupta, Saunshi, Yu, Lyu & Arora (2022), their simple method as in their public code (after Fong &
Vedaldi 2017):
minimise CE(label; x*m + g*(1-m)) + lambda_area * sum(m) + lambda_TV * TV^2(m) over a sigmoid mask
m of 1/``upsample`` the input's resolution, upsampled bilinearly. Soundness is what justifies the
TV term and the upsampling: a free pixel mask can "prove" any label (ablate with ``tv=False``,
``upsample=1``).

Defaults for 28x28 inputs (the paper's are for 224x224):
- ``upsample=4`` (7x7 masks, the paper's 224/4 per side);
- ``lambda_area``: the paper's 2e-5 per pixel of a 224x224 mask makes a full mask cost 1.0; the
  default (None) keeps that cost for any size, 2e-5 * 224^2 / (H*W) per pixel (1.28e-3 at 28x28);
- ``lambda_tv=0.01`` on the sum of squared differences between neighbouring cells of the mask
  being optimised (the 7x7 grid; the full grid when ``upsample=1``);
- ``lr=0.05`` (Adam) as in the paper, ``steps=400`` instead of 2000: a 7x7 mask has 64x fewer
  cells than the paper's 56x56 and its loss flattens within a few hundred steps (measured on
  Fashion-MNIST with random-image fills: the 100-step mean loss changes by < 1 % from step ~400 on;
  the measurement is recorded at ``Profile.mask_steps``);
- the fill g: ``n_fill=10`` random training images per mask and step (probabilities averaged, as in
  the paper's code) when ``fill_images`` is given (pass training images: the evaluation fill stays
  the dataset mean, so the mask is not fitted to the evaluator's fill); otherwise the per-channel
  dataset mean (``mean``, which must then be given), a deviation kept as an option because it is
  deterministic and about ``n_fill`` times cheaper. ``fill`` also accepts the fills of
  :func:`saliency_sanity.methods.fills.make_fills` (``"zeros"``, ``"blur"``, a tensor).
Masks start at 0.5 everywhere (zero logits); ``seed`` drives the random fills only.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._core.draws import single_seed
from .._core.guard import preserved
from .._core.validation import check_images, check_model
from .fills import (DEFAULT_N_FILL, DEFAULT_SIGMA, FILLS, check_fill_images, check_n_fill, label_log_probabilities,
                    make_fills)
from .registry import register
from .targets import as_index_tensor, resolve_targets

DEFAULT_STEPS = 400
PAPER_AREA_PER_PIXEL, PAPER_PIXELS = 2e-5, 224 * 224


def default_lambda_area(height: int, width: int) -> float:
    """The area weight per pixel that makes a full mask cost what it costs in the paper (2e-5 * 224^2)."""
    return PAPER_AREA_PER_PIXEL * PAPER_PIXELS / (height * width)


def squared_tv(mask: torch.Tensor) -> torch.Tensor:
    """Sum of squared differences between horizontally and vertically adjacent cells, per mask [N]."""
    dx = (mask[..., :, 1:] - mask[..., :, :-1]).square().flatten(1).sum(1)
    dy = (mask[..., 1:, :] - mask[..., :-1, :]).square().flatten(1).sum(1)
    return dx + dy


def upsample_mask(low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) upsampling of masks [N, 1, h, w] to the input size; identity at full size."""
    if tuple(low.shape[-2:]) == tuple(size):
        return low
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False)


def _check_number(value, name: str, *, positive: bool = False) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and (value > 0 if positive else value >= 0))
    if not ok:
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _check_labels(labels, x: torch.Tensor) -> torch.Tensor:
    if isinstance(labels, bool):
        raise TypeError("labels_per_image must hold class indices, not a bool")
    labels = torch.as_tensor(labels, device=x.device)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels_per_image must hold integer class indices, got dtype {labels.dtype}")
    if labels.dim() == 1:
        labels = labels[:, None]
    if labels.dim() != 2 or labels.shape[0] != x.shape[0] or labels.shape[1] == 0:
        raise ValueError(f"labels_per_image must have shape [B, L] with B = {x.shape[0]} and L >= 1, "
                         f"got {tuple(labels.shape)}")
    return labels.long()


def sound_masks(model: nn.Module, x: torch.Tensor, labels_per_image, *, steps: int = DEFAULT_STEPS,
                lr: float = 0.05, lambda_area: float | None = None, lambda_tv: float = 0.01, tv: bool = True,
                upsample: int = 4, fill=None, fill_images: torch.Tensor | None = None,
                n_fill: int = DEFAULT_N_FILL, mean=None, sigma: float = DEFAULT_SIGMA,
                softmax_over=None, seed: int = 0, progress: bool = True, return_losses: bool = False):
    """Optimise one mask per (image, label), all in one batch: [B, L, H, W] in [0, 1].

    Gupta et al. (2022), as in their code: loss CE + lambda_area * area + lambda_TV * squared TV, Adam.
    ``labels_per_image`` is a LongTensor [B, L] (or [B]). Defaults and the fill are described in
    the module docstring. With ``return_losses`` also returns each mask's loss before every update,
    [steps, B, L]. The model runs in eval mode with its parameters frozen and is left as it was.
    """
    check_model(model)
    check_images(x)
    labels = _check_labels(labels_per_image, x)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    lr = _check_number(lr, "lr", positive=True)
    lambda_tv = _check_number(lambda_tv, "lambda_tv")
    batch, _, height, width = x.shape
    area_weight = default_lambda_area(height, width) if lambda_area is None else _check_number(lambda_area,
                                                                                               "lambda_area")
    if isinstance(upsample, bool) or not isinstance(upsample, int) or not 1 <= upsample <= min(height, width):
        raise ValueError(f"upsample must be an integer in 1..{min(height, width)} (1 = a full-resolution mask), "
                         f"got {upsample!r}")
    if fill is None:
        fill = "random_images" if fill_images is not None else "mean"
    n_labels = labels.shape[1]
    rows = batch * n_labels
    x_rows = x.detach().repeat_interleave(n_labels, dim=0)  # mask r belongs to image r // L
    flat_labels = labels.reshape(-1)
    gen = torch.Generator().manual_seed(single_seed(seed, "sound_masks"))
    if isinstance(fill, str) and fill == "random_images":
        pool, n_fill = check_fill_images(fill_images, x), check_n_fill(n_fill)
        fixed = None
    elif isinstance(fill, torch.Tensor) or fill in FILLS:
        fixed = make_fills(x.detach(), fill, mean=mean, sigma=sigma).repeat_interleave(n_labels, dim=0)
        n_fill = 1
    else:
        raise ValueError(f"unknown fill {fill!r}; choose one of {list(FILLS)} or pass a tensor")
    fill_labels = flat_labels.repeat_interleave(n_fill)

    size = (math.ceil(height / upsample), math.ceil(width / upsample))
    mask_logits = torch.zeros(rows, 1, *size, dtype=x.dtype, device=x.device, requires_grad=True)
    optimizer = torch.optim.Adam([mask_logits], lr=lr)
    losses = torch.empty(steps, rows, dtype=x.dtype, device=x.device)
    with preserved(model, frozen=True):  # the mask is the only thing that learns
        for step in tqdm(range(steps), desc="sound masks", disable=not progress, leave=False):
            with torch.enable_grad():
                low = torch.sigmoid(mask_logits)
                mask = upsample_mask(low, (height, width))[:, None]  # [R, 1, 1, H, W]
                if fixed is None:
                    idx = torch.randint(0, len(pool), (rows, n_fill), generator=gen).to(x.device)
                    g = pool[idx]
                else:
                    g = fixed
                inputs = (x_rows[:, None] * mask + g * (1 - mask)).flatten(0, 1)
                log_p = label_log_probabilities(model(inputs), fill_labels, softmax_over).view(rows, n_fill)
                # CE of the fill-averaged probability: -log(mean_f p_f), computed in log space
                ce = math.log(n_fill) - torch.logsumexp(log_p, dim=1)
                loss = ce + area_weight * mask.flatten(1).sum(1)
                if tv:
                    loss = loss + lambda_tv * squared_tv(low)
                losses[step] = loss.detach()
                optimizer.zero_grad(set_to_none=True)
                # masks are independent, so the sum's gradient is each mask's own gradient
                loss.sum().backward()
            optimizer.step()
    with torch.no_grad():
        masks = upsample_mask(torch.sigmoid(mask_logits), (height, width)).view(batch, n_labels, height, width)
    if return_losses:
        return masks, losses.view(steps, batch, n_labels)
    return masks


@register("sound_mask", kind="cam", family="mask")
def sound_mask(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, steps: int = DEFAULT_STEPS,
               lr: float = 0.05, lambda_area: float | None = None, lambda_tv: float = 0.01, tv: bool = True,
               upsample: int = 4, fill=None, fill_images: torch.Tensor | None = None,
               n_fill: int = DEFAULT_N_FILL, mean=None, sigma: float = DEFAULT_SIGMA,
               softmax_over=None, progress: bool = False) -> torch.Tensor:
    """Gupta et al.'s sound mask for the target label, [B, H, W] in [0, 1] (see :func:`sound_masks`).

    The method never evaluates the model at ``x`` itself, so a named target ("top1", ...) costs one
    extra forward; explicit indices cost none. The options are those of :func:`sound_masks`; the
    progress bar is off by default here because ``attribute`` is usually called in loops.
    """
    if isinstance(target, str):
        with torch.no_grad():
            labels = resolve_targets(model(x.clone()), target, seed)  # a first in-place layer must not write into x
    else:
        labels = as_index_tensor(target, len(x), x.device)
    return sound_masks(model, x, labels[:, None], steps=steps, lr=lr, lambda_area=lambda_area,
                       lambda_tv=lambda_tv, tv=tv, upsample=upsample, fill=fill, fill_images=fill_images,
                       n_fill=n_fill, mean=mean, sigma=sigma, softmax_over=softmax_over, seed=seed,
                       progress=progress)[:, 0]


__all__ = ["DEFAULT_STEPS", "default_lambda_area", "sound_mask", "sound_masks", "squared_tv", "upsample_mask"]
