"""Similarity of saliency maps, batched in torch: Spearman (abs / signed), SSIM, HOG, sign-flip SSIM.

Adebayo et al. (2018), Sec. 3 and their public code: the rank correlation of absolute maps and of
signed maps, SSIM (Wang et al. 2004, Eq. 13, Gaussian window sigma 1.5) and the rank correlation
of HOG features (Dalal & Triggs 2005), each after a normalisation of the maps; Sixt et al. (2020):
SSIM made invariant to a flip of the map's sign, and the cosine similarity. Every function takes
[B, H, W] maps (or [B, C, H, W], channels reduced by the normalisation, or one [H, W] map) and
returns one value per pair on the maps' device. Reference implementations they equal:
``scipy.stats.spearmanr``, ``skimage.metrics.structural_similarity``, ``skimage.feature.hog``.
"""
from __future__ import annotations

import math
from typing import Sequence
import warnings

import pandas as pd
import torch

from .hog import hog
from .normalize import _VIEWS, NORMALIZATIONS
from .ranks import cosine, spearman
from .ssim import ssim, ssim_signflip

SIMILARITY_METRICS = ("spearman_abs", "spearman", "ssim", "ssim_signflip", "hog", "cosine")

# Options each metric accepts (``percentile`` belongs to the normalisation and is always allowed).
_SSIM_OPTIONS = frozenset({"data_range", "win_size", "sigma", "gaussian_weights", "use_sample_covariance",
                           "k1", "k2"})
METRIC_OPTIONS = {
    "spearman_abs": frozenset(), "spearman": frozenset(), "cosine": frozenset(),
    "ssim": _SSIM_OPTIONS, "ssim_signflip": _SSIM_OPTIONS,
    "hog": frozenset({"orientations", "pixels_per_cell", "cells_per_block", "block_norm"}),
}

# The kind of map each metric reads: absolute, signed (rank-based, clipped), intensity in [0, 1]
# (SSIM, HOG) or signed on a fixed scale (sign-flip SSIM, cosine).
_KIND = {"spearman_abs": "abs", "spearman": "signed", "ssim": "intensity", "hog": "intensity",
         "ssim_signflip": "unit", "cosine": "unit"}


# Data range of SSIM's maps per normalisation (None: the caller must say).
_DATA_RANGE = {"default": {"ssim": 1.0, "ssim_signflip": 2.0}, "max_abs": {"ssim": 1.0, "ssim_signflip": 2.0},
               "minmax": {"ssim": 1.0}, "none": {}}


# ----------------------------------------------------------------------------- public API

def _as_maps(m: object, name: str) -> torch.Tensor:
    if not isinstance(m, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of maps [B, H, W] or [B, C, H, W], got {type(m).__name__}")
    if m.dim() == 2:
        m = m.unsqueeze(0)
    if m.dim() not in (3, 4):
        raise ValueError(f"{name} must have shape [H, W], [B, H, W] or [B, C, H, W] (rank 2-4), got rank "
                         f"{m.dim()} with shape {tuple(m.shape)}")
    if m.shape[0] == 0 or m.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(m.shape)}); pass at least one map")
    if m.is_complex():
        raise TypeError(f"{name} must be real, got dtype {m.dtype}")
    if not m.is_floating_point():
        m = m.double()
    elif m.dtype in (torch.float16, torch.bfloat16):
        m = m.float()
    if not torch.isfinite(m).all():
        raise ValueError(f"{name} contains NaN or Inf values; similarity needs finite maps")
    return m


def check_metrics(metrics) -> tuple[str, ...]:
    """The requested similarity metrics as a tuple without repeats; unknown or no metric is an error."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(dict.fromkeys(metrics))
    if not metrics:
        raise ValueError(f"metrics is empty; choose from {list(SIMILARITY_METRICS)}")
    for metric in metrics:
        if metric not in SIMILARITY_METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {list(SIMILARITY_METRICS)}")
    return metrics


def _check_options(metrics: tuple[str, ...], normalize: str, options: dict) -> None:
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; choose one of {list(NORMALIZATIONS)}")
    valid = set().union(*(METRIC_OPTIONS[m] for m in metrics)) | {"percentile"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for metric(s) {list(metrics)}; valid options: {sorted(valid)}")
    if "percentile" in options and not 0 < options["percentile"] <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {options['percentile']!r}")
    for metric in metrics:
        if _KIND[metric] not in _VIEWS[normalize]:
            raise ValueError(f"metric {metric!r} compares signed maps, which normalize={normalize!r} does not keep; "
                             "use normalize='default', 'max_abs' or 'none'")
        if metric.startswith("ssim") and "data_range" not in options and metric not in _DATA_RANGE[normalize]:
            raise ValueError(f"metric {metric!r} with normalize={normalize!r} needs an explicit data_range "
                             "(the maximum minus the minimum possible value of the maps)")


def _pick(options: dict, metric: str) -> dict:
    return {k: v for k, v in options.items() if k in METRIC_OPTIONS[metric]}


def _compute(metric: str, a: torch.Tensor, b: torch.Tensor, normalize: str, options: dict) -> torch.Tensor:
    kw = _pick(options, metric)
    if metric in ("spearman_abs", "spearman"):
        return spearman(a, b).to(a.dtype)
    if metric == "cosine":
        return cosine(a.flatten(1), b.flatten(1))
    if metric == "hog":
        return spearman(hog(a, **kw), hog(b, **kw)).to(a.dtype)
    kw.setdefault("data_range", _DATA_RANGE[normalize].get(metric))
    return ssim(a, b, **kw) if metric == "ssim" else ssim_signflip(a, b, **kw)


def _table(a: torch.Tensor, b: torch.Tensor, metrics: tuple[str, ...], normalize: str,
           options: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Metrics for maps already checked (a and b may differ in channels): values and a mask of the
    pairs with an undefined (NaN) value for some metric."""
    views: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    percentile = options.get("percentile", 99.0)
    out = {}
    for metric in metrics:
        key, fn = _VIEWS[normalize][_KIND[metric]]
        if key not in views:
            views[key] = (fn(a, percentile), fn(b, percentile))
        out[metric] = _compute(metric, *views[key], normalize, options)
    return out


def _warn_undefined(out: dict[str, torch.Tensor], stacklevel: int) -> None:
    nan = {metric: torch.isnan(values) for metric, values in out.items()}
    pairs = int(torch.stack(list(nan.values())).any(0).sum())
    if pairs:
        batch = len(next(iter(out.values())))
        detail = ", ".join(f"{metric}: {int(mask.sum())}" for metric, mask in nan.items() if mask.any())
        warnings.warn(f"similarity undefined (NaN) for {pairs} of {batch} pair(s) with a constant map after "
                      f"normalisation (for hog: constant HOG features); NaN pairs per metric: {detail}",
                      RuntimeWarning, stacklevel=stacklevel + 1)


def _prepare(a, b, metrics, normalize, options):
    metrics = check_metrics(metrics)
    _check_options(metrics, normalize, options)
    a, b = _as_maps(a, "a"), _as_maps(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got a {tuple(a.shape)} and b {tuple(b.shape)}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype), metrics


def similarity_table(a: torch.Tensor, b: torch.Tensor, metrics: Sequence[str] = ("spearman_abs",), *,
                     normalize: str = "default", **options) -> dict[str, torch.Tensor]:
    """Several metrics for the same pairs of maps ``a[i]``, ``b[i]``: ``{metric: Tensor[B]}``.

    As :func:`similarity`, but each normalised version of the maps is computed once and shared by
    the metrics that read it (under ``"default"``: ``spearman_abs``, ``ssim`` and ``hog`` share the
    clipped absolute maps). ``options`` go to the metrics that accept them (``data_range`` to both
    SSIMs). One RuntimeWarning for all undefined (NaN) values.
    """
    a, b, metrics = _prepare(a, b, metrics, normalize, options)
    out = _table(a, b, metrics, normalize, options)
    _warn_undefined(out, stacklevel=2)
    return out


def similarity(a: torch.Tensor, b: torch.Tensor, metric: str = "spearman_abs", *, normalize: str = "default",
               **options) -> torch.Tensor:
    """One similarity value per pair of maps ``a[i]``, ``b[i]`` -> Tensor[B] on the maps' device.

    Adebayo et al. (2018), Sec. 3 and public code; Sixt et al. (2020). Maps are [B, H, W],
    [B, C, H, W] or one [H, W], both the same shape (a 3-D tensor is a batch of one-channel maps,
    not one map with channels: add the batch dimension to such a map).

    Metrics (:data:`SIMILARITY_METRICS`):

    - ``spearman_abs``: Spearman rank correlation of the absolute maps (average ranks for ties,
      as ``scipy.stats.spearmanr``);
    - ``spearman``: the same on signed maps;
    - ``ssim``: SSIM (Wang et al. 2004; Gaussian window sigma 1.5, population covariance) with
      ``data_range`` 1 on [0, 1] maps; options ``win_size``, ``sigma``, ``gaussian_weights``,
      ``use_sample_covariance``, ``data_range``, ``k1``, ``k2`` (see :func:`ssim`);
    - ``ssim_signflip``: max(SSIM(a, b), SSIM(a, -b)) on signed maps in [-1, 1], ``data_range`` 2;
    - ``hog``: Spearman correlation of the HOG vectors (``skimage.feature.hog``: 9 orientations,
      3x3-cell blocks, L2-Hys; cells of 1/14 of the shorter side, i.e. Adebayo's 16x16 on 224x224
      and 2x2 on 28x28); options ``orientations``, ``pixels_per_cell``, ``cells_per_block``,
      ``block_norm`` (see :func:`saliency_sanity.metrics.hog.hog`);
    - ``cosine``: cosine similarity of the flattened signed maps (Sixt et al. 2020), not centred,
      so maps of one sign (e.g. two uniform masks) are not 0 when unrelated.

    ``normalize`` (channels are reduced by the same rule):

    - ``"default"`` (this project's): absolute maps ``sum_c |E_c|`` clipped at their 99th percentile and
      min-max scaled to [0, 1] (:func:`normalize_abs`) for ``spearman_abs`` (as Adebayo et al.'s
      code does for its rank correlation of absolute maps), ``ssim`` and ``hog`` (their code takes
      SSIM and HOG on the min-max scaled *signed* map instead: ``"minmax"``); signed maps sum_c E_c
      divided by the 99th percentile of their magnitude and clipped to [-1, 1]
      (:func:`normalize_signed`) for ``spearman``; signed maps divided by max|.|
      (:func:`normalize_max_abs`) for ``ssim_signflip`` and ``cosine``. Option
      ``percentile`` (default 99) moves the clipping point.
    - ``"max_abs"``: every map divided by max|.| (Khakzar et al.'s CVPR 2021 code); absolute maps
      ``sum_c |E_c|`` / max for ``spearman_abs``, ``ssim`` and ``hog``.
    - ``"minmax"``: maps min-max scaled to [0, 1] without clipping, as Adebayo et al.'s code does
      for SSIM and HOG (signed sum_c E_c; ``spearman_abs`` on ``sum_c |E_c|``). Not for the signed
      metrics ``ssim_signflip`` and ``cosine``.
    - ``"none"``: the maps as given (sum_c E_c; ``sum_c |E_c|`` for ``spearman_abs``); the SSIMs then
      need an explicit ``data_range``.

    A pair whose normalised map is constant has no correlation: NaN and one RuntimeWarning that
    counts such pairs, never a silent 0 or 1.
    """
    if not isinstance(metric, str):
        raise TypeError(f"metric must be one name (a str), got {type(metric).__name__}; use similarity_table "
                        "for several metrics")
    a, b, metrics = _prepare(a, b, metric, normalize, options)
    out = _table(a, b, metrics, normalize, options)
    _warn_undefined(out, stacklevel=2)
    return out[metric]


CALIBRATION_METRICS = ("spearman_abs", "spearman", "ssim", "hog")


def random_map_calibration(maps: torch.Tensor, metrics: Sequence[str] = CALIBRATION_METRICS, seed: int = 0, *,
                           normalize: str = "default", **options) -> pd.DataFrame:
    """Similarity of unrelated maps, which should be about 0 (Adebayo et al. 2018, App. B).

    Compares each of the B ``maps`` with a uniform random mask U(0, 1) and with a Gaussian noise
    map N(0, 1) of the same height and width, and pairs of independent uniform masks, with the
    metrics and normalisation of :func:`similarity`. Random maps are drawn on the CPU from
    ``seed`` (identical on every device) and moved to the maps' device. Expected values for
    unrelated maps: Spearman 0 with standard deviation about 1/sqrt(H W - 1); SSIM slightly above 0;
    HOG above 0 (Adebayo et al. report 0.078 for two uniform masks: both share the zero gradient
    at the border); cosine is not centred and is about 0.75 for two uniform masks.
    Returns a tidy frame ``comparison, metric, mean, std, n`` (std with ddof 0; NaN pairs, e.g.
    constant maps, left out of mean and std and of ``n``).
    """
    metrics = check_metrics(metrics)
    _check_options(metrics, normalize, options)
    maps = _as_maps(maps, "maps")
    shape = (maps.shape[0], *maps.shape[-2:])
    gen = torch.Generator().manual_seed(seed)
    uniform = torch.rand(shape, generator=gen, dtype=torch.float64).to(maps.device, maps.dtype)
    uniform2 = torch.rand(shape, generator=gen, dtype=torch.float64).to(maps.device, maps.dtype)
    noise = torch.randn(shape, generator=gen, dtype=torch.float64).to(maps.device, maps.dtype)
    comparisons = {"maps vs uniform masks": (maps, uniform), "maps vs Gaussian noise": (maps, noise),
                   "uniform mask vs uniform mask": (uniform, uniform2)}
    rows = []
    for comparison, (x, y) in comparisons.items():
        table = _table(x, y, metrics, normalize, options)
        for metric, values in table.items():
            v = values.double()
            v = v[~torch.isnan(v)]
            n = v.numel()
            mean = float(v.mean()) if n else math.nan
            std = float(v.std(correction=0)) if n else math.nan
            rows.append({"comparison": comparison, "metric": metric, "mean": mean, "std": std, "n": n})
    return pd.DataFrame(rows, columns=["comparison", "metric", "mean", "std", "n"])
