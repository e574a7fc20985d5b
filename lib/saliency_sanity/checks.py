"""The sanity checks: model-parameter randomization and class sensitivity, as tidy DataFrames.

Randomization test: Adebayo et al. (2018), Sec. 3-4 (cascading / independent re-initialisation,
maps compared to the original model's by Spearman (abs, signed), SSIM and HOG). Class sensitivity:
Khakzar et al. (2020) (top-1 vs least likely class) and the random-logit test of Sixt et
al. (2020). Smooth MPRT: Hedström et al. (2023), the randomization test on maps averaged over noisy
copies of the input (:func:`smooth_mprt`, the same loop as :func:`randomization_test`). Every row is one image x method x stage (or class pair) x metric, with the similarity
``value``, its support-preserving ``null`` (:mod:`saliency_sanity.nulls`: the same metric after
the compared map's values are shuffled among the input's foreground pixels) and ``excess = value -
null``, the part of the similarity that shared background does not explain.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, NamedTuple, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ._validation import check_choice, check_images, check_model
from .draws import image_generators, image_seeds
from .guard import preserved
from .methods import get_method
from .methods.many import attribute_many
from .nulls import foreground_mask, null_seeds, permutation_index, similarity_and_null
from .randomization import randomized
from .similarity import SIMILARITY_METRICS
from .similarity import _check_options as _metric_options

DEFAULT_METRICS = ("spearman_abs", "spearman", "ssim", "hog")
EXPLAIN_CHOICES = ("current_top1", "original_top1", "label")

MethodRequest = tuple[str, str, dict]

# Every method of the paper with its handling of gradients (after Khakzar et al. 2020's abstract): label,
# registry name, options, handling. The original methods are the rows without a "/variant" label
# suffix, except the aggregation variants that Khakzar et al. introduce to isolate the cause.
PAPER_METHODS: tuple[tuple[str, str, dict, str], ...] = (
    ("gradient", "gradient", {}, "signed propagation"),
    ("input_x_gradient", "input_x_gradient", {}, "signed propagation"),
    ("smoothgrad", "smoothgrad", {}, "signed propagation"),
    ("integrated_gradients", "integrated_gradients", {}, "signed propagation"),
    ("deconvnet", "deconvnet", {}, "signed propagation"),
    ("guided_backprop", "guided_backprop", {}, "positive propagation"),
    ("guided_gradcam", "guided_gradcam", {}, "positive propagation"),
    ("rectgrad", "rectgrad", {}, "positive propagation"),
    ("lrp_epsilon", "lrp_epsilon", {}, "signed propagation"),
    ("lrp_alpha2_beta1", "lrp_alpha_beta", {"alpha": 2.0, "beta": 1.0}, "signed propagation"),
    ("lrp_alpha1_beta0", "lrp_alpha_beta", {"alpha": 1.0, "beta": 0.0}, "positive propagation"),
    ("lrp_zplus", "lrp_zplus", {}, "positive propagation"),
    ("lrp_composite", "lrp_composite", {}, "signed propagation"),
    ("gradcam", "gradcam", {"aggregation": "signed"}, "signed aggregation"),
    ("gradcam/positive", "gradcam", {"aggregation": "positive"}, "positive aggregation"),
    ("gradcam/absolute", "gradcam", {"aggregation": "absolute"}, "absolute aggregation"),
    ("gradcam_pp/signed", "gradcam_pp", {"aggregation": "signed"}, "signed aggregation"),
    ("gradcam_pp", "gradcam_pp", {"aggregation": "positive"}, "positive aggregation"),
    ("gradcam_pp/absolute", "gradcam_pp", {"aggregation": "absolute"}, "absolute aggregation"),
    ("fullgrad/signed", "fullgrad", {"aggregation": "signed"}, "signed aggregation"),
    ("fullgrad/positive", "fullgrad", {"aggregation": "positive"}, "positive aggregation"),
    ("fullgrad", "fullgrad", {"aggregation": "absolute"}, "absolute aggregation"),
)


def paper_methods(labels: Sequence[str] | None = None, **per_method_options) -> list[MethodRequest]:
    """The :data:`PAPER_METHODS` requests (all, or those ``labels``), with extra options per registry
    name, e.g. ``paper_methods(integrated_gradients={"steps": 16})``."""
    known = {row[0]: row for row in PAPER_METHODS}
    if labels is not None:
        unknown = [lab for lab in labels if lab not in known]
        if unknown:
            raise ValueError(f"unknown method label(s) {unknown}; choose from {list(known)}")
    rows = [known[lab] for lab in labels] if labels is not None else list(PAPER_METHODS)
    return [(lab, name, {**opts, **per_method_options.get(name, {})}) for lab, name, opts, _ in rows]


def handling(label: str) -> str:
    """The gradient handling class of a :data:`PAPER_METHODS` label."""
    return {row[0]: row[3] for row in PAPER_METHODS}.get(label, "other")


def method_requests(methods: Iterable) -> list[MethodRequest]:
    """Normalise method requests to ``(label, name, options)``.

    Accepts ``"gradcam"``, ``"gradcam/positive"`` (short for ``aggregation="positive"``),
    ``("label", "name", {options})`` and ``("name", {options})``.
    """
    out: list[MethodRequest] = []
    for m in methods:
        if isinstance(m, str):
            name, _, aggregation = m.partition("/")
            options = {"aggregation": aggregation} if aggregation else {}
            out.append((m, name, options))
        elif isinstance(m, tuple) and len(m) == 3:
            out.append((str(m[0]), m[1], dict(m[2])))
        elif isinstance(m, tuple) and len(m) == 2:
            out.append((f"{m[0]}" + "".join(f"/{v}" for v in m[1].values()), m[0], dict(m[1])))
        else:
            raise TypeError(f"cannot read method request {m!r}; use 'name', 'name/aggregation' or "
                            "(label, name, options)")
        get_method(out[-1][1])
    labels = [r[0] for r in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"method labels must be unique, got {labels}")
    if not out:
        raise ValueError("pass at least one method")
    return out


def _variant(name: str, options: dict) -> str:
    spec = get_method(name)
    aggregation = options.get("aggregation", spec.defaults.get("aggregation"))
    extra = {k: v for k, v in options.items() if k != "aggregation"}
    text = aggregation or "default"
    return text + "".join(f", {k}={v}" for k, v in sorted(extra.items()))


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    for m in metrics:
        check_choice(m, SIMILARITY_METRICS, "metric")
    return tuple(metrics)


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
    their pixels permuted by ``index`` (the null: :func:`saliency_sanity.nulls.similarity_and_null`),
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
    from it (:func:`saliency_sanity.nulls.foreground_mask`; ``None``: among all pixels), the same
    permutation for an image at every stage (keyed by ``seed`` and the image's index). Maps must
    have the input's height and width. ``normalize`` is the maps' normalisation before the metrics
    (:func:`saliency_sanity.similarity.similarity`; the default clips absolute maps at their 99th
    percentile, ``"none"`` ranks the raw maps).
    """
    return _randomization_run(model, x, methods, mode=mode, order=order, unit=unit, metrics=metrics,
                              explain=explain, labels=labels, init=init, std=std, seed=seed,
                              batch_size=batch_size, image_ids=image_ids, stages=stages, progress=progress,
                              background=background, normalize=normalize, smoothing=None,
                              randomization_options=randomization_options, desc=f"randomization ({mode}, {order})")


def input_box(name: str, options: dict | None = None) -> tuple[float, float] | None:
    """The pixel box [low, high] a method needs its inputs to lie in (LRP's z^B rule on the first layer,
    Montavon et al. 2017), or None: noisy inputs (the smooth MPRT) leave the box."""
    defaults = get_method(name).defaults
    if "low" not in defaults or "high" not in defaults:
        return None
    merged = {**defaults, **(options or {})}
    return float(merged["low"]), float(merged["high"])


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


def _check_normalize(metrics: tuple[str, ...], normalize: str) -> None:
    """``normalize`` known and able to serve every metric without options (the checks pass none)."""
    try:
        _metric_options(metrics, normalize, {})
    except ValueError as err:
        if "data_range" not in str(err):
            raise
        raise ValueError(f"{err}; the checks pass no metric options: choose normalize='default' for these "
                         "metrics") from None


def _refuse_batch_draws(requests: list[MethodRequest]) -> None:
    """Refuse methods whose random draws are made per batch (``sound_mask``): a check's table must not
    depend on ``batch_size``."""
    for label, name, _ in requests:
        if name == "sound_mask":
            raise TypeError(f"method {label!r} (sound_mask) draws its fills for the whole batch, so its maps would "
                            "depend on batch_size; it is refused in the randomization tests (run it through "
                            "saliency_sanity.attribute)")


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
    metrics = _check_metrics(metrics)
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
    from it (:func:`saliency_sanity.nulls.foreground_mask`; ``None``: among all pixels), the same
    permutation for an image in every pair (keyed by ``seed`` and the image's index). Maps must
    have the input's height and width.
    """
    check_model(model)
    check_images(x)
    requests = method_requests(methods)
    metrics = _check_metrics(metrics)
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


def data_randomization_test(model: nn.Module, random_label_model: nn.Module, x: torch.Tensor, methods: Iterable, *,
                            metrics: Sequence[str] = DEFAULT_METRICS, seed: int = 0, batch_size: int = 64,
                            image_ids: Sequence[int] | None = None, progress: bool = True,
                            background: float | None = 0.0) -> pd.DataFrame:
    """Similarity between the maps of a model trained on the true labels and of one trained on
    permuted labels (Adebayo et al. 2018, Sec. 5), each explaining its own top-1 class.

    A map that explains the model must differ: the second model has learned nothing about the
    relation between images and labels, only memorised them.

    Columns ``value`` (the similarity of the two models' maps), ``null`` (the same metric after the
    random-label model's map is permuted among the input's foreground pixels: what maps that share
    only the input's support score) and ``excess = value - null``.
    ``background`` (default 0.0) defines the input's background for the ``null`` column: the
    compared map's values are permuted among the pixels where some channel of the input differs
    from it (:func:`saliency_sanity.nulls.foreground_mask`; ``None``: among all pixels), the same
    permutation for an image (keyed by ``seed`` and the image's index). Maps must have the
    input's height and width.
    """
    for m in (model, random_label_model):
        check_model(m)
    check_images(x)
    requests = method_requests(methods)
    metrics = _check_metrics(metrics)
    ids = _image_ids(image_ids, x)
    label_to_method = {lab: (name, _variant(name, opts)) for lab, name, opts in requests}
    device = next(model.parameters()).device
    parts = []
    for start in tqdm(range(0, len(x), batch_size), disable=not progress, desc="data randomization"):
        xb = x[start:start + batch_size].to(device)
        images = ids[start:start + len(xb)]
        seeds = image_seeds(seed, images)
        a = attribute_many(model, xb, "top1", requests, reduce=None, seed=seeds)
        b = attribute_many(random_label_model, xb, "top1", requests, reduce=None, seed=seeds)
        values, null = _stacked_similarities({lab: a[lab] for lab in label_to_method}, b, metrics,
                                             _null_index(xb, background, seed, images), tuple(xb.shape[-2:]))
        target_a, target_b = a["target"].cpu().numpy(), b["target"].cpu().numpy()
        for lab, (name, variant) in label_to_method.items():
            for metric, value in values[lab].items():
                parts.append(_pair_rows(value, null[lab][metric], method=name, variant=variant,
                                        label=lab, image=images, target_a=target_a, target_b=target_b,
                                        metric=metric))
    return canonical_order(pd.concat(parts, ignore_index=True), label=list(label_to_method), metric=metrics)
