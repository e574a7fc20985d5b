"""The model-parameter randomization test (MPRT) and its smooth repair, as tidy DataFrames.

Randomization test: Adebayo et al. (2018), Sec. 3-4 (cascading / independent re-initialisation,
maps compared to the original model's by Spearman (abs, signed), SSIM and HOG). Smooth MPRT:
Hedström et al. (2023), the same test on maps averaged over noisy copies of the input
(:func:`smooth_mprt`, one loop with :func:`randomization_test`). Every row is one image x method x
stage x metric, with the similarity ``value``, its support-preserving ``null``
(:mod:`saliency_sanity.metrics.nulls`: the same metric after the compared map's values are shuffled
among the input's foreground pixels) and ``excess = value - null``, the part of the similarity that
shared background does not explain.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, NamedTuple, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .._core.draws import image_generators, image_seeds
from .._core.guard import preserved
from .._core.validation import check_choice, check_images, check_model
from ..methods.many import attribute_many
from ..methods.requests import MethodRequest, method_requests
from ..metrics.similarity import check_metrics
from .randomize import randomized
from .requests import DEFAULT_METRICS, EXPLAIN_CHOICES, _check_normalize, _refuse_batch_draws, _variant, input_box
from .tables import _image_ids, _null_index, _Rows, _stacked_similarities, canonical_order


def randomization_test(model: nn.Module, x: torch.Tensor, methods: Iterable, *, mode: str = "cascading",
                       order: str = "top_down", unit: str = "layer", metrics: Sequence[str] = DEFAULT_METRICS,
                       explain: str = "current_top1", labels: torch.Tensor | None = None,
                       init: str = "truncated_normal", std: float = 0.01, seed: int = 0,
                       batch_size: int = 64, image_ids: Sequence[int] | None = None,
                       stages: Sequence[int] | None = None, progress: bool = True,
                       background: float | None = 0.0, normalize: str = "default",
                       **randomization_options) -> pd.DataFrame:
    """Similarity of each method's map under progressive (or independent) re-initialisation to its
    map on the original model (Adebayo et al. 2018, Sec. 4; Khakzar et al. 2020).

    ``explain`` picks the explained class at every stage: ``"current_top1"`` (argmax of the
    randomized model, as in Adebayo et al.'s code), ``"original_top1"`` (the trained model's top-1,
    fixed), or ``"label"`` (the true ``labels``). Stage 0 is the original model (similarity 1 by
    definition, kept as the curve's anchor). ``stages`` evaluates only those stage indices
    (negative counts from the end, e.g. ``[0, -1]``: original and fully randomized); the weights
    still pass through every stage. Methods that share a forward/backward pass are computed
    together at every stage.

    Random draws are keyed by ``seed`` and the image's index in ``image_ids`` (default 0..N-1),
    never by the batch: the "random" class and SmoothGrad's noise are the same for an image at every
    stage (so a change measures the model, not the draw), and each layer's re-initialisation is
    keyed by ``seed`` and the layer's name. The table is the same for any ``batch_size``, and its
    rows come in one canonical order (:func:`canonical_order`). ``sound_mask`` draws its fills per
    batch and is therefore refused here (run it through :func:`saliency_sanity.attribute`).

    Columns ``value`` (the similarity to the original model's map), ``null`` (the same metric after
    the randomized model's map is permuted among the input's foreground pixels: what maps that share
    only the input's support score) and ``excess = value - null``.
    ``background`` (default 0.0) defines the input's background for the ``null`` column: the
    compared map's values are permuted among the pixels where some channel of the input differs
    from it (:func:`saliency_sanity.metrics.nulls.foreground_mask`; ``None``: among all pixels), the same
    permutation for an image at every stage (keyed by ``seed`` and the image's index). Maps must
    have the input's height and width. ``normalize`` is the maps' normalisation before the metrics
    (:func:`saliency_sanity.metrics.similarity.similarity`; the default clips absolute maps at their 99th
    percentile, ``"none"`` ranks the raw maps).
    """
    return _randomization_run(model, x, methods, mode=mode, order=order, unit=unit, metrics=metrics,
                              explain=explain, labels=labels, init=init, std=std, seed=seed,
                              batch_size=batch_size, image_ids=image_ids, stages=stages, progress=progress,
                              background=background, normalize=normalize, smoothing=None,
                              randomization_options=randomization_options, desc=f"randomization ({mode}, {order})")


# Draws of the smooth MPRT's input noise: one generator per image and this purpose (draws.image_generators)
SMOOTH_NOISE = "smooth_mprt noise"


class _Smoothing(NamedTuple):
    """The smooth MPRT's averaging: ``n_samples`` copies of the input, ``noise_magnitude`` times its range."""

    n_samples: int
    noise_magnitude: float


def _check_smoothing(n_samples, noise_magnitude) -> _Smoothing:
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
        raise ValueError(f"n_samples must be an int >= 1 (noisy copies averaged per map, the last one noise-free; "
                         f"Quantus's default is 50), got {n_samples!r}")
    if (isinstance(noise_magnitude, bool) or not isinstance(noise_magnitude, numbers.Real)
            or not math.isfinite(noise_magnitude) or noise_magnitude < 0):
        raise ValueError(f"noise_magnitude must be a finite number >= 0 (the noise's std as a fraction of each "
                         f"image's max - min; Quantus's default is 0.1), got {noise_magnitude!r}")
    return _Smoothing(int(n_samples), float(noise_magnitude))


def _standard_normals(generators: list[torch.Generator], shape: tuple) -> torch.Tensor:
    """The next draw z [B, *shape] (float32, CPU) of each image's generator."""
    return torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])


def smooth_mprt_noise(x: torch.Tensor, n_samples: int, *, seed: int = 0,
                      image_ids: Sequence[int] | None = None) -> torch.Tensor:
    """The standard normal draws ``z`` [n_samples, N, C, H, W] (float32, CPU) of :func:`smooth_mprt` for the
    images ``x``: sample k of image i adds ``z[k, i] * noise_magnitude * (max x_i - min x_i)``; the last
    sample is the noise-free input (``z = 0``). Each image's draws come from its own generator, keyed by
    ``seed`` and its index in ``image_ids`` (default 0..N-1), so they do not depend on the batch."""
    check_images(x)
    n = _check_smoothing(n_samples, 0.0).n_samples
    ids = _image_ids(image_ids, x)
    generators = image_generators(image_seeds(seed, ids), len(ids), SMOOTH_NOISE)
    z = torch.zeros(n, *x.shape, dtype=torch.float32)
    for k in range(n - 1):
        z[k] = _standard_normals(generators, tuple(x.shape[1:]))
    return z


def _maps(model: nn.Module, xb: torch.Tensor, target, requests: list[MethodRequest], seeds: list[int],
          smoothing: _Smoothing | None = None) -> dict[str, torch.Tensor]:
    """Every request's maps [B, ...] of the images ``xb`` and their resolved ``"target"``: one
    :func:`attribute_many` pass, or with ``smoothing`` the average over ``n_samples`` inputs
    ``xb + z * noise_magnitude * (max - min)`` per image (the smooth MPRT), the last of them noise-free.

    The class is resolved once, on the noise-free input, and explained for every noisy copy. Each
    copy's maps come from one :func:`attribute_many` call with the same method seeds ``seeds`` (one per
    image); the noise ``z`` is drawn per image from a generator keyed by its seed (:data:`SMOOTH_NOISE`),
    the same draws on every call (every stage). The average accumulates ``map_k / n`` in sample order,
    the noise-free map last, as Quantus does. With one sample or zero noise every copy is the
    noise-free input: its maps are returned as they are.
    """
    maps = attribute_many(model, xb, target, requests, reduce=None, seed=seeds)
    if smoothing is None or smoothing.n_samples == 1 or smoothing.noise_magnitude == 0:
        return maps
    n = smoothing.n_samples
    dims = tuple(range(1, xb.dim()))
    std = smoothing.noise_magnitude * (xb.amax(dims, keepdim=True) - xb.amin(dims, keepdim=True))
    generators = image_generators(seeds, len(xb), SMOOTH_NOISE)
    labels = [lab for lab, _, _ in requests]
    total: dict[str, torch.Tensor] = {}
    for _ in range(n - 1):
        z = _standard_normals(generators, tuple(xb.shape[1:])).to(device=xb.device, dtype=xb.dtype)
        noisy = attribute_many(model, xb + z * std, maps["target"], requests, reduce=None, seed=seeds)
        for lab in labels:
            total[lab] = noisy[lab] / n if lab not in total else total[lab] + noisy[lab] / n
    return {**{lab: total[lab] + maps[lab] / n for lab in labels}, "target": maps["target"]}


def _randomization_run(model: nn.Module, x: torch.Tensor, methods: Iterable, *, mode: str, order: str, unit: str,
                       metrics: Sequence[str], explain: str, labels: torch.Tensor | None, init, std: float,
                       seed: int, batch_size: int, image_ids: Sequence[int] | None, stages: Sequence[int] | None,
                       progress: bool, background: float | None, normalize: str, smoothing: _Smoothing | None,
                       randomization_options: dict, desc: str) -> pd.DataFrame:
    """The loop of :func:`randomization_test` and :func:`smooth_mprt`: every stage x batch, the maps of
    :func:`_maps` (smoothed when ``smoothing`` is given) compared with the original model's."""
    check_model(model)
    check_images(x)
    requests = method_requests(methods)
    metrics = check_metrics(metrics)
    _check_normalize(metrics, normalize)
    check_choice(explain, EXPLAIN_CHOICES, "explain")
    if explain == "label" and (labels is None or len(labels) != len(x)):
        raise ValueError("explain='label' needs labels: a LongTensor with one class per image")
    _refuse_batch_draws(requests)
    ids = _image_ids(image_ids, x)
    label_to_method = {lab: (name, _variant(name, opts)) for lab, name, opts in requests}
    device = next(model.parameters()).device
    rows = _Rows(label_to_method)
    with preserved(model):
        with torch.no_grad():
            fixed = (torch.cat([model(x[i:i + batch_size].to(device).clone()).argmax(1).cpu()
                                for i in range(0, len(x), batch_size)])
                     if explain == "original_top1" else labels)
        reference: dict[str, list[torch.Tensor]] = {}
        nulls: dict[int, torch.Tensor] = {}  # the null's permutation of each batch, for every stage
        with randomized(model, mode=mode, order=order, unit=unit, init=init, std=std, seed=seed,
                        example_input=x[:1].to(device), **randomization_options) as stage_iter:
            n_stages = len(stage_iter)
            wanted = set(range(n_stages)) if stages is None else {s % n_stages for s in stages} | {0}
            bar = tqdm(total=len(wanted) * len(range(0, len(x), batch_size)), disable=not progress, desc=desc)
            for stage in stage_iter:
                if stage.index not in wanted:
                    continue
                layer = ",".join(stage.layers) if stage.index else "original"
                for start in range(0, len(x), batch_size):
                    xb = x[start:start + batch_size].to(device)
                    images = ids[start:start + len(xb)]
                    target = "top1" if explain == "current_top1" else fixed[start:start + batch_size]
                    maps = _maps(model, xb, target, requests, image_seeds(seed, images), smoothing)
                    chunk = start // batch_size
                    if stage.index == 0:
                        for lab in label_to_method:
                            reference.setdefault(lab, []).append(maps[lab])
                    if chunk not in nulls:
                        nulls[chunk] = _null_index(xb, background, seed, images)
                    values, null = _stacked_similarities({lab: reference[lab][chunk] for lab in label_to_method},
                                                         maps, metrics, nulls[chunk], tuple(xb.shape[-2:]),
                                                         normalize)
                    for lab, sims in values.items():
                        rows.add(sims, null[lab], label=lab, stage=stage.index, layer=layer, images=images,
                                 targets=maps["target"])
                    bar.update(1)
            bar.close()
    frame = canonical_order(rows.frame(), label=list(label_to_method), metric=metrics)
    frame["mode"], frame["order"] = mode, order
    return frame


def smooth_mprt(model: nn.Module, x: torch.Tensor, methods: Iterable, *, n_samples: int = 50,
                noise_magnitude: float = 0.1, order: str = "bottom_up", mode: str = "cascading",
                unit: str = "layer", metrics: Sequence[str] = ("spearman_abs",), explain: str = "original_top1",
                labels: torch.Tensor | None = None, init: str = "truncated_normal", std: float = 0.01,
                seed: int = 0, batch_size: int = 64, image_ids: Sequence[int] | None = None,
                stages: Sequence[int] | None = None, progress: bool = True, background: float | None = 0.0,
                normalize: str = "none", **randomization_options) -> pd.DataFrame:
    """The smooth model-parameter randomization test (sMPRT) of Hedström, Weber, Lapuschkin and Höhne
    (2023), "Sanity Checks Revisited": :func:`randomization_test` on maps denoised by averaging each
    over ``n_samples`` noisy copies of its input, as Quantus's ``SmoothMPRT``.

    Copy k of image x adds ``eps_k ~ N(0, s^2)`` per element with ``s = noise_magnitude * (max x - min x)``
    over all the image's elements; the last copy is the noise-free input (Quantus's convention, so
    ``n_samples=1`` is the plain test). The averaged maps of the trained model and of each randomized
    stage are compared by the ``metrics`` (default the Spearman correlation of the absolute maps);
    bottom-up cascading randomization by default, as Quantus's ``layer_order="bottom_up"`` and the
    paper's recommendation. Stage 0 is the trained model (similarity 1); ``stages=[0, -1]`` reads only
    the fully randomized model (Quantus's ``return_last_correlation``), its weights still passing
    through every stage. Methods that share a forward/backward pass share it for every noisy copy.

    Where it meets Quantus (0.6.0), and where it differs on purpose:

    - ``normalize="none"`` (default): ``spearman_abs`` is then the Spearman correlation of the absolute
      maps' pixels, Quantus's (its default normalise + abs rescales each map by a positive factor,
      which keeps the ranks). Quantus flattens every channel; here channels are summed as
      ``sum_c |E_c|`` (equal for one-channel maps). ``normalize="default"`` reads the maps as
      :func:`randomization_test` does (top 1 % clipped), for a like-for-like comparison with it.
    - ``explain="original_top1"`` (default): the trained model's top-1 class, fixed at every stage,
      since Quantus explains a fixed ``y_batch``; ``"label"`` explains ``labels``; ``"current_top1"``
      the class each stage's model ranks first on the noise-free input, explained for every copy.
    - The noise is keyed by ``seed`` and the image's index (:func:`smooth_mprt_noise`): the SAME draws
      for an image at every stage, so a change measures the model, not the draw, and the table is the
      same for any ``batch_size``. Quantus redraws ``np.random.randn`` at every call. A method's own
      random draws (SmoothGrad's noise, the "random" class) are keyed by image as in
      :func:`randomization_test`, the same for every copy.
    - Randomization: ``init``, ``std`` and ``**randomization_options`` (``bias``, ``batchnorm``,
      ``blocks``) as in :func:`randomization_test` (default truncated normal, std 0.01, biases zeroed,
      keyed by ``seed`` and layer name), so the weights at a stage are the plain test's. Quantus
      re-runs each layer's ``reset_parameters()``: ``init="default", bias="init", batchnorm="reset"``
      draws from that distribution.

    Columns as :func:`randomization_test` (``value``, its support-preserving ``null`` and ``excess``,
    ``stage``, ``layer``, ``target``, ...) plus ``test="smooth_mprt"``, ``n_samples`` and
    ``noise_magnitude``. ``n_samples`` must be an int >= 1 and ``noise_magnitude`` finite and >= 0; with
    0 every copy is the noise-free input and one pass per stage gives the plain test's maps.
    ``sound_mask`` is refused (its draws are per batch). The model is left as it was.
    """
    smoothing = _check_smoothing(n_samples, noise_magnitude)
    if smoothing.n_samples > 1 and smoothing.noise_magnitude > 0:
        boxed = [label for label, name, options in method_requests(methods) if input_box(name, options)]
        if boxed:
            raise ValueError(f"{boxed} use LRP's z^B rule, defined for pixels inside [low, high]; the smooth MPRT's "
                             "noisy copies leave that box. Leave these methods out, or pass low= and high= that "
                             "cover the noisy inputs (checks.input_box says which requests have a box)")
    frame = _randomization_run(model, x, methods, mode=mode, order=order, unit=unit, metrics=metrics,
                               explain=explain, labels=labels, init=init, std=std, seed=seed,
                               batch_size=batch_size, image_ids=image_ids, stages=stages, progress=progress,
                               background=background, normalize=normalize, smoothing=smoothing,
                               randomization_options=randomization_options,
                               desc=f"smooth MPRT ({mode}, {order}, {smoothing.n_samples} samples)")
    frame["test"] = "smooth_mprt"
    frame["n_samples"], frame["noise_magnitude"] = smoothing.n_samples, smoothing.noise_magnitude
    return frame
