"""SSIM of saliency maps, batched in torch, equal to scikit-image's ``structural_similarity``.

Wang et al. (2004), Eq. 13, with scikit-image's defaults (Gaussian window sigma 1.5, 'reflect'
borders, population covariance); Sixt et al. (2020), Sec. 5: the sign-flip invariant variant.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

def _gaussian_kernel(sigma: float, radius: int, device, dtype) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 / sigma ** 2 * x ** 2)  # as scipy.ndimage's _gaussian_kernel1d
    return (k / k.sum()).to(dtype)


def _reflect_index(n: int, r: int, device) -> torch.Tensor:
    """Indices of a line of ``n`` padded by ``r`` on both sides, mode 'reflect' of scipy.ndimage
    (half-sample symmetric, d c b a | a b c d | d c b a, repeated for any ``r``)."""
    idx = torch.arange(-r, n + r, device=device)
    idx = torch.where(idx < 0, -idx - 1, idx) % (2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable correlation of [N, H, W] with ``kernel`` along both axes, 'reflect' borders, same size."""
    r = (len(kernel) - 1) // 2
    h, w = x.shape[-2:]
    x = x.index_select(-2, _reflect_index(h, r, x.device)).index_select(-1, _reflect_index(w, r, x.device))
    x = F.conv2d(x.unsqueeze(1), kernel.view(1, 1, 1, -1))
    return F.conv2d(x, kernel.view(1, 1, -1, 1)).squeeze(1)


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float, win_size: int | None = None, sigma: float = 1.5,
         gaussian_weights: bool = True, use_sample_covariance: bool = False, k1: float = 0.01,
         k2: float = 0.03) -> torch.Tensor:
    """Mean structural similarity of each pair of [B, H, W] maps -> [B].

    Wang et al. (2004), Eq. 13: SSIM = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)
    (s_a^2 + s_b^2 + C2)), C1 = (k1 L)^2, C2 = (k2 L)^2 with L = ``data_range``, local statistics
    under a Gaussian window (sigma 1.5, truncated at 3.5 sigma: 11 taps) or a uniform
    ``win_size`` window, averaged over the pixels at least (win_size - 1) / 2 from the border.
    Equal to ``skimage.metrics.structural_similarity(a, b, data_range=L, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)``, including skimage's meaning of ``win_size`` with
    Gaussian weights (it sets only the border that is left out; default: the filter's width).
    Population covariance by default (Wang et al.); Adebayo et al.'s code used skimage's default
    ``use_sample_covariance=True``. Computed in the maps' dtype (at least float32).
    """
    if a.dim() == 2:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    if a.dim() != 3 or a.shape != b.shape:
        raise ValueError(f"ssim expects two [B, H, W] tensors of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if not (isinstance(data_range, (int, float)) and data_range > 0):
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    a, b = a.to(dtype), b.to(dtype)
    if gaussian_weights:
        radius = int(3.5 * sigma + 0.5)  # skimage: truncate = 3.5, radius as scipy.ndimage
        kernel = _gaussian_kernel(sigma, radius, a.device, dtype)
        win_size = 2 * radius + 1 if win_size is None else win_size
    else:
        win_size = 7 if win_size is None else win_size
    if not isinstance(win_size, int) or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd positive int, got {win_size!r}")
    if use_sample_covariance and win_size == 1:
        raise ValueError("use_sample_covariance needs win_size > 1")
    if min(a.shape[-2:]) < win_size:
        raise ValueError(f"maps of size {tuple(a.shape[-2:])} are smaller than the SSIM window ({win_size}); "
                         "pass a smaller win_size (odd) or sigma")
    if not gaussian_weights:
        kernel = torch.full((win_size,), 1.0 / win_size, device=a.device, dtype=dtype)
    n = a.shape[0]
    stats = _filter(torch.cat([a, b, a * a, b * b, a * b]), kernel)
    ua, ub, uaa, ubb, uab = stats.split(n)
    cov_norm = win_size ** 2 / (win_size ** 2 - 1) if use_sample_covariance else 1.0
    va, vb, vab = cov_norm * (uaa - ua * ua), cov_norm * (ubb - ub * ub), cov_norm * (uab - ua * ub)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua * ua + ub * ub + c1) * (va + vb + c2))
    pad = (win_size - 1) // 2
    h, w = s.shape[-2:]
    return s[:, pad:h - pad, pad:w - pad].double().mean((1, 2)).to(dtype)


def ssim_signflip(a: torch.Tensor, b: torch.Tensor, **options) -> torch.Tensor:
    """Sign-flip invariant SSIM, max(SSIM(a, b), SSIM(a, -b)) (Sixt et al. 2020, Sec. 5), -> [B]."""
    return torch.maximum(ssim(a, b, **options), ssim(a, -b, **options))
