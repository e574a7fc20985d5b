"""Histograms of oriented gradients of saliency maps, batched in torch, equal to skimage's ``hog``.

Dalal & Triggs (2005), as implemented by ``skimage.feature.hog`` (which Adebayo et al. 2018 use to
compare maps, Sec. 3 and their public code): central differences without division (border rows
and columns 0), unsigned orientations in [0, 180) put in ``orientations`` hard bins, each cell
holding the mean magnitude per bin, overlapping blocks of cells normalised (L2-Hys by default)
and concatenated in the order (block row, block column, cell row, cell column, orientation).
"""
from __future__ import annotations

from numbers import Integral

import torch

BLOCK_NORMS = ("L1", "L1-sqrt", "L2", "L2-Hys")


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, Integral) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, Integral) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def default_pixels_per_cell(shape: tuple[int, int]) -> tuple[int, int]:
    """Square cells with 14 of them along the shorter side, at least 2 pixels wide.

    Adebayo et al. use 16x16-pixel cells on 224x224 maps (14 cells a side); keeping 14 cells a
    side gives 2x2 cells on 28x28 maps and 4x4 cells on 64x64 maps.
    """
    side = max(2, min(shape) // 14)
    return side, side


def _normalize_blocks(blocks: torch.Tensor, method: str, eps: float) -> torch.Tensor:
    if method == "L1":
        return blocks / (blocks.abs().sum(-1, keepdim=True) + eps)
    if method == "L1-sqrt":
        return torch.sqrt(blocks / (blocks.abs().sum(-1, keepdim=True) + eps))
    out = blocks / torch.sqrt((blocks ** 2).sum(-1, keepdim=True) + eps ** 2)
    if method == "L2":
        return out
    # L2-Hys: clip at 0.2 (Lowe 2004) and renormalise
    out = out.clamp(max=0.2)
    return out / torch.sqrt((out ** 2).sum(-1, keepdim=True) + eps ** 2)


def hog(maps: torch.Tensor, *, orientations: int = 9, pixels_per_cell=None, cells_per_block=3,
        block_norm: str = "L2-Hys", eps: float = 1e-5) -> torch.Tensor:
    """HOG feature vectors of [B, H, W] maps (or one [H, W] map) -> [B, F], equal to skimage.

    Dalal & Triggs (2005) as in ``skimage.feature.hog(map, orientations, pixels_per_cell,
    cells_per_block, block_norm)``. ``pixels_per_cell`` defaults to
    :func:`default_pixels_per_cell` (skimage's own default is 8x8). Pixels beyond the last whole
    cell are ignored, like skimage. The gradient is taken in the maps' dtype and everything after
    it in float64, as skimage does; skimage sums each cell in float32, so the two agree to about
    1e-7. Returns the maps' floating dtype.
    """
    if maps.dim() == 2:
        maps = maps.unsqueeze(0)
    if maps.dim() != 3:
        raise ValueError(f"hog expects maps of shape [B, H, W], got {tuple(maps.shape)}")
    if not isinstance(orientations, Integral) or orientations < 1:
        raise ValueError(f"orientations must be a positive int, got {orientations!r}")
    if block_norm not in BLOCK_NORMS:
        raise ValueError(f"unknown block_norm {block_norm!r}; choose one of {list(BLOCK_NORMS)}")
    out_dtype = maps.dtype if maps.is_floating_point() else torch.float64
    maps = maps.to(out_dtype)
    bsz, h, w = maps.shape
    pr, pc = _pair(pixels_per_cell, "pixels_per_cell") if pixels_per_cell is not None \
        else default_pixels_per_cell((h, w))
    br, bc = _pair(cells_per_block, "cells_per_block")
    nr, nc = h // pr, w // pc
    if nr < br or nc < bc:
        raise ValueError(f"maps of size {(h, w)} are too small for HOG with {pr}x{pc}-pixel cells and "
                         f"{br}x{bc}-cell blocks (need at least {br * pr}x{bc * pc}); lower pixels_per_cell "
                         "or cells_per_block")

    g_row = torch.zeros_like(maps)
    g_col = torch.zeros_like(maps)
    g_row[:, 1:-1, :] = maps[:, 2:, :] - maps[:, :-2, :]
    g_col[:, :, 1:-1] = maps[:, :, 2:] - maps[:, :, :-2]
    g_row, g_col = g_row.double(), g_col.double()
    magnitude = torch.hypot(g_col, g_row)[:, :nr * pr, :nc * pc]
    orientation = (torch.rad2deg(torch.atan2(g_row, g_col)) % 180)[:, :nr * pr, :nc * pc]

    # Bin i holds [i * 180/n, (i + 1) * 180/n), edges computed as skimage does; an angle that
    # rounds up to 180 falls in no bin there, so it is dropped here too.
    step = 180.0 / orientations
    edges = step * torch.arange(1, orientations + 1, device=maps.device, dtype=torch.float64)
    bins = (orientation.unsqueeze(-1) >= edges).sum(-1)
    per_bin = [(magnitude * (bins == i)).view(bsz, nr, pr, nc, pc).sum((2, 4)) for i in range(orientations)]
    cells = torch.stack(per_bin, -1) / (pr * pc)  # [B, nr, nc, orientations]

    blocks = cells.unfold(1, br, 1).unfold(2, bc, 1)  # [B, nbr, nbc, orientations, br, bc]
    blocks = blocks.permute(0, 1, 2, 4, 5, 3).flatten(3)
    return _normalize_blocks(blocks, block_norm, eps).flatten(1).to(out_dtype)
