"""The soundness chapter's loops and summaries (``notebooks/05_soundness.ipynb``), Gupta et al. (2022).

Every method's completeness and soundness per image and as a ranked table, the sound mask against
the median method of the registry, the effect of the fill the mask is trained with (paired over
images), the convergence of the mask's optimisation and the TV x upsampling ablation. Functions that
feed the book's prose return ``{glue key: value}``, the chapter's keys (made by
:func:`~saliency_sanity.book.glue.glue_key` where they hold a method's name) with plain ``int``,
``float`` or ``str`` values, the words chosen to read in a sentence.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ...methods.masks import sound_masks
from ...metrics.soundness import (completeness_soundness, deletion_curve, insertion_curve,
                                 summarize_completeness_soundness)
from ...metrics.statistics import bootstrap_statistic
from ..glue import glue_key

SCORES = ("completeness", "soundness")
# (TV penalty, upsampling) of the ablation, the method as defined first
ABLATION_SETTINGS = ((True, 4), (True, 1), (False, 4), (False, 1))


def scores_per_image(model: torch.nn.Module, x: torch.Tensor, maps: Mapping[str, torch.Tensor], *, predicted,
                     steps: int, fill="mean", mean=None) -> pd.DataFrame:
    """Completeness and soundness of every method's maps, one row per (method, image).
    Gupta et al. (2022), Def. 4.1-4.2: ``maps`` maps a method's name to its maps made for every label,
    [B, L, H, W]; each goes through :func:`~saliency_sanity.metrics.soundness.completeness_soundness`
    (``predicted``, ``steps``, ``fill``, ``mean``). Columns: method, image, completeness, soundness.
    """
    frames = []
    for name, m in maps.items():
        frame = completeness_soundness(model, x, m, predicted=predicted, steps=steps, fill=fill, mean=mean)
        frame["method"] = name
        frames.append(frame)
    return summarize_completeness_soundness(pd.concat(frames, ignore_index=True))


def method_table(per_image: pd.DataFrame, seconds: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Each method's mean completeness and soundness, its seconds per map and both ranks (1 = highest).
    Gupta et al. (2022) compare methods by these two means. Indexed by method; ranks use the
    lowest rank on ties (``method="min"``); sorted by soundness rank, then completeness rank.
    ``seconds`` ({method: seconds per map}; NaN where absent) fills ``seconds_per_map``.
    """
    table = per_image.groupby("method")[list(SCORES)].mean()
    table["seconds_per_map"] = pd.Series(dict(seconds or {}), dtype=float)
    table["rank_completeness"] = table.completeness.rank(ascending=False, method="min").astype(int)
    table["rank_soundness"] = table.soundness.rank(ascending=False, method="min").astype(int)
    return table.sort_values(["rank_soundness", "rank_completeness"])


def method_values(table: pd.DataFrame) -> dict:
    """Each method's mean completeness and soundness under the chapter's keys.
    Gupta et al. (2022). ``table``: :func:`method_table`; keys ``cs_<method>_completeness`` and
    ``cs_<method>_soundness`` (:func:`~saliency_sanity.book.glue.glue_key`), in the table's order.
    """
    values = {}
    for name, row in table.iterrows():
        values[glue_key("cs", name, "completeness")] = float(row.completeness)
        values[glue_key("cs", name, "soundness")] = float(row.soundness)
    return values


def versus(value: float, reference: float) -> str:
    """``value`` against ``reference`` in words: "higher than", "equal to" or "lower than".
    Used to set the sound mask beside the median method (Gupta et al. 2022)."""
    return "higher than" if value > reference else "equal to" if value == reference else "lower than"


def mask_against_registry(table: pd.DataFrame, registry: Sequence[str], mask: str = "sound_mask") -> dict:
    """The mask's ranks among the registry's methods and its scores against their medians, in words.
    Gupta et al. (2022) find their mask complete and sound; read here as: at least as complete and
    at least as sound as the median method of ``registry``. ``table``: :func:`method_table` (methods
    not in ``registry`` other than ``mask``, e.g. controls, are left out). Returns, each key
    prefixed ``mask_``: ``median_soundness``, ``median_completeness``, ``soundness_rank``,
    ``completeness_rank`` (among the registry and the mask, 1 = highest), ``n_ranked``,
    ``soundness_vs_median`` and ``completeness_vs_median`` (:func:`versus`), ``paper_like`` ("is" /
    "is not") and ``unlike_paper``: whether an earlier finding, "complete but not sound", "still
    holds", "no longer holds" (the mask is both) or "holds only in part".
    """
    others = [name for name in table.index if name in registry and name != mask]
    ranked = table.loc[others + [mask]]
    row = table.loc[mask]
    medians = {score: float(table.loc[others, score].median()) for score in SCORES}
    typical = {score: bool(row[score] >= medians[score]) for score in SCORES}
    paper_like = typical["soundness"] and typical["completeness"]
    return {
        "mask_median_soundness": medians["soundness"],
        "mask_median_completeness": medians["completeness"],
        "mask_soundness_vs_median": versus(row.soundness, medians["soundness"]),
        "mask_completeness_vs_median": versus(row.completeness, medians["completeness"]),
        "mask_paper_like": "is" if paper_like else "is not",
        "mask_soundness_rank": int(ranked.soundness.rank(ascending=False, method="min")[mask]),
        "mask_completeness_rank": int(ranked.completeness.rank(ascending=False, method="min")[mask]),
        "mask_n_ranked": len(ranked),
        "mask_unlike_paper": ("still holds" if typical["completeness"] and not typical["soundness"]
                              else "no longer holds" if paper_like else "holds only in part"),
    }


def fill_effect(per_image: pd.DataFrame, method: str, other: str, *, labels: tuple[str, str] | None = None,
                n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """How much ``method``'s completeness and soundness exceed ``other``'s on the same images, with 95 % intervals.
    Gupta et al. (2022) train the mask with random training images as fill; ``other`` is the same
    mask trained with another fill. Per score: the two methods' means over their images (columns
    named by ``labels``, default the method names), the mean paired difference over the images
    both score and its percentile interval over resampled images
    (:func:`~saliency_sanity.metrics.statistics.bootstrap_statistic` of the mean difference),
    and ``effect``: "raises" (interval above 0), "lowers" (below) or "does not measurably change".
    """
    labels = labels or (method, other)
    wide = per_image.pivot(index="image", columns="method", values=list(SCORES))
    means = per_image.groupby("method")[list(SCORES)].mean()
    rows = []
    for score in SCORES:
        diff = (wide[score][method] - wide[score][other]).dropna().to_numpy()
        mean, low, high = bootstrap_statistic(lambda i: diff[i].mean(), len(diff), n_boot=n_boot, seed=seed)
        rows.append({"metric": score, labels[0]: float(means.loc[method, score]),
                     labels[1]: float(means.loc[other, score]), "difference": mean, "95% CI low": low,
                     "95% CI high": high,
                     "effect": "raises" if low > 0 else "lowers" if high < 0 else "does not measurably change"})
    return pd.DataFrame(rows)


def fill_effect_values(effects: pd.DataFrame) -> dict:
    """The fill's effect on each score under the chapter's keys.
    Gupta et al. (2022). ``effects``: :func:`fill_effect`; per score s, ``mask_fill_<s>_diff``,
    ``_diff_lo``, ``_diff_hi`` (the mean paired difference and its interval) and ``_effect`` (in words).
    """
    values = {}
    for row in effects.to_dict("records"):
        key = f"mask_fill_{row['metric']}"
        values[f"{key}_diff"] = float(row["difference"])
        values[f"{key}_diff_lo"] = float(row["95% CI low"])
        values[f"{key}_diff_hi"] = float(row["95% CI high"])
        values[f"{key}_effect"] = row["effect"]
    return values


def loss_convergence(losses, *, max_kernel: int = 25, max_window: int = 100, tolerance: float = 0.01) -> dict:
    """Whether the mask's optimisation has converged: the relative change of its mean loss at the end.
    Gupta et al. (2022) optimise each mask with Adam for a fixed number of steps. ``losses``
    [steps, ...] (e.g. ``sound_masks(..., return_losses=True)``'s [steps, B, L]): the mean over
    masks per step, smoothed by a running mean of ``min(max_kernel, steps // 4)`` steps (at least
    1; the random fills make the loss noisy); then |s[-1] - s[-1 - w]| / |s[-1 - w]| over the last
    ``w = min(max_window, len(s) - 1)`` smoothed steps (NaN when w < 1). Returns ``mask_loss_window``
    (w), ``mask_loss_last_change``, ``mask_loss_tolerance`` and ``mask_loss_converged`` ("has" when
    the change is below ``tolerance``, else "has not").
    """
    loss = torch.as_tensor(losses).double().cpu()
    mean_loss = loss.flatten(1).mean(1).numpy()
    kernel = max(1, min(max_kernel, len(mean_loss) // 4))
    smooth = np.convolve(mean_loss, np.ones(kernel) / kernel, mode="valid")
    window = min(max_window, len(smooth) - 1)
    last_change = (float(abs(smooth[-1] - smooth[-1 - window]) / abs(smooth[-1 - window])) if window >= 1
                   else math.nan)
    return {"mask_loss_window": window, "mask_loss_last_change": last_change, "mask_loss_tolerance": tolerance,
            "mask_loss_converged": "has" if last_change < tolerance else "has not"}


def insertion_deletion_table(model: torch.nn.Module, x: torch.Tensor, maps: Mapping[str, torch.Tensor],
                             predicted: torch.Tensor, *, steps: int, fill="mean", mean=None) -> pd.DataFrame:
    """The mean insertion and deletion curve of each method's map made for the predicted label.
    Gupta et al. (2022) evaluate maps on insertion curves (after Petsiuk et al. 2018). ``maps``:
    {method: [B, L, H, W]} with label = class index; one row per (method, curve, fraction of pixels
    kept or removed): the predicted label's probability averaged over the images (``fill`` and
    ``mean`` as for :func:`~saliency_sanity.metrics.soundness.insertion_curve`).
    """
    rows = []
    fraction = torch.linspace(0, 1, steps + 1)
    for name, m in maps.items():
        own = m[torch.arange(len(x)), predicted]
        for curve, fn in (("insertion", insertion_curve), ("deletion", deletion_curve)):
            values = fn(model, x, own, predicted, steps=steps, fill=fill, mean=mean).mean(0).cpu()
            rows.append(pd.DataFrame({"method": name, "curve": curve, "fraction": fraction.numpy(),
                                      "probability": values.double().numpy()}))
    return pd.concat(rows, ignore_index=True)


def tv_upsampling_ablation(model: torch.nn.Module, x: torch.Tensor, masks: torch.Tensor, *, predicted, labels,
                           steps: int, fill="mean", mean=None, mask_options: Mapping | None = None) -> pd.DataFrame:
    """Completeness and soundness of the sound mask with and without TV penalty and upsampling, per image.
    Gupta et al. (2022) justify both as what keeps the mask from "proving" any label. ``masks``
    [B, L, H, W]: the mask as defined (TV, upsampling 4), reused; the other settings of
    :data:`ABLATION_SETTINGS` are optimised by :func:`~saliency_sanity.methods.masks.sound_masks` for
    ``labels`` (a LongTensor [L], the same for every image) with ``mask_options`` (its steps, fill,
    ...). All are scored by :func:`~saliency_sanity.metrics.soundness.completeness_soundness`
    (``predicted``, ``steps``, ``fill``, ``mean``). Columns: image, completeness, soundness, tv, upsampling.
    """
    options = {"progress": False, **(mask_options or {})}
    frames = []
    for tv, upsample in ABLATION_SETTINGS:
        if (tv, upsample) == ABLATION_SETTINGS[0]:
            m = masks
        else:
            m = sound_masks(model, x, labels.repeat(len(x), 1), tv=tv, upsample=upsample, **options)
        scores = summarize_completeness_soundness(completeness_soundness(model, x, m, predicted=predicted,
                                                                         steps=steps, fill=fill, mean=mean))
        frames.append(scores.assign(tv=tv, upsampling=upsample))
    return pd.concat(frames, ignore_index=True)


def ablation_summary(per_image: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The ablation's mean scores per setting, and whether soundness falls as TV and upsampling go.
    Gupta et al. (2022) expect: with both >= without upsampling >= with neither. ``per_image``:
    :func:`tv_upsampling_ablation`. Returns the table (columns "TV penalty", upsampling,
    completeness, soundness; settings in their order there) and the values, each key prefixed
    ``ablation_``: ``n_images``, ``direction`` ("shows" / "does not show" that order) and
    ``tv{0|1}_up{u}_{soundness|completeness}``.
    """
    table = (per_image.groupby(["tv", "upsampling"], sort=False)[list(SCORES)].mean()
             .reset_index().rename(columns={"tv": "TV penalty"}))
    soundness = table.set_index(["TV penalty", "upsampling"]).soundness
    ordered = soundness[(True, 4)] >= soundness[(True, 1)] >= soundness[(False, 1)]
    values = {"ablation_n_images": int(per_image.image.nunique()),
              "ablation_direction": "shows" if ordered else "does not show"}
    for row in table.itertuples():
        values[f"ablation_tv{int(row[1])}_up{row.upsampling}_soundness"] = float(row.soundness)
        values[f"ablation_tv{int(row[1])}_up{row.upsampling}_completeness"] = float(row.completeness)
    return table, values


__all__ = ["ABLATION_SETTINGS", "SCORES", "ablation_summary", "fill_effect", "fill_effect_values",
           "insertion_deletion_table", "loss_convergence", "mask_against_registry", "method_table", "method_values",
           "scores_per_image", "tv_upsampling_ablation", "versus"]
