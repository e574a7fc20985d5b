"""The sanity checks on your own model and images: what ``python -m saliency_sanity check`` runs.

Loads the model (:mod:`saliency_sanity.models.user`) and the images (:mod:`saliency_sanity.data.folder`), runs
the randomization test and/or class sensitivity (:mod:`saliency_sanity.checks`) on this process's
share of the images (:mod:`saliency_sanity.cli.distributed`) and returns one tidy table with a ``test``
column and the image's file name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from . import distributed
from ..checks.class_pairs import CLASS_PAIRS, class_sensitivity
from ..checks.mprt import randomization_test
from ..checks.tables import canonical_order, pair_name, similarity_means
from ..data.folder import load_image_folder
from ..methods import METHODS
from ..metrics.similarity import SIMILARITY_METRICS
from ..models.user import default_layer, load_model

TESTS = ("randomization", "class_sensitivity")
LAYERED = ("gradcam", "gradcam_pp", "guided_gradcam")  # methods that read one layer


def _split(value: str | Sequence[str], name: str, choices: Sequence[str]) -> list[str]:
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    items = [v for v in items if v]
    unknown = [v for v in items if v not in choices]
    if not items or unknown:
        raise ValueError(f"unknown {name} {unknown or value!r}; choose from {list(choices)}")
    return items


def run_check(model: str, images: str | Path, *, weights: str = "none", methods="gradient,guided_backprop,gradcam",
              tests="randomization,class_sensitivity", metrics="spearman_abs,ssim", mode: str = "cascading",
              device: str = "auto", batch_size: int = 16, limit: int | None = None, seed: int = 0,
              progress: bool = True) -> pd.DataFrame | None:
    """Run the checks; the whole table on rank 0 (and in a single process), None on other ranks.

    Every random draw is keyed by ``seed`` and the image's index in the folder (the model's random
    initialisation under ``weights="none"`` by ``seed`` alone), so the table is the same, row
    order included, for any ``batch_size`` and any number of torchrun ranks.
    """
    methods = _split(methods, "method(s)", [m for m in METHODS if m != "sound_mask"])
    tests = _split(tests, "test(s)", TESTS)
    metrics = _split(metrics, "metric(s)", SIMILARITY_METRICS)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ranks, dev = distributed.init(device)
    try:
        loaded = load_model(model, weights, seed=seed)
        net = loaded.model.to(dev)
        data = load_image_folder(images, limit=limit)
        mine = distributed.shard(len(data.images), ranks, block=batch_size)
        x = data.images[mine.start:mine.stop].to(dev)
        ids = list(mine)
        layer = default_layer(net) if any(m in LAYERED for m in methods) else None
        requests = [(m, m, {"layer": layer} if m in LAYERED else {}) for m in methods]
        frames = []
        if len(x):
            show = progress and ranks.is_main
            if "randomization" in tests:
                frames.append(randomization_test(net, x, requests, mode=mode, metrics=metrics, seed=seed,
                                                 batch_size=batch_size, image_ids=ids, progress=show)
                              .assign(test="randomization"))
            if "class_sensitivity" in tests:
                frames.append(class_sensitivity(net, x, requests, metrics=metrics, seed=seed, batch_size=batch_size,
                                                image_ids=ids, progress=show).assign(test="class_sensitivity"))
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        frame = distributed.gather(frame, ranks)
    finally:
        distributed.finish()
    if frame is None:
        return None
    # one order whatever the batch size and rank count (ranks return their rows one after another)
    frame = canonical_order(frame, test=list(TESTS), label=methods, metric=metrics,
                            pair=[pair_name(a, b) for a, b in CLASS_PAIRS])
    frame["file"] = [data.paths[i] for i in frame["image"]]
    frame["model"] = loaded.name
    return frame


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean similarity per test, method and metric over the defined pairs (randomization: at the
    last stage; class sensitivity: per class pair), with the count of undefined pairs when there are
    any. High values are failures of the check. A table with the null (:mod:`saliency_sanity.metrics.nulls`)
    also gets each metric's mean ``excess`` over the null in a column ``"<metric> excess"`` right after
    the metric's: about 0 where the maps share no more than the input's background."""
    parts = []
    if "randomization" in set(frame.test):
        rand = frame[frame.test == "randomization"]
        last = rand[rand.stage == rand.stage.max()]
        parts.append(last.assign(condition="all layers randomized"))
    if "class_sensitivity" in set(frame.test):
        cls = frame[frame.test == "class_sensitivity"]
        parts.append(cls.assign(condition=cls["pair"].astype(str)))
    both = pd.concat(parts, ignore_index=True)
    index = ["test", "condition", "label"]
    means = similarity_means(both, [*index, "metric"])
    table = means.pivot(index=index, columns="metric", values="mean")
    if "excess" in means:
        excess = means.pivot(index=index, columns="metric", values="excess")
        table = pd.DataFrame({name: column for metric in table.columns
                              for name, column in ((metric, table[metric]), (f"{metric} excess", excess[metric]))})
    undefined = means.groupby(index).undefined.sum()
    if undefined.any():  # pairs with a constant map: no similarity, left out of the means
        table["undefined pairs"] = undefined
    return table
