"""Row-wise ranks, quantiles and correlations of [B, N] tensors, batched in torch.

Spearman (1904): the Pearson correlation of the ranks, ties given their average rank, as
``scipy.stats.spearmanr``; quantiles by linear interpolation, as ``numpy.percentile``. Every
function works on all rows at once (sort, tie groups, scatter-add) on the tensor's device.
"""
from __future__ import annotations

import torch


def row_quantile(flat: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q``-quantile (0 <= q <= 1) of each row of ``flat`` [B, N] as [B, 1].

    Linear interpolation between the order statistics at ``q * (N - 1)``, numpy's default method
    (including its two-sided lerp, so values match ``np.percentile`` to the last bit in most cases).
    Sorting instead of ``torch.quantile`` keeps any number of elements allowed (torch.quantile is
    limited to 2**24).
    """
    n = flat.shape[1]
    ordered = flat.sort(dim=1).values
    pos = q * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    t = pos - lo
    a, b = ordered[:, lo:lo + 1], ordered[:, hi:hi + 1]
    # numpy's lerp: from the nearer end, which keeps the result inside [a, b] under rounding
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def rankdata(v: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N of each row of ``v`` [B, N] in float64, ties given their average rank.

    Equal to ``scipy.stats.rankdata(method="average")`` per row: sort, mark where a new value
    starts a tie group, then the mean position of each group by scatter-add.
    """
    sorted_v, order = v.sort(dim=1, stable=True)
    starts = torch.ones_like(sorted_v, dtype=torch.bool)
    starts[:, 1:] = sorted_v[:, 1:] != sorted_v[:, :-1]
    group = starts.cumsum(1) - 1
    pos = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=torch.float64).expand(v.shape[0], -1)
    sums = torch.zeros_like(pos).scatter_add_(1, group, pos)
    counts = torch.zeros_like(pos).scatter_add_(1, group, torch.ones_like(pos))
    average = (sums / counts.clamp(min=1)).gather(1, group)
    return torch.empty_like(average).scatter_(1, order, average)


def _nan_where_zero(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe, torch.full_like(den, float("nan"))).clamp(-1, 1)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each pair of rows [B, N] -> [B]; NaN where a row is constant."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return _nan_where_zero((a * b).sum(1), a.norm(dim=1) * b.norm(dim=1))


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each pair of rows [B, N] -> [B] (not centred); NaN where a row is 0."""
    return _nan_where_zero((a * b).sum(1), a.norm(dim=1) * b.norm(dim=1))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps (rows after flattening) -> [B] in float64.

    Pearson correlation of the average ranks, equal to ``scipy.stats.spearmanr``; NaN for a pair
    with a constant map (its ranks are all equal).
    """
    a, b = a.flatten(1), b.flatten(1)
    return pearson(rankdata(a), rankdata(b))
