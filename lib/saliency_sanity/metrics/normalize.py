"""The normalisations a similarity metric reads a saliency map through.

Adebayo et al. (2018), Sec. 3 and their public code: absolute maps clipped at their 99th percentile
and min-max scaled to [0, 1], signed maps divided by the 99th percentile of |E| and clipped to
[-1, 1] (the default of every metric); max-abs and min-max scalings and the raw maps are named options. A [B, C, H, W] map is
reduced over channels (sum_c |E_c| for absolute views, sum_c E_c for signed ones).
"""
from __future__ import annotations

from typing import Callable

import torch

from .ranks import row_quantile

NORMALIZATIONS = ("default", "none", "max_abs", "minmax")

def _sum_channels(m: torch.Tensor, absolute: bool) -> torch.Tensor:
    """[B, C, H, W] -> [B, H, W] by sum_c |E_c| (absolute) or sum_c E_c; [B, H, W] kept (abs taken)."""
    if absolute:
        m = m.abs()
    return m.sum(1) if m.dim() == 4 else m


def _safe_div(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x / torch.where(scale > 0, scale, torch.ones_like(scale))


def _min_max(flat: torch.Tensor) -> torch.Tensor:
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return _safe_div(flat - low, high - low)


def normalize_abs(m: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """Adebayo et al.'s absolute map: sum_c |E_c|, clipped at its ``percentile``, min-max to [0, 1].

    Adebayo et al. (2018) public code, PAIR saliency's ``VisualizeImageGrayscale``:
    ``clip((E - min E) / (P99(E) - min E), 0, 1)`` with ``E = sum_c |E_c|``, per map. Clipping puts
    the top 1 % of pixels in one tie. A map whose percentile equals its minimum becomes all 0.
    """
    m = _sum_channels(m, absolute=True)
    flat = m.flatten(1)
    flat = torch.minimum(flat, row_quantile(flat, percentile / 100))
    return _min_max(flat).view_as(m)


def normalize_signed(m: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """Signed map scaled by the ``percentile`` of its magnitude and clipped to [-1, 1].

    After Adebayo et al. (2018)'s "no absolute value" maps: ``clip(E / P99(|E|), -1, 1)`` with
    ``E = sum_c E_c``. Their code (PAIR's ``VisualizeImageDiverging``) divides by |P99(E)| of the
    signed map and clips only the positive tail; we clip both tails at the percentile of |E| so
    that the normalisation commutes with a sign flip (spearman(a, -a) = -1 exactly). Where that
    percentile is 0 the limit of the formula is used: sign(E).
    """
    m = _sum_channels(m, absolute=False)
    flat = m.flatten(1)
    scale = row_quantile(flat.abs(), percentile / 100)
    scaled = torch.where(scale > 0, _safe_div(flat, scale), torch.sign(flat))
    return scaled.clamp(-1, 1).view_as(m)


def normalize_max_abs(m: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """Map divided by its largest magnitude (Khakzar et al.'s CVPR 2021 code): E / max|E|.

    ``E = sum_c E_c`` in [-1, 1], or ``E = sum_c |E_c|`` in [0, 1] if ``absolute``; an all-zero
    map stays 0.
    """
    m = _sum_channels(m, absolute=absolute)
    return _safe_div(m, m.flatten(1).abs().amax(1).view(-1, *([1] * (m.dim() - 1))))


def normalize_minmax(m: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """Map min-max scaled to [0, 1]: (E - min E) / (max E - min E), sign not kept.

    Adebayo et al. (2018)'s code computes SSIM and HOG on this normalisation of the signed map
    (their ``normalize_image``; on 3-channel maps they scale the channels jointly and average SSIM
    over channels, here channels are summed first). Their SSIM also used old skimage defaults:
    ``data_range`` 2 for float maps and ``use_sample_covariance=True``; pass those options to
    reproduce it. ``absolute`` uses ``sum_c |E_c|`` instead. A constant map becomes 0.
    """
    m = _sum_channels(m, absolute=absolute)
    return _min_max(m.flatten(1)).view_as(m)


# The views of a map that the metrics read, each a function of (maps, percentile).
def _abs_unit(m, percentile):
    return normalize_max_abs(m, absolute=True)


def _unit(m, percentile):
    return normalize_max_abs(m)


def _abs_minmax(m, percentile):
    return normalize_minmax(m, absolute=True)


def _minmax(m, percentile):
    return normalize_minmax(m)


def _abs_raw(m, percentile):
    return _sum_channels(m, absolute=True)


def _raw(m, percentile):
    return _sum_channels(m, absolute=False)


# For each normalisation and kind of map: a key naming the normalised maps (metrics whose keys
# agree share them) and the function computing them.
_VIEWS: dict[str, dict[str, tuple[str, Callable]]] = {
    "default": {"abs": ("abs_p", normalize_abs), "intensity": ("abs_p", normalize_abs),
                "signed": ("signed_p", normalize_signed), "unit": ("unit", _unit)},
    "max_abs": {"abs": ("abs_unit", _abs_unit), "intensity": ("abs_unit", _abs_unit),
                "signed": ("unit", _unit), "unit": ("unit", _unit)},
    "none": {"abs": ("abs_raw", _abs_raw), "intensity": ("raw", _raw), "signed": ("raw", _raw),
             "unit": ("raw", _raw)},
    "minmax": {"abs": ("abs_minmax", _abs_minmax), "intensity": ("minmax", _minmax), "signed": ("minmax", _minmax)},
}
