"""Complexity of saliency maps: the discrete (histogram) entropy of each map's values.

Hedström et al. (2023), "Sanity Checks Revisited: An Exploration to Repair the Model Parameter
Randomisation Test", measure a map's complexity by the Shannon entropy of the histogram of its
values (Quantus's ``discrete_entropy``). :func:`discrete_entropy` computes it for a whole batch of
maps at once on the maps' device, with the bins of ``numpy.histogram(a, bins=n_bins)`` and the
entropy of ``scipy.stats.entropy(counts)``.
"""
from __future__ import annotations

import numbers

import torch

__all__ = ["discrete_entropy", "histogram_counts"]


def _check_n_bins(n_bins: object) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}; Quantus's default is 100")
    return int(n_bins)


def _bin_dtype(maps: torch.Tensor) -> torch.dtype:
    """numpy.histogram's arithmetic dtype: the array's own floating dtype, float64 for integers and
    booleans. bfloat16 (which numpy lacks) is binned in float32."""
    if maps.dtype in (torch.float16, torch.float32, torch.float64):
        return maps.dtype
    if maps.dtype == torch.bfloat16:
        return torch.float32
    return torch.float64


def _check_maps(maps: object) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"maps must be a torch.Tensor of shape [B, ...] (one map per row), got {type(maps).__name__}")
    if maps.is_complex():
        raise TypeError(f"maps must be real, got dtype {maps.dtype}")
    if maps.dim() < 1 or maps.shape[0] == 0:
        raise ValueError(f"maps must have shape [B, ...] with at least one map, got shape {tuple(maps.shape)}")
    if maps[0].numel() == 0:
        raise ValueError(f"every map must hold at least one value, got maps of shape {tuple(maps.shape[1:])}")
    if maps.is_floating_point() and not torch.isfinite(maps).all():
        bad = (~torch.isfinite(maps.flatten(1))).any(1).nonzero().flatten().tolist()
        raise ValueError(f"maps {bad[:10]} contain NaN or Inf values; a histogram needs a finite range "
                         "(numpy.histogram raises here too)")
    return maps


def histogram_counts(maps: torch.Tensor, n_bins: int = 100) -> torch.Tensor:
    """Histogram counts of every map's values, as ``numpy.histogram(map, bins=n_bins)[0]`` per map.

    ``n_bins`` equal-width bins over [min, max] of each map, the last bin closed on the right; a
    constant map gets the range (min - 0.5, max + 0.5), i.e. one occupied bin. The bin index is
    computed as numpy does, in the map's own floating dtype (float64 for integer maps):
    ``int((a - min) / (max - min) * n_bins)``, then corrected against numpy's ``linspace`` edges,
    so the counts equal numpy's also for values on or within one ulp of a bin edge. Returns
    LongTensor[B, n_bins]. Like numpy, raises ValueError when a non-constant map's range is too
    small for ``n_bins`` distinct edges. A constant map so large that min - 0.5 rounds to min
    (e.g. 2**24 in float32), where numpy raises, has all its values in bin ``n_bins // 2``, where
    numpy puts any other constant map: its entropy stays 0.
    """
    maps = _check_maps(maps)
    n = _check_n_bins(n_bins)
    flat = maps.detach().flatten(1).to(_bin_dtype(maps))
    batch = flat.shape[0]
    first, last = flat.amin(1), flat.amax(1)
    constant = first == last
    first = torch.where(constant, first - 0.5, first)
    last = torch.where(constant, last + 0.5, last)
    span = last - first
    # numpy.linspace(first, last, n + 1) in the bin dtype: arange * step + first, last edge = last
    step = span / n
    edges = torch.arange(n + 1, dtype=flat.dtype, device=flat.device)[None, :] * step[:, None]
    edges = edges + first[:, None]
    edges[:, -1] = last
    collapsed = (edges[:, :-1] >= edges[:, 1:]).any(1)
    if (collapsed & ~constant).any():
        rows = (collapsed & ~constant).nonzero().flatten().tolist()
        raise ValueError(f"maps {rows[:10]} have a range too small for {n} distinct bins in {flat.dtype} "
                         "(numpy.histogram raises 'Too many bins for data range'); use fewer bins or "
                         "float64 maps")
    safe_span = torch.where(span > 0, span, torch.ones_like(span))  # span 0: only collapsed constant maps
    index = (((flat - first[:, None]) / safe_span[:, None]) * n).to(torch.long)  # truncation, as astype(intp)
    index = torch.where(index == n, index - 1, index)  # the maximum falls in the last bin
    index = torch.where(flat < edges.gather(1, index), index - 1, index)
    above = (flat >= edges.gather(1, index + 1)) & (index != n - 1)
    index = torch.where(above, index + 1, index)
    # a constant map whose +-0.5 is lost to rounding (numpy raises): all values in numpy's bin n // 2
    index = torch.where((collapsed & constant)[:, None], n // 2, index)
    offsets = torch.arange(batch, device=flat.device)[:, None] * n
    counts = torch.bincount((index + offsets).flatten(), minlength=batch * n)
    return counts.view(batch, n)


def discrete_entropy(maps: torch.Tensor, n_bins: int = 100) -> torch.Tensor:
    """Shannon entropy (nats) of the histogram of each map's values, Tensor[B] in float64.

    Hedström et al. (2023) (the complexity of eMPRT); equal to Quantus's
    ``quantus.functions.complexity_func.discrete_entropy(a=map, x=None, n_bins=n_bins)``.

    Each map (a row of ``maps`` [B, ...], all its values, channels included) is binned as by
    ``numpy.histogram(map, bins=n_bins)`` (:func:`histogram_counts`: equal-width bins over the
    map's [min, max], the right edge included in the last bin, a constant map in one bin) and the
    entropy is ``scipy.stats.entropy(counts)``: ``-sum(p log p)`` over the normalised counts ``p``
    (empty bins add 0), computed in float64. A constant map has entropy 0; a map that fills every
    bin equally has ``log(n_bins)``, the maximum. The binning arithmetic uses the map's own
    floating dtype, as numpy's does, so float32 maps get numpy's float32 counts.
    """
    counts = histogram_counts(maps, n_bins).to(torch.float64)
    p = counts / counts.sum(1, keepdim=True)
    return torch.special.entr(p).sum(1) + 0.0  # + 0.0: a constant map's -0.0 becomes 0.0
