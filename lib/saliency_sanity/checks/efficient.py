"""Efficient MPRT (eMPRT): the relative rise in map complexity from the trained to the fully
randomized model.

Hedström, Weber, Lapuschkin and Höhne (2023), "Sanity Checks Revisited: An Exploration to Repair
the Model Parameter Randomisation Test", replace MPRT's layer-by-layer similarity between maps of
the trained and the progressively randomized model by one number per image and method: how much
more complex (by :func:`saliency_sanity.metrics.complexity.discrete_entropy`) the map becomes when every
layer is randomized. A map that explains the model should become noisier, i.e. more complex, once
the model computes nothing learned: higher is better. Equal to Quantus's ``EfficientMPRT`` where
the definitions meet (see :func:`efficient_mprt`).
"""
from __future__ import annotations

import numbers
from typing import Iterable, Sequence
import warnings

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .._core.draws import image_seeds
from .._core.guard import preserved
from .._core.validation import check_choice, check_images, check_model
from ..methods.many import attribute_many
from ..methods.requests import method_requests
from ..metrics.complexity import _check_n_bins, discrete_entropy
from .randomize import randomized
from .requests import EXPLAIN_CHOICES, _variant
from .tables import _image_ids, canonical_order

__all__ = ["efficient_mprt", "COLUMNS"]

COLUMNS = ["method", "variant", "label", "image", "target", "target_randomized", "complexity_original",
           "complexity_randomized", "value", "test"]
# randomized() options a caller may set; mode is always "cascading" (every layer, the last stage)
# and the forward order is traced on the first image
RANDOMIZATION_OPTIONS = ("order", "unit", "init", "std", "bias", "batchnorm", "blocks")


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return int(batch_size)


def _check_randomization_options(options: dict) -> None:
    if "mode" in options:
        raise TypeError("efficient_mprt always randomizes every layer (cascading, last stage); do not pass mode=")
    if "example_input" in options:
        raise TypeError("efficient_mprt traces the forward order on x[:1]; do not pass example_input=")
    unknown = sorted(set(options) - set(RANDOMIZATION_OPTIONS))
    if unknown:
        raise TypeError(f"efficient_mprt got unexpected option(s) {unknown}; randomization options are "
                        f"{list(RANDOMIZATION_OPTIONS)} (see saliency_sanity.checks.randomize.randomized)")


def efficient_mprt(model: nn.Module, x: torch.Tensor, methods: Iterable, *, explain: str = "original_top1",
                   labels: torch.Tensor | None = None, n_bins: int = 100, absolute: bool = False, seed: int = 0,
                   batch_size: int = 64, image_ids: Sequence[int] | None = None, progress: bool = True,
                   **randomization_options) -> pd.DataFrame:
    """Relative rise in each map's discrete entropy from the trained to the fully randomized model.

    Hedström et al. (2023), eMPRT; equal to Quantus's ``EfficientMPRT`` (``skip_layers=True``,
    ``complexity_func=discrete_entropy``, ``complexity_func_kwargs={"n_bins": n_bins}``) given the
    same fully randomized weights. Per image and method: ``value = (H_randomized - H_original) /
    H_original``, with ``H`` = :func:`saliency_sanity.metrics.complexity.discrete_entropy` of the raw map
    (all its values, channels included: ``reduce=None``) in ``n_bins`` bins. Higher is better: the
    map of a model that has learned nothing should be more complex than the trained model's.

    The maps come from :func:`saliency_sanity.attribute_many` (methods sharing a pass share it) on
    the trained model and on the model with every layer randomized: the last stage of
    ``randomized(model, mode="cascading", seed=seed, **randomization_options)``, so ``order``,
    ``unit``, ``init`` (default truncated normal, std 0.01, Adebayo et al.), ``std``, ``bias``,
    ``batchnorm`` and ``blocks`` are those of :func:`saliency_sanity.checks.randomize.randomized`.
    Quantus re-draws each layer with its own ``reset_parameters()`` (``init="default"`` here, with
    other random numbers) and also resets BatchNorm statistics (``batchnorm="reset"`` here); the
    score is defined for any weights, and the test against Quantus gives both the same weights.

    ``explain`` picks the explained class: ``"original_top1"`` (default: the trained model's top-1
    for both models; Quantus explains one fixed ``y_batch`` for both, and this is the choice that
    matches it when ``y_batch`` is the prediction), ``"label"`` (the true ``labels``, as Quantus with
    ``y_batch`` = labels) or ``"current_top1"`` (each model's own argmax).

    ``absolute`` (default False, as Quantus's ``abs=False``) takes the entropy of ``|map|`` instead
    (Quantus's ``abs=True``). Quantus's ``normalise`` (default False) is not offered: the entropy of a
    histogram over [min, max] does not change under positive scaling.

    Deviation from Quantus: where ``H_original == 0`` (a constant map) the relative rise is
    undefined; Quantus divides by zero (``inf``, or NaN for 0/0), here ``value`` is NaN and a
    RuntimeWarning names the method and the number of such images.

    Random draws (SmoothGrad's noise, a random class, each layer's weights) are keyed by ``seed``
    and the image's index in ``image_ids`` (default 0..N-1) or the layer's name, never by the batch,
    so the table is the same for any ``batch_size`` and comes in one canonical order (by method
    label as requested, then image). The model is restored afterwards (weights, train/eval modes,
    ``requires_grad``, hooks), also when a method raises.

    Columns: ``method``, ``variant``, ``label``, ``image``, ``target`` (the class explained on the
    trained model), ``target_randomized`` (on the randomized model; differs only for
    ``"current_top1"``), ``complexity_original``, ``complexity_randomized``, ``value`` and ``test``
    (``"efficient_mprt"``).
    """
    check_model(model)
    check_images(x)
    requests = method_requests(methods)
    check_choice(explain, EXPLAIN_CHOICES, "explain")
    if explain == "label" and (labels is None or len(labels) != len(x)):
        raise ValueError("explain='label' needs labels: a LongTensor with one class per image")
    n_bins = _check_n_bins(n_bins)
    if not isinstance(absolute, bool):
        raise TypeError(f"absolute must be True or False, got {absolute!r}")
    batch_size = _check_batch_size(batch_size)
    _check_randomization_options(randomization_options)
    ids = _image_ids(image_ids, x)
    first = next(model.parameters(), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no parameters to randomize")
    device = first.device
    label_to_method = {lab: (name, _variant(name, opts)) for lab, name, opts in requests}
    starts = range(0, len(x), batch_size)
    entropies: dict[str, dict[str, list[torch.Tensor]]] = {"original": {}, "randomized": {}}
    targets: dict[str, list[torch.Tensor]] = {"original": [], "randomized": []}
    with preserved(model):
        with torch.no_grad():
            fixed = (torch.cat([model(x[i:i + batch_size].to(device).clone()).argmax(1).cpu() for i in starts])
                     if explain == "original_top1" else labels)
        with randomized(model, mode="cascading", seed=seed, example_input=x[:1].to(device),
                        **randomization_options) as stages:
            last = len(stages) - 1
            bar = tqdm(total=2 * len(starts), disable=not progress, desc="efficient MPRT")
            try:
                for stage in stages:
                    if stage.index not in (0, last):
                        continue  # the intermediate stages only carry the weights to the last one
                    state = "original" if stage.index == 0 else "randomized"
                    for start in starts:
                        xb = x[start:start + batch_size].to(device)
                        target = "top1" if explain == "current_top1" else fixed[start:start + batch_size]
                        maps = attribute_many(model, xb, target, requests, reduce=None,
                                              seed=image_seeds(seed, ids[start:start + len(xb)]))
                        for lab in label_to_method:
                            m = maps[lab].detach()
                            entropies[state].setdefault(lab, []).append(
                                discrete_entropy(m.abs() if absolute else m, n_bins))
                        targets[state].append(maps["target"].detach().flatten())
                        bar.update(1)
            finally:
                bar.close()
    return _frame(entropies, targets, label_to_method, ids)


def _frame(entropies: dict, targets: dict, label_to_method: dict, ids: list[int]) -> pd.DataFrame:
    """The tidy table from the per-batch entropies and targets (one host transfer per column)."""
    target = torch.cat(targets["original"]).cpu().numpy()
    target_randomized = torch.cat(targets["randomized"]).cpu().numpy()
    parts = []
    for lab, (name, variant) in label_to_method.items():
        h0 = torch.cat(entropies["original"][lab]).double()
        h1 = torch.cat(entropies["randomized"][lab]).double()
        zero = h0 == 0
        value = torch.where(zero, torch.full_like(h0, float("nan")), (h1 - h0) / torch.where(zero, 1.0, h0))
        undefined = int(zero.sum())
        if undefined:
            warnings.warn(f"efficient_mprt: {lab!r}: {undefined} of {len(h0)} image(s) have a constant map "
                          "(entropy 0) on the trained model; their relative rise in complexity is undefined "
                          "and set to NaN", RuntimeWarning, stacklevel=3)
        h0, h1, value = torch.stack([h0, h1, value]).cpu().numpy()
        parts.append(pd.DataFrame({"method": name, "variant": variant, "label": lab, "image": ids,
                                   "target": target, "target_randomized": target_randomized,
                                   "complexity_original": h0, "complexity_randomized": h1, "value": value}))
    frame = pd.concat(parts, ignore_index=True)
    frame["test"] = "efficient_mprt"
    return canonical_order(frame[COLUMNS], label=list(label_to_method))
