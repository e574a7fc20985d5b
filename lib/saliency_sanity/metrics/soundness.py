"""Completeness and soundness of saliency maps, read off insertion curves.

Gupta, Saunshi, Yu, Lyu & Arora (2022), "New definitions and evaluations for saliency methods:
staying intrinsic, complete and sound" (abstract) and their evaluation code: keep the top-k pixels
of the map made for label b, fill the rest with an uninformative value, and follow the probability
of b over K equal steps. Completeness asks that the predicted label's map "proves" it, soundness
that maps made for the other labels do not. Insertion and deletion AUCs (Petsiuk et al. 2018,
RISE, Sec. 4.1) are the usual summaries of the same curves.
"""
from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
import torch
from torch import nn

from .._core.guard import preserved
from .._core.validation import check_images, check_model
from ..methods.fills import (DEFAULT_N_FILL, DEFAULT_SIGMA, FILLS, FillSpec, check_fill_images, draw_fill_indices,
                             gaussian_blur, label_log_probabilities, label_probabilities, make_fills, subset_positions)
from ..methods.targets import TARGET_NAMES, resolve_targets

# Gupta et al. use K = 28 steps on 224x224 images; the same K on 28x28 moves 28 pixels per step.
DEFAULT_STEPS = 28


# ---------------------------------------------------------------------------------------------
# curves
# ---------------------------------------------------------------------------------------------
def check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps (K) must be an integer >= 1, got {steps!r}")
    return steps


def step_counts(steps: int, n_pixels: int, device=None) -> torch.Tensor:
    """Pixels kept at step i = 0..K: round(i / K * n_pixels), halves rounded up (integer arithmetic)."""
    i = torch.arange(steps + 1, device=device)
    return torch.div(2 * i * n_pixels + steps, 2 * steps, rounding_mode="floor")


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel of maps [..., H, W] (0 = most salient), flattened to [..., H*W].

    Ties go to the earlier pixel in row-major order (a stable sort), so the order is deterministic.
    """
    flat = maps.flatten(-2)
    order = torch.sort(flat, dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(flat.shape[-1], device=flat.device).expand_as(order))
    return ranks


def _maps_and_labels(model, x, maps, labels, seed):
    """Bring maps to [B, L, H, W] and labels to LongTensor[B, L]; say whether L was added."""
    check_model(model)
    check_images(x)
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"maps must be a tensor [B, H, W] or [B, L, H, W], got {type(maps).__name__}")
    if maps.dim() not in (3, 4) or maps.shape[0] != x.shape[0] or maps.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"maps must have shape [B, H, W] = {[x.shape[0], *x.shape[-2:]]} or [B, L, H, W], "
                         f"got {tuple(maps.shape)}; reduce pixel maps over channels first (reduce='sum')")
    if not torch.isfinite(maps).all():
        raise ValueError("maps contain NaN or Inf; a ranking of pixels needs finite scores")
    single = maps.dim() == 3
    maps = maps.to(x.device)
    if single:
        maps = maps.unsqueeze(1)
    batch, n_labels = maps.shape[:2]
    if isinstance(labels, str):
        if labels not in TARGET_NAMES:
            raise ValueError(f"unknown labels {labels!r}; pass class indices or one of {list(TARGET_NAMES)}")
        with preserved(model), torch.no_grad():
            labels = resolve_targets(model(x.clone()), labels, seed)  # clone: x is the caller's
    if isinstance(labels, bool):
        raise TypeError("labels must be class indices, not a bool")
    labels = torch.as_tensor(labels, device=x.device)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    labels = labels.long()
    if labels.dim() == 0:
        labels = labels.expand(batch, n_labels)
    elif labels.dim() == 1 and single:
        labels = labels[:, None]
    elif labels.dim() == 1 and labels.shape[0] == n_labels:
        labels = labels.expand(batch, n_labels)  # one list of labels shared by all images
    if labels.shape != (batch, n_labels):
        raise ValueError(f"labels must have shape [B] for maps [B, H, W] or [B, L] / [L] for maps [B, L, H, W]; "
                         f"got {tuple(labels.shape)} for maps {tuple(maps.shape)}")
    return maps, labels, single


def _curve(model, x, maps, labels, *, deletion: bool, steps: int, fill: FillSpec, mean, sigma,
           fill_images, n_fill, softmax_over, batch_size: int, seed: int) -> torch.Tensor:
    maps, labels, single = _maps_and_labels(model, x, maps, labels, seed)
    check_steps(steps)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    fills = make_fills(x, fill, mean=mean, sigma=sigma, fill_images=fill_images, n_fill=n_fill, seed=seed)
    batch, n_labels = labels.shape
    n_fill_used, (height, width) = fills.shape[1], x.shape[-2:]
    kept = step_counts(steps, height * width, x.device)
    ranks = pixel_ranks(maps).view(batch * n_labels, height * width)
    flat_labels = labels.reshape(-1)
    # one row per (image, label, step, fill); rows are built chunk by chunk, never all at once
    per_map = (steps + 1) * n_fill_used
    total = batch * n_labels * per_map
    probs = torch.empty(total, dtype=x.dtype, device=x.device)
    with preserved(model), torch.no_grad():
        for start in range(0, total, batch_size):
            rows = torch.arange(start, min(start + batch_size, total), device=x.device)
            which_fill, step, map_index = rows % n_fill_used, (rows // n_fill_used) % (steps + 1), rows // per_map
            image = map_index // n_labels
            keep = ranks[map_index] < kept[step, None]
            if deletion:
                keep = ~keep
            inputs = torch.where(keep.view(-1, 1, height, width), x[image], fills[image, which_fill])
            probs[rows] = label_probabilities(model(inputs), flat_labels[map_index], softmax_over)
    curves = probs.view(batch, n_labels, steps + 1, n_fill_used).mean(dim=-1)
    return curves[:, 0] if single else curves


_CURVE_DOC = """

    ``maps`` [B, H, W] with ``labels`` [B] (or an int, or ``"top1"``/``"bottom1"``/``"random"``)
    gives [B, K+1]; ``maps`` [B, L, H, W] with ``labels`` [B, L] (or [L], shared) gives [B, L, K+1].
    Step i = 0..K acts on k = round(i/K * H*W) pixels, the most salient first (ties: earlier pixel
    in row-major order). ``fill``: ``"mean"`` (the per-channel ``mean`` of the training data, which must be given),
    ``"zeros"``, ``"blur"`` (Gaussian, ``sigma`` pixels), ``"random_images"`` (``n_fill`` images
    drawn per image from ``fill_images`` with ``seed``, the same draws at every step and label,
    probabilities averaged, as in Gupta et al.'s code) or a tensor broadcasting to ``x``.
    ``softmax_over``: None (all classes) or a label subset that the softmax is taken over.
    ``batch_size`` masked inputs go through the model per forward; the model runs in eval mode
    under ``torch.no_grad`` and is left as it was.
    """


def insertion_curve(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, labels, *,
                    steps: int = DEFAULT_STEPS, fill: FillSpec = "mean", mean=None,
                    sigma: float = DEFAULT_SIGMA, fill_images: torch.Tensor | None = None,
                    n_fill: int = DEFAULT_N_FILL, softmax_over=None, batch_size: int = 256,
                    seed: int = 0) -> torch.Tensor:
    return _curve(model, x, maps, labels, deletion=False, steps=steps, fill=fill, mean=mean, sigma=sigma,
                  fill_images=fill_images, n_fill=n_fill, softmax_over=softmax_over,
                  batch_size=batch_size, seed=seed)


def deletion_curve(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, labels, *,
                   steps: int = DEFAULT_STEPS, fill: FillSpec = "mean", mean=None,
                   sigma: float = DEFAULT_SIGMA, fill_images: torch.Tensor | None = None,
                   n_fill: int = DEFAULT_N_FILL, softmax_over=None, batch_size: int = 256,
                   seed: int = 0) -> torch.Tensor:
    return _curve(model, x, maps, labels, deletion=True, steps=steps, fill=fill, mean=mean, sigma=sigma,
                  fill_images=fill_images, n_fill=n_fill, softmax_over=softmax_over,
                  batch_size=batch_size, seed=seed)


insertion_curve.__doc__ = ("Probability of each label as its most salient pixels are kept and the rest filled.\n\n"
                           "    Gupta et al. (2022) (the evaluation behind completeness/soundness, their code); "
                           "Petsiuk et al. (2018), insertion.\n    Step 0 is all fill, step K the image."
                           + _CURVE_DOC)
deletion_curve.__doc__ = ("Probability of each label as its most salient pixels are filled, the rest kept.\n\n"
                          "    Petsiuk et al. (2018), RISE Sec. 4.1, deletion. Step 0 is the image, step K "
                          "all fill." + _CURVE_DOC)


def curve_auc(curves: torch.Tensor, rule: str = "trapezoid") -> torch.Tensor:
    """Area under curves [..., K+1] sampled at i/K: ``"trapezoid"`` (RISE) or ``"mean"`` (Gupta et al.)."""
    if curves.shape[-1] < 2:
        raise ValueError(f"a curve needs at least two points (K >= 1), got {curves.shape[-1]}")
    if rule == "mean":
        return curves.mean(dim=-1)
    if rule == "trapezoid":
        return torch.trapezoid(curves, dx=1.0 / (curves.shape[-1] - 1), dim=-1)
    raise ValueError(f"unknown rule {rule!r}; choose 'trapezoid' or 'mean'")


def insertion_deletion_auc(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, labels, *,
                           rule: str = "trapezoid", **options) -> pd.DataFrame:
    """Insertion and deletion AUC per (image, label): a tidy frame [image, label, insertion, deletion].

    Petsiuk et al. (2018), RISE Sec. 4.1: a good map has high insertion and low deletion AUC.
    ``options`` are those of :func:`insertion_curve` (the same fill draws serve both curves).
    """
    maps, labels, _ = _maps_and_labels(model, x, maps, labels, options.get("seed", 0))
    ins = curve_auc(insertion_curve(model, x, maps, labels, **options), rule)
    dele = curve_auc(deletion_curve(model, x, maps, labels, **options), rule)
    batch, n_labels = labels.shape
    return pd.DataFrame({
        "image": torch.arange(batch).repeat_interleave(n_labels).numpy(),
        "label": labels.reshape(-1).cpu().numpy(),
        "insertion": ins.reshape(-1).double().cpu().numpy(),
        "deletion": dele.reshape(-1).double().cpu().numpy(),
    })


# ---------------------------------------------------------------------------------------------
# completeness and soundness
# ---------------------------------------------------------------------------------------------
def class_agnostic(maps: torch.Tensor, labels: int | Sequence[int] | None = None, *,
                   predicted: torch.Tensor | None = None) -> torch.Tensor:
    """The class-agnostic control: the predicted label's map reused for every label, [B, L, H, W].

    After Gupta et al. (2022): a map that ignores the label can look "sound" only because it
    never proves any other label. Pass ``maps`` [B, H, W] (the predicted label's maps) and
    ``labels`` (L, or the list of labels) or ``maps`` [B, L, H, W] with ``predicted`` [B], the
    position of the predicted label along L. The result can replace ``maps_per_label``.
    """
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"maps must be a tensor, got {type(maps).__name__}")
    if maps.dim() == 4:
        if predicted is None:
            raise ValueError("maps [B, L, H, W] need predicted=<LongTensor[B]>, the position of each "
                             "image's predicted label along L")
        predicted = torch.as_tensor(predicted, device=maps.device).long()
        if predicted.shape != (maps.shape[0],) or (predicted < 0).any() or (predicted >= maps.shape[1]).any():
            raise ValueError(f"predicted must be a LongTensor[{maps.shape[0]}] of positions in 0..{maps.shape[1] - 1}")
        base, n_labels = maps[torch.arange(maps.shape[0], device=maps.device), predicted], maps.shape[1]
    elif maps.dim() == 3:
        if labels is None:
            raise ValueError("maps [B, H, W] need labels=<number of labels or list of labels>")
        n_labels = labels if isinstance(labels, int) else len(labels)
        if n_labels < 1:
            raise ValueError("labels must name at least one label")
        base = maps
    else:
        raise ValueError(f"maps must have shape [B, H, W] or [B, L, H, W], got {tuple(maps.shape)}")
    return base.unsqueeze(1).expand(-1, n_labels, -1, -1).clone()


def _check_nonneg(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def completeness_soundness(model: nn.Module, x: torch.Tensor, maps_per_label: torch.Tensor, *,
                           labels=None, predicted=None, steps: int = DEFAULT_STEPS, fill: FillSpec = "mean",
                           epsilon: float = 0.1, beta: float = 0.1, softmax_over=None,
                           **options) -> pd.DataFrame:
    """Completeness of the predicted label's map and soundness of the other labels' maps, per image.

    Gupta et al. (2022), Def. 4.1-4.2 as computed in their code: AUC_b = mean of p_b along the
    insertion curve of the map made for b; completeness C = min(max(eps, AUC_pred) / p_pred(x), 1);
    soundness S_b = min(max(beta, p_b(x)) / AUC_b, 1) (an image's soundness is the mean over its
    non-predicted labels, see :func:`summarize_completeness_soundness`).

    ``maps_per_label`` [B, L, H, W] holds the map made FOR each label; ``labels`` names them
    (None: every class, or every class of ``softmax_over``, in order; a list [L] shared by all
    images, or [B, L]). ``predicted`` [B] defaults to the arg-max of the (subset) softmax at x and
    must be among each image's labels. ``options`` go to :func:`insertion_curve` (``mean``,
    ``sigma``, ``fill_images``, ``n_fill``, ``batch_size``, ``seed``).
    Returns one row per (image, label): image, label, is_predicted, auc, p_x, metric
    ("completeness" or "soundness"), value.
    """
    epsilon, beta = _check_nonneg(epsilon, "epsilon"), _check_nonneg(beta, "beta")
    check_steps(steps)
    check_model(model)
    check_images(x)
    if not isinstance(maps_per_label, torch.Tensor) or maps_per_label.dim() != 4:
        raise ValueError("maps_per_label must be a tensor [B, L, H, W] holding the map made for each label; "
                         "for one map per image use insertion_curve, or class_agnostic() to reuse it")
    with preserved(model), torch.no_grad():
        logits = model(x.clone())  # a first in-place layer must not write into the caller's x
    classes = logits.shape[1]
    if labels is None:
        labels = list(range(classes)) if softmax_over is None else torch.as_tensor(softmax_over).tolist()
    maps, labels, _ = _maps_and_labels(model, x, maps_per_label, labels, options.get("seed", 0))
    batch, n_labels = labels.shape
    p_x = label_probabilities(logits.repeat_interleave(n_labels, 0), labels.reshape(-1),
                              softmax_over).view(batch, n_labels)
    if predicted is None:
        pos = subset_positions(softmax_over, classes, logits.device)
        masked = logits if pos is None else logits.masked_fill(pos[None] < 0, float("-inf"))
        predicted = masked.argmax(dim=1)
    else:
        predicted = torch.as_tensor(predicted, device=x.device).long().reshape(-1)
        if predicted.shape != (batch,):
            raise ValueError(f"predicted must be a LongTensor[B] = [{batch}], got shape {tuple(predicted.shape)}")
    is_pred = labels == predicted[:, None]
    missing = ~is_pred.any(dim=1)
    if missing.any():
        i = int(torch.nonzero(missing)[0, 0])
        raise ValueError(f"image {i}: its predicted label {int(predicted[i])} has no map among labels "
                         f"{labels[i].tolist()}; completeness needs the predicted label's map")
    curves = insertion_curve(model, x, maps, labels, steps=steps, fill=fill, softmax_over=softmax_over, **options)
    auc = curve_auc(curves, "mean")
    completeness = torch.clamp(torch.clamp(auc, min=epsilon) / p_x, max=1.0)
    soundness = torch.clamp(torch.clamp(p_x, min=beta) / auc, max=1.0)
    value = torch.where(is_pred, completeness, soundness)
    is_pred_np = is_pred.reshape(-1).cpu().numpy()
    return pd.DataFrame({
        "image": torch.arange(batch).repeat_interleave(n_labels).numpy(),
        "label": labels.reshape(-1).cpu().numpy(),
        "is_predicted": is_pred_np,
        "auc": auc.reshape(-1).double().cpu().numpy(),
        "p_x": p_x.reshape(-1).double().cpu().numpy(),
        "metric": ["completeness" if p else "soundness" for p in is_pred_np],
        "value": value.reshape(-1).double().cpu().numpy(),
    })


_ROW_COLUMNS = ("image", "label", "is_predicted", "auc", "p_x", "metric", "value")


def summarize_completeness_soundness(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per image: its completeness and its soundness (mean over non-predicted labels).

    Columns the caller added to the frame of :func:`completeness_soundness` (e.g. ``method``) are
    kept as grouping keys. Soundness is NaN for an image whose only label is the predicted one.
    """
    missing = [c for c in ("image", "metric", "value") if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing}; pass the frame of completeness_soundness()")
    keys = [c for c in frame.columns if c not in _ROW_COLUMNS] + ["image"]
    wide = frame.pivot_table(index=keys, columns="metric", values="value", aggfunc="mean", dropna=False)
    wide = wide.reindex(columns=["completeness", "soundness"])
    wide.columns.name = None
    return wide.reset_index()


__all__ = ["DEFAULT_N_FILL", "DEFAULT_SIGMA", "DEFAULT_STEPS", "FILLS", "check_fill_images", "class_agnostic",
           "completeness_soundness", "curve_auc", "deletion_curve", "draw_fill_indices", "gaussian_blur",
           "insertion_curve", "insertion_deletion_auc", "label_log_probabilities", "label_probabilities",
           "make_fills", "pixel_ranks", "step_counts", "subset_positions", "summarize_completeness_soundness"]
