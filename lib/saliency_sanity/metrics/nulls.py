"""A support-preserving null for map similarities: one map's values shuffled among the input's foreground pixels.

This project's own construction, in the spirit of Adebayo et al. (2018), App. B (the similarity of
random maps as calibration). Two unrelated maps that are both zero on the same background (Input x
Gradient, Integrated Gradients and LRP are exactly 0 where the input is 0, and about half of a
Fashion-MNIST image is exact zeros) have a high Spearman correlation of their absolute maps, about
0.86 with 50 % shared zeros: the ranks of the shared zeros agree. The null keeps that shared support and destroys
everything else: map b's values are permuted at random among the foreground pixels (where the
input differs from the background) and left in place on the background. ``similarity(a, b) -
similarity(a, permuted b)`` (the checks' ``excess``) is then about 0 for maps that share only their
support. The permutation of an image is drawn from a CPU generator seeded by that image's key
(:func:`null_seeds`), so it is the same on every device, for every batch size and at every stage
or class pair of a check. :func:`similarity_and_null` computes a similarity and its null together;
:func:`null_calibration` measures value, null and excess of unrelated noise maps on given images.
"""
from __future__ import annotations

from typing import Sequence
import warnings

import pandas as pd
import torch

from .._core.draws import keyed_seed
from .hog import hog
from .ranks import pearson, rankdata
from .normalize import _VIEWS
from .similarity import _KIND, _compute, _pick, _prepare, _warn_undefined


def foreground_mask(x: torch.Tensor, background: float | None = 0.0) -> torch.Tensor:
    """The pixels [B, H, W] (bool) of images ``x`` [B, C, H, W] where some channel differs from ``background``.

    ``background=None`` marks every pixel (the plain permutation null). An image without any
    foreground pixel (blank) also gets every pixel: there is nothing to permute among, and an
    identity "null" would equal the similarity itself and hide it; permuting all pixels gives it the
    plain null instead. An image without any background pixel gets every pixel by the definition.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be images [B, C, H, W], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if background is None:
        return torch.ones(x.shape[0], *x.shape[-2:], dtype=torch.bool, device=x.device)
    mask = (x != background).any(1)
    blank = ~mask.flatten(1).any(1)
    return mask | blank.view(-1, 1, 1)


def permutation_index(mask: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
    """Per image a gather index [B, H*W] (int64, on ``mask``'s device) that permutes the foreground.

    Identity on the pixels where ``mask`` [B, H, W] is False; a uniformly random permutation of the
    pixels where it is True among themselves, drawn from a CPU ``torch.Generator`` seeded with that
    image's seed (``seeds``: one int per image, e.g. :func:`null_seeds`). An image's index therefore
    depends only on its mask and its seed, never on the device or on the other images of the batch.
    """
    if mask.dim() != 3 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor [B, H, W], got dtype {mask.dtype} and shape "
                         f"{tuple(mask.shape)}")
    seeds = list(seeds)
    if len(seeds) != len(mask) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"pass one int seed per image: got {len(seeds)} seed(s) for {len(mask)} mask(s)")
    flat = mask.detach().cpu().flatten(1)
    index = torch.arange(flat.shape[1]).repeat(len(flat), 1)
    for row, fg, seed in zip(index, flat, seeds):
        pixels = fg.nonzero().squeeze(1)
        order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))
        row[pixels] = pixels[order]
    return index.to(mask.device)


def permute_maps(maps: torch.Tensor, index: torch.Tensor, *, size: tuple[int, int] | None = None) -> torch.Tensor:
    """``maps`` [B, H, W] or [B, C, H, W] with their pixels moved by ``index`` [B, H*W] (every channel alike).

    Pixel ``p`` of the result holds ``maps``' pixel ``index[b, p]``; computed on the maps' device.
    ``maps`` may also hold k stacked batches of the same images (k * B maps, e.g. several methods'
    maps concatenated): each gets the index of its image. ``size`` (the input's height and width)
    refuses maps of another spatial size, whose pixels the input's mask does not describe.
    """
    if maps.dim() not in (3, 4):
        raise ValueError(f"maps must be [B, H, W] or [B, C, H, W], got shape {tuple(maps.shape)}")
    _check_size(maps, size)
    h, w = maps.shape[-2:]
    if index.dim() != 2 or index.shape[1] != h * w:
        raise ValueError(f"index of shape {tuple(index.shape)} does not fit maps of {h} x {w} pixels")
    if len(maps) % len(index):
        raise ValueError(f"{len(maps)} maps are not a whole number of batches of the index's {len(index)} images")
    copies = len(maps) // len(index)
    flat = maps.reshape(copies, len(index), -1, h * w)
    gather = index.to(maps.device).view(1, len(index), 1, h * w).expand_as(flat)
    return flat.gather(3, gather).view_as(maps)


def _check_size(maps: torch.Tensor, size: tuple[int, int] | None) -> None:
    if size is not None and tuple(maps.shape[-2:]) != tuple(size):
        raise ValueError(f"maps of spatial size {tuple(maps.shape[-2:])} differ from the input's {tuple(size)}: the "
                         "null permutes the input's foreground pixels and needs maps at the input's resolution "
                         "(upsample them)")


def similarity_and_null(a: torch.Tensor, b: torch.Tensor, index: torch.Tensor,
                        metrics: Sequence[str] = ("spearman_abs",), *, size: tuple[int, int] | None = None,
                        normalize: str = "default",
                        **options) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``similarity_table(a, b, metrics)`` and its null ``similarity_table(a, permute_maps(b, index), metrics)``.

    Both ``{metric: Tensor[B]}``, equal to those calls (the null up to the rounding of its sums)
    for a fraction of the work: every normalisation is a per-pixel function of the map and of
    statistics that a permutation leaves alone (channel sums, percentile, min, max), and so are the
    average ranks, so the permuted map's normalised views and ranks are b's permuted; only its HOG
    features are computed anew, and a's views, ranks and HOG features serve both. The metrics'
    formulas are :mod:`saliency_sanity.metrics.similarity`'s. One warning for undefined values, as
    ``similarity_table``; the null's NaNs (a constant map's) are not warned again. ``a`` and ``b``
    may hold k stacked batches of the images of ``index`` (see :func:`permute_maps`); ``size``
    refuses maps of another height and width than the input's.
    """
    a, b, metrics = _prepare(a, b, metrics, normalize, options)
    _check_size(b, size)
    percentile = options.get("percentile", 99.0)
    views: dict[str, tuple] = {}
    ranks: dict[str, tuple] = {}
    values, nulls = {}, {}
    for metric in metrics:
        key, fn = _VIEWS[normalize][_KIND[metric]]
        if key not in views:
            va, vb = fn(a, percentile), fn(b, percentile)
            views[key] = (va, vb, permute_maps(vb, index))
        va, vb, vp = views[key]
        if metric in ("spearman_abs", "spearman"):  # Spearman: Pearson of the average ranks
            if key not in ranks:
                ra, rb = rankdata(va.flatten(1)), rankdata(vb.flatten(1))
                ranks[key] = (ra, rb, permute_maps(rb.view_as(vb), index).flatten(1))
            ra, rb, rp = ranks[key]
            values[metric], nulls[metric] = pearson(ra, rb).to(va.dtype), pearson(ra, rp).to(va.dtype)
        elif metric == "hog":  # Spearman of the HOG features
            kw = _pick(options, metric)
            ra, rb, rp = (rankdata(hog(v, **kw).flatten(1)) for v in (va, vb, vp))
            values[metric], nulls[metric] = pearson(ra, rb).to(va.dtype), pearson(ra, rp).to(va.dtype)
        else:
            values[metric] = _compute(metric, va, vb, normalize, options)
            nulls[metric] = _compute(metric, va, vp, normalize, options)
    _warn_undefined(values, stacklevel=2)
    return values, nulls


def null_seeds(seed: int, image_ids: Sequence[int]) -> list[int]:
    """One seed per image for its null permutation, keyed by ``(seed, "null", global image index)``."""
    return [keyed_seed(seed, "null", int(i)) for i in image_ids]


CALIBRATION_COMPARISONS = ("noise on the foreground", "noise everywhere")


def null_calibration(images: torch.Tensor, metrics: Sequence[str] = ("spearman_abs",), seed: int = 0, *,
                     background: float | None = 0.0, batch_size: int = 256) -> pd.DataFrame:
    """What two unrelated maps score on ``images`` [N, C, H, W]: value, null and excess, as the checks report them.

    Two comparisons of independent uniform noise maps, per image: ``"noise on the foreground"``,
    zero on the image's background (as Input x Gradient is), where the value is high and the excess
    must be about 0; and ``"noise everywhere"``, without any background, where value and null must be
    about 0. Noise is drawn per image from CPU generators keyed by ``(seed, "null calibration",
    image index)``, the null with :func:`null_seeds` as in the checks. Returns a tidy frame
    ``comparison, metric, value, null, excess, n``: means over the images where the value is defined.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not len(images):
        raise ValueError("images must be a non-empty tensor [N, C, H, W]")
    size = tuple(images.shape[-2:])
    parts: dict[tuple, list] = {}
    for start in range(0, len(images), batch_size):
        xb = images[start:start + batch_size].cpu()
        ids = range(start, start + len(xb))
        mask = foreground_mask(xb, background)
        index = permutation_index(mask, null_seeds(seed, ids))
        gens = [torch.Generator().manual_seed(keyed_seed(seed, "null calibration", i)) for i in ids]
        noise = torch.stack([torch.rand(2, *size, generator=g, dtype=torch.float64) for g in gens])
        a, b = noise[:, 0], noise[:, 1]
        for comparison, (ma, mb) in zip(CALIBRATION_COMPARISONS, ((a * mask, b * mask), (a, b))):
            with warnings.catch_warnings():  # noise maps are not constant; a pair that were is left out below
                warnings.filterwarnings("ignore", message="similarity undefined", category=RuntimeWarning)
                value, null = similarity_and_null(ma, mb, index, metrics, size=size)
            for metric in value:
                parts.setdefault((comparison, metric), []).append(torch.stack([value[metric], null[metric]], 1))
    rows = []
    for (comparison, metric), pairs in parts.items():
        pairs = torch.cat(pairs).double()
        pairs = pairs[~torch.isnan(pairs).any(1)]
        value, null = pairs.mean(0).tolist() if len(pairs) else (float("nan"), float("nan"))
        rows.append({"comparison": comparison, "metric": metric, "value": value, "null": null,
                     "excess": value - null, "n": len(pairs)})
    return pd.DataFrame(rows, columns=["comparison", "metric", "value", "null", "excess", "n"])
