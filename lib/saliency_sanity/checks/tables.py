"""The tidy tables of the checks: one row order for any batch size, result rows kept on the device,
and the support-preserving null computed beside every similarity.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from ..metrics.nulls import foreground_mask, null_seeds, permutation_index, similarity_and_null

ROW_ORDER = ("test", "stage", "pair", "label", "metric", "image")


def canonical_order(frame: pd.DataFrame, **orders: Sequence) -> pd.DataFrame:
    """The rows of a check's table in one canonical order, whatever the batch size or rank count:
    by test, stage, class pair, method label, metric and image, where ``orders`` gives the order of
    a categorical column (e.g. ``label=[...]`` as requested) and other columns sort by value."""
    keys, sorter = [], {}
    for column in ROW_ORDER:
        if column not in frame:
            continue
        keys.append(column)
        if column in orders:
            rank = {value: i for i, value in enumerate(orders[column])}
            sorter[column] = lambda values, rank=rank: values.map(rank)
    if not keys:
        return frame.reset_index(drop=True)
    return frame.sort_values(keys, key=lambda col: sorter.get(col.name, lambda v: v)(col), kind="stable",
                             na_position="last").reset_index(drop=True)


def _image_ids(image_ids: Sequence[int] | None, x: torch.Tensor) -> list[int]:
    """The global index of each image (0..N-1 by default): it keys the image's random draws."""
    ids = list(range(len(x))) if image_ids is None else [int(i) for i in image_ids]
    if len(ids) != len(x):
        raise ValueError(f"image_ids has {len(ids)} entries for {len(x)} images; give one index per image")
    if len(set(ids)) != len(ids):
        raise ValueError("image_ids must be unique: each image's random draws are keyed by its index")
    return ids


class _Rows:
    """Result rows kept on the model's device and turned into one DataFrame at the end.

    One host transfer for the whole run instead of one per stage, label and metric: on a GPU the
    per-stage syncs and small DataFrames otherwise cost more than the passes themselves.
    """

    def __init__(self, label_to_method: dict):
        self.label_to_method = label_to_method
        self.keys: list[tuple] = []
        self.values: list[torch.Tensor] = []
        self.nulls: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def add(self, sims: dict, nulls: dict, *, label: str, stage: int, layer: str, images: list,
            targets: torch.Tensor) -> None:
        for metric, values in sims.items():
            self.keys.append((label, stage, layer, metric, images))
            self.values.append(values.detach().float().flatten())
            self.nulls.append(nulls[metric].detach().float().flatten())
            self.targets.append(targets.detach().flatten())

    def frame(self) -> pd.DataFrame:
        values, nulls = torch.stack([torch.cat(self.values), torch.cat(self.nulls)]).cpu().double().numpy()
        targets = torch.cat(self.targets).cpu().numpy()
        columns: dict[str, list] = {k: [] for k in ("method", "variant", "label", "stage", "layer", "image", "metric")}
        for label, stage, layer, metric, images in self.keys:
            name, variant = self.label_to_method[label]
            n = len(images)
            for key, value in (("method", name), ("variant", variant), ("label", label), ("stage", stage),
                               ("layer", layer), ("metric", metric)):
                columns[key].extend([value] * n)
            columns["image"].extend(images)
        frame = pd.DataFrame(columns)
        frame.insert(6, "target", targets)
        frame["value"] = values
        frame["null"] = nulls
        frame["excess"] = frame["value"] - frame["null"]
        return frame


def _null_index(xb: torch.Tensor, background: float | None, seed: int, images: Sequence[int]) -> torch.Tensor:
    """The null's permutation of the foreground pixels of the images ``xb`` (global indices ``images``):
    computed once per batch and shared by every stage, class pair and method."""
    return permutation_index(foreground_mask(xb, background), null_seeds(seed, images))


def _stacked_similarities(reference: dict, maps: dict, metrics: tuple, index: torch.Tensor,
                          size: tuple, normalize: str = "default") -> tuple[dict[str, dict], dict[str, dict]]:
    """``similarity_table`` of every label's maps against its reference, and of the same maps with
    their pixels permuted by ``index`` (the null: :func:`saliency_sanity.metrics.nulls.similarity_and_null`),
    with the labels whose maps have one shape stacked into one batch: every metric is per image, so
    the values are those of one call per label, for a fraction of the kernel launches. Returns
    ``(values, nulls)``, each ``{label: {metric: Tensor[B]}}``. ``size`` is the input's height and
    width: maps of another size are refused; ``normalize`` is :func:`similarity`'s."""
    groups: dict[tuple, list[str]] = {}
    for lab in reference:
        groups.setdefault(tuple(maps[lab].shape), []).append(lab)
    values, nulls = {}, {}
    for labs in groups.values():
        sims, null = similarity_and_null(torch.cat([reference[lab] for lab in labs]),
                                         torch.cat([maps[lab] for lab in labs]), index, metrics, size=size,
                                         normalize=normalize)
        n = len(maps[labs[0]])
        for i, lab in enumerate(labs):
            values[lab] = {metric: v[i * n:(i + 1) * n] for metric, v in sims.items()}
            nulls[lab] = {metric: v[i * n:(i + 1) * n] for metric, v in null.items()}
    return values, nulls


def _pair_rows(values: torch.Tensor, null: torch.Tensor, **columns) -> pd.DataFrame:
    """The rows of one label, metric and batch of a pairwise check: ``columns``, then ``value``,
    ``null`` and ``excess``."""
    value, null = torch.stack([values.detach().double(), null.detach().double()]).cpu().numpy()
    return pd.DataFrame({**columns, "value": value, "null": null, "excess": value - null})


def _target_name(t) -> str:
    return t if isinstance(t, str) else "given"


def pair_name(a, b) -> str:
    """The ``pair`` column's value for the targets ``a`` and ``b``, e.g. ``"top1 vs bottom1"``."""
    return f"{_target_name(a)} vs {_target_name(b)}"


def similarity_means(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Mean and std of ``value`` per group over the pairs where the similarity is defined, with the
    counts ``defined`` and ``undefined`` (NaN: a pair with a constant map, see :func:`similarity`),
    and, for a check's table with a null, the mean ``null`` and mean ``excess`` over the pairs where
    they are defined."""
    groups = frame.groupby(list(by), sort=False)
    out = groups.value.agg(mean="mean", std="std", defined="count", pairs="size")
    out["undefined"] = out.pop("pairs") - out["defined"]
    for column in ("null", "excess"):
        if column in frame:
            out[column] = groups[column].mean()
    return out.reset_index()
