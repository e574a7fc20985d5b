"""Similarity of saliency maps, batched in torch: Spearman (abs / signed), SSIM, HOG, sign-flip SSIM.

Adebayo et al. (2018), Sec. 3 and their public code: rank correlation of absolute maps and of
signed maps, SSIM (Wang et al. 2004, Eq. 13, Gaussian window sigma 1.5) and the rank correlation of
HOG features (Dalal & Triggs 2005), each after a normalisation of the maps; Sixt et al. (2020):
SSIM made invariant to a flip of the map's sign. Every function takes [B, H, W] (or [B, C, H, W],
channels reduced by the normalisation) and returns one value per pair, on the maps' device.
Equal to scipy.stats.spearmanr, skimage.metrics.structural_similarity and skimage.feature.hog.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

SIMILARITY_METRICS = ("spearman_abs", "spearman", "ssim", "ssim_signflip", "hog", "cosine")
NORMALIZATIONS = ("default", "none", "max_abs")
# Which normalised maps each metric reads under normalize="default".
_DEFAULT_VIEW = {"spearman_abs": "abs", "spearman": "signed", "ssim": "abs", "hog": "abs",
                 "ssim_signflip": "signed_unit", "cosine": "signed_unit"}


# ----------------------------------------------------------------------------- normalisations

def _as_batch(m: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(m, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(m).__name__}")
    if m.dim() == 2:
        m = m.unsqueeze(0)
    if m.dim() not in (3, 4):
        raise ValueError(f"{name} must have shape [B, H, W] or [B, C, H, W], got {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return m.double() if not m.is_floating_point() else m


def _channel_sum(m: torch.Tensor, absolute: bool) -> torch.Tensor:
    if m.dim() == 4:
        return (m.abs() if absolute else m).sum(1)
    return m.abs() if absolute else m


def _per_map_quantile(flat: torch.Tensor, q: float) -> torch.Tensor:
    return torch.quantile(flat, q, dim=1, keepdim=True)


def normalize_abs(m: torch.Tensor, clip: float = 0.99) -> torch.Tensor:
    """Adebayo et al.'s absolute visualisation: sum_c |E_c|, clip at the ``clip`` quantile of the map,
    min-max to [0, 1] (a constant map becomes all zeros)."""
    m = _channel_sum(m, absolute=True)
    flat = m.flatten(1)
    flat = torch.minimum(flat, _per_map_quantile(flat, clip))
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - low) / torch.where(high > low, high - low, torch.ones_like(high))).view_as(m)


def normalize_signed(m: torch.Tensor, clip: float = 0.99) -> torch.Tensor:
    """Adebayo et al.'s signed visualisation: sum_c E_c divided by the ``clip`` quantile of |map| and
    clipped to [-1, 1]."""
    m = _channel_sum(m, absolute=False)
    flat = m.flatten(1)
    scale = _per_map_quantile(flat.abs(), clip)
    return (flat / torch.where(scale > 0, scale, torch.ones_like(scale))).clamp(-1, 1).view_as(m)


def normalize_max_abs(m: torch.Tensor) -> torch.Tensor:
    """Division by max|map| (Khakzar et al.'s CVPR 2021 code); signs kept, range [-1, 1]."""
    m = _channel_sum(m, absolute=False)
    scale = m.flatten(1).abs().amax(1).view(-1, 1, 1)
    return m / torch.where(scale > 0, scale, torch.ones_like(scale))


def _view(m: torch.Tensor, view: str, normalize: str) -> torch.Tensor:
    if normalize == "none":
        return _channel_sum(m, absolute=view == "abs")
    if normalize == "max_abs":
        unit = normalize_max_abs(m)
        return unit.abs() if view == "abs" else unit
    if view == "abs":
        return normalize_abs(m)
    if view == "signed":
        return normalize_signed(m)
    return normalize_max_abs(m)


# ----------------------------------------------------------------------------- Spearman

def rankdata(v: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N of each row with ties given their average rank (scipy.stats.rankdata 'average')."""
    sorted_v, order = v.sort(dim=1, stable=True)
    new_group = torch.ones_like(sorted_v, dtype=torch.bool)
    new_group[:, 1:] = sorted_v[:, 1:] != sorted_v[:, :-1]
    group = new_group.cumsum(1) - 1
    pos = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=torch.float64).expand_as(group)
    sums = torch.zeros_like(pos).scatter_add_(1, group, pos)
    counts = torch.zeros_like(pos).scatter_add_(1, group, torch.ones_like(pos))
    avg = (sums / counts.clamp(min=1)).gather(1, group)
    return torch.empty_like(avg).scatter_(1, order, avg)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(1) / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.full_like(den, float("nan")))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of rows (average ranks for ties); NaN for a constant row."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return _pearson(rankdata(a), rankdata(b))


# ----------------------------------------------------------------------------- SSIM

def _gaussian_kernel(sigma: float, truncate: float, device, dtype) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)  # as scipy.ndimage
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _symmetric_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    """Half-sample symmetric padding (scipy.ndimage mode 'reflect': d c b a | a b c d)."""
    for dim in (-2, -1):
        n = x.shape[dim]
        idx = torch.arange(-r, n + r, device=x.device)
        idx = torch.where(idx < 0, -idx - 1, idx)
        period = 2 * n
        idx = idx % period
        idx = torch.where(idx >= n, period - 1 - idx, idx)
        x = x.index_select(dim, idx)
    return x


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable filter of [B, H, W] maps with symmetric borders, output the same size."""
    r = (len(kernel) - 1) // 2
    y = _symmetric_pad(x, r).unsqueeze(1)
    y = F.conv2d(y, kernel.view(1, 1, 1, -1))
    y = F.conv2d(y, kernel.view(1, 1, -1, 1))
    return y.squeeze(1)


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0, sigma: float = 1.5,
         gaussian_weights: bool = True, win_size: int = 7, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM of each pair of [B, H, W] maps (Wang et al. 2004, Eq. 13), population covariance;
    equal to skimage's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=...)`` (uniform ``win_size`` window if not gaussian)."""
    if data_range <= 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    a, b = a.double(), b.double()
    if gaussian_weights:
        kernel = _gaussian_kernel(sigma, 3.5, a.device, a.dtype)
    else:
        if win_size < 3 or win_size % 2 == 0:
            raise ValueError(f"win_size must be an odd integer >= 3, got {win_size}")
        kernel = torch.full((win_size,), 1.0 / win_size, device=a.device, dtype=a.dtype)
    win = len(kernel)
    if min(a.shape[-2:]) < win:
        raise ValueError(f"maps of size {tuple(a.shape[-2:])} are smaller than the SSIM window ({win}); "
                         "use smaller sigma or win_size")
    ux, uy = _filter(a, kernel), _filter(b, kernel)
    vx = _filter(a * a, kernel) - ux * ux
    vy = _filter(b * b, kernel) - uy * uy
    vxy = _filter(a * b, kernel) - ux * uy
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return s[:, pad:s.shape[1] - pad, pad:s.shape[2] - pad].mean((1, 2))


# ----------------------------------------------------------------------------- HOG

def default_pixels_per_cell(size: int) -> int:
    """Adebayo et al. use 16x16 cells on 224x224 maps (14 cells a side); we keep 14 cells a side."""
    return max(2, size // 14)


def hog(m: torch.Tensor, *, orientations: int = 9, pixels_per_cell: int | None = None,
        cells_per_block: int = 3, eps: float = 1e-5) -> torch.Tensor:
    """HOG features of [B, H, W] maps, equal to ``skimage.feature.hog`` (central differences without
    division, unsigned orientations in ``orientations`` hard bins, cell means, L2-Hys blocks)."""
    m = m.double()
    p = pixels_per_cell or default_pixels_per_cell(min(m.shape[-2:]))
    bsz, h, w = m.shape
    g_row = torch.zeros_like(m)
    g_col = torch.zeros_like(m)
    g_row[:, 1:-1, :] = m[:, 2:, :] - m[:, :-2, :]
    g_col[:, :, 1:-1] = m[:, :, 2:] - m[:, :, :-2]
    magnitude = torch.hypot(g_row, g_col)
    orientation = torch.rad2deg(torch.atan2(g_row, g_col)) % 180
    edges = torch.arange(1, orientations, device=m.device, dtype=m.dtype) * (180.0 / orientations)
    bins = (orientation.unsqueeze(-1) >= edges).sum(-1)
    nr, nc = h // p, w // p
    if nr < cells_per_block or nc < cells_per_block:
        raise ValueError(f"maps of size {(h, w)} are too small for HOG with {p}x{p} cells and "
                         f"{cells_per_block}x{cells_per_block} blocks; lower pixels_per_cell")
    onehot = F.one_hot(bins[:, :nr * p, :nc * p], orientations).to(m.dtype) * magnitude[:, :nr * p, :nc * p, None]
    cells = onehot.view(bsz, nr, p, nc, p, orientations).sum((2, 4)) / (p * p)
    blocks = cells.unfold(1, cells_per_block, 1).unfold(2, cells_per_block, 1)  # [B, nbr, nbc, o, br, bc]
    blocks = blocks.permute(0, 1, 2, 4, 5, 3).flatten(3)
    out = blocks / torch.sqrt((blocks ** 2).sum(-1, keepdim=True) + eps ** 2)
    out = out.clamp(max=0.2)
    out = out / torch.sqrt((out ** 2).sum(-1, keepdim=True) + eps ** 2)
    return out.flatten(1)


# ----------------------------------------------------------------------------- public API

def _metric(metric: str, a: torch.Tensor, b: torch.Tensor, options: dict) -> torch.Tensor:
    if metric in ("spearman_abs", "spearman"):
        return spearman(a, b)
    if metric == "ssim":
        return ssim(a, b, data_range=options.get("data_range", 1.0),
                    **{k: v for k, v in options.items() if k in ("sigma", "gaussian_weights", "win_size")})
    if metric == "ssim_signflip":
        kw = {k: v for k, v in options.items() if k in ("sigma", "gaussian_weights", "win_size")}
        rng = options.get("data_range", 2.0)
        return torch.maximum(ssim(a, b, data_range=rng, **kw), ssim(a, -b, data_range=rng, **kw))
    if metric == "hog":
        kw = {k: v for k, v in options.items() if k in ("orientations", "pixels_per_cell", "cells_per_block")}
        return spearman(hog(a, **kw), hog(b, **kw))
    if metric == "cosine":
        fa, fb = a.flatten(1).double(), b.flatten(1).double()
        den = fa.norm(dim=1) * fb.norm(dim=1)
        return torch.where(den > 0, (fa * fb).sum(1) / torch.where(den > 0, den, torch.ones_like(den)),
                           torch.full_like(den, float("nan")))
    raise AssertionError(metric)


def _check(a, b, metrics, normalize):
    a, b = _as_batch(a, "a"), _as_batch(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got a {tuple(a.shape)} and b {tuple(b.shape)}")
    for m in metrics:
        if m not in SIMILARITY_METRICS:
            raise ValueError(f"unknown metric {m!r}; choose one of {list(SIMILARITY_METRICS)}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; choose one of {list(NORMALIZATIONS)}")
    return a, b


def similarity_table(a: torch.Tensor, b: torch.Tensor, metrics: Sequence[str] = ("spearman_abs",), *,
                     normalize: str = "default", **options) -> dict[str, torch.Tensor]:
    """Several metrics for the same pairs of maps, normalising each view of the maps once."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    a, b = _check(a, b, metrics, normalize)
    views: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    out = {}
    for metric in metrics:
        view = _DEFAULT_VIEW[metric]
        if view not in views:
            views[view] = (_view(a, view, normalize), _view(b, view, normalize))
        out[metric] = _metric(metric, *views[view], options)
    bad = {m: int(torch.isnan(v).sum()) for m, v in out.items() if torch.isnan(v).any()}
    if bad:
        warnings.warn(f"similarity is undefined (NaN) for constant maps: {bad} pair(s) per metric",
                      RuntimeWarning, stacklevel=2)
    return out


def similarity(a: torch.Tensor, b: torch.Tensor, metric: str = "spearman_abs", *, normalize: str = "default",
               **options) -> torch.Tensor:
    """One similarity value per pair of maps ``a[i]``, ``b[i]`` (see :data:`SIMILARITY_METRICS`).

    ``normalize="default"`` applies Adebayo et al.'s normalisation of each metric (abs maps clipped
    at the 99th percentile and min-max scaled for ``spearman_abs``, ``ssim``, ``hog``; signed maps
    scaled by the 99th percentile of |map| for ``spearman``; max|.| scaling for ``ssim_signflip``
    and ``cosine``); ``"max_abs"`` divides by max|map|; ``"none"`` uses the maps as given.
    Constant maps make correlations undefined: NaN and a RuntimeWarning, never a silent 0 or 1.
    """
    return similarity_table(a, b, (metric,), normalize=normalize, **options)[metric]


def random_map_calibration(maps: torch.Tensor, metrics: Sequence[str] = ("spearman_abs", "spearman", "ssim", "hog"),
                           *, seed: int = 0) -> pd.DataFrame:
    """Similarity of unrelated maps, which must be about 0 (Adebayo et al. 2018, App. B).

    Compares ``maps`` with uniform random masks and with Gaussian noise maps, and pairs of
    independent random masks, all seeded. Returns ``comparison, metric, mean, std, n``.
    """
    maps = _as_batch(maps, "maps")
    maps = _channel_sum(maps, absolute=False)
    gen = torch.Generator().manual_seed(seed)
    shape = maps.shape
    uniform = torch.rand(shape, generator=gen, dtype=torch.float64).to(maps.device)
    uniform2 = torch.rand(shape, generator=gen, dtype=torch.float64).to(maps.device)
    noise = torch.randn(shape, generator=gen, dtype=torch.float64).to(maps.device)
    rows = []
    for comparison, (x, y) in {"maps vs uniform masks": (maps, uniform), "maps vs Gaussian noise": (maps, noise),
                               "uniform mask vs uniform mask": (uniform, uniform2)}.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            table = similarity_table(x, y, metrics)
        for metric, values in table.items():
            v = values.detach().cpu().numpy()
            rows.append({"comparison": comparison, "metric": metric, "mean": float(np.nanmean(v)),
                         "std": float(np.nanstd(v)), "n": int(np.isfinite(v).sum())})
    return pd.DataFrame(rows)
