"""Class sensitivity: the map of the top-1 class against another class's (Khakzar et al. 2020;
the random logit of Sixt et al. 2020), with the support-preserving null beside every similarity.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .._core.draws import image_seeds
from .._core.validation import check_images, check_model
from ..methods.many import attribute_many
from ..methods.requests import method_requests
from ..metrics.similarity import check_metrics
from .requests import DEFAULT_METRICS, _variant
from .tables import _image_ids, _null_index, _pair_rows, _stacked_similarities, canonical_order, pair_name

CLASS_PAIRS = (("top1", "bottom1"), ("top1", "random"))


def class_sensitivity(model: nn.Module, x: torch.Tensor, methods: Iterable, *,
                      pairs: Sequence[tuple] = CLASS_PAIRS, metrics: Sequence[str] = DEFAULT_METRICS,
                      seed: int = 0, batch_size: int = 64, image_ids: Sequence[int] | None = None,
                      progress: bool = True, background: float | None = 0.0) -> pd.DataFrame:
    """Similarity between maps of the same image for two different classes (Khakzar et al. 2020,
    top-1 vs least likely; Sixt et al. 2020: top-1 vs a random class).

    A method that explains the output gives different maps for different classes: high similarity
    is a failure. Targets in ``pairs`` are names (``"top1"``, ``"bottom1"``, ``"random"``) or
    LongTensors with one class per image. The "random" class and SmoothGrad's noise are keyed by
    ``seed`` and the image's index in ``image_ids``, so the table (in :func:`canonical_order`) is
    the same for any ``batch_size``.

    Columns ``value`` (the similarity of the maps for the pair's first and second class), ``null``
    (the same metric after the second class's map is permuted among the input's foreground pixels:
    what maps that share only the input's support score) and ``excess = value - null``.
    ``background`` (default 0.0) defines the input's background for the ``null`` column: the
    compared map's values are permuted among the pixels where some channel of the input differs
    from it (:func:`saliency_sanity.metrics.nulls.foreground_mask`; ``None``: among all pixels), the same
    permutation for an image in every pair (keyed by ``seed`` and the image's index). Maps must
    have the input's height and width.
    """
    check_model(model)
    check_images(x)
    requests = method_requests(methods)
    metrics = check_metrics(metrics)
    if not pairs:
        raise ValueError("pass at least one pair of targets, e.g. [('top1', 'bottom1')]")
    ids = _image_ids(image_ids, x)
    label_to_method = {lab: (name, _variant(name, opts)) for lab, name, opts in requests}
    device = next(model.parameters()).device
    parts = []
    bar = tqdm(total=len(pairs) * len(range(0, len(x), batch_size)), disable=not progress,
               desc="class sensitivity")
    cache: dict = {}
    nulls: dict[int, torch.Tensor] = {}  # the null's permutation of each batch, for every pair
    for a, b in pairs:
        pair = pair_name(a, b)
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device)
            images = ids[start:start + len(xb)]
            if start not in nulls:
                nulls[start] = _null_index(xb, background, seed, images)
            out = []
            for t in (a, b):
                key = (t if isinstance(t, str) else id(t), start)
                if key not in cache:  # top1 maps are shared by every pair
                    tt = t[start:start + batch_size] if isinstance(t, torch.Tensor) else t
                    cache[key] = attribute_many(model, xb, tt, requests, reduce=None,
                                                seed=image_seeds(seed, images))
                out.append(cache[key])
            values, null = _stacked_similarities({lab: out[0][lab] for lab in label_to_method}, out[1], metrics,
                                                 nulls[start], tuple(xb.shape[-2:]))
            target_a, target_b = out[0]["target"].cpu().numpy(), out[1]["target"].cpu().numpy()
            for lab, (name, variant) in label_to_method.items():
                for metric, value in values[lab].items():
                    parts.append(_pair_rows(value, null[lab][metric], method=name, variant=variant,
                                            label=lab, pair=pair, image=images, target_a=target_a,
                                            target_b=target_b, metric=metric))
            bar.update(1)
    bar.close()
    return canonical_order(pd.concat(parts, ignore_index=True), label=list(label_to_method), metric=metrics,
                           pair=[pair_name(a, b) for a, b in pairs])
