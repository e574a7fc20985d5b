"""Cosine-similarity convergence (CSC): do back-propagated vectors forget which class they started from?

Sixt, Granz & Landgraf (2020), "When Explanations Lie: Why Many Modified BP Attributions Fail"
(ICML), the section on cosine-similarity convergence (CSC): modified back-propagation rules (Guided Backprop,
Deconvnet, RectGrad, LRP-z+ / alpha1-beta0, ...) multiply the relevance vector by non-negative,
input-dependent matrices, whose product converges to rank one. Relevance vectors started from
different classes therefore point more and more in the same direction as they travel towards the
input, so the map barely depends on the later layers (and on the explained class). The plain gradient
has no such contraction and is the control.

What is measured here: for each image, the same method is run for two targets (by default the top-1
class and a random other class, Sixt et al.'s random logit), and the vectors arriving at the INPUT of
every parametrised layer (Conv / Linear, forward order) are compared by their cosine similarity.
Sixt et al. start from random normal relevance vectors injected at a chosen layer and report
``|cos|`` among them; starting from two class logits measures the same contraction on the vectors a
user's maps are made of. ``value`` is ``|cos|`` as in Sixt et al.'s code, because LRP starts from the
target logit's *value* and a negative logit flips the whole relevance vector: its direction is what
converges, not its sign. The signed cosine is kept in ``cosine``.

A zero vector (a rule that let nothing through, e.g. Guided Backprop behind units that are all dead
for one class) has no direction: its cosine is NaN, flagged ``defined=False`` and warned about;
Sixt et al. drop these too ("they only appear when the gradients are zero").
"""
from __future__ import annotations

from typing import Iterable, Sequence
import warnings

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .._core.draws import image_seeds
from .._core.guard import preserved
from .._core.validation import check_images, check_model
from ..methods import get_method
from ..methods.many import _check_options
from ..methods.requests import method_requests
from ..methods.targets import TARGET_NAMES, resolve_targets
from .requests import PAPER_METHODS, _variant, paper_methods
from .tables import _image_ids, pair_name

# Methods whose map IS the vector back-propagated to the input, layer by layer. CAM methods read one
# layer, sound_mask optimises a mask, SmoothGrad / Integrated Gradients average many passes, and
# Input x Gradient propagates exactly the gradient's vectors (request "gradient" for them).
PROPAGATION_METHODS = ("gradient", "guided_backprop", "deconvnet", "rectgrad", "lrp_epsilon", "lrp_alpha_beta",
                       "lrp_zplus", "lrp_composite")
# Layers whose input vector is recorded: every module with weights that the rules act on or between.
PARAMETRISED = (nn.modules.conv._ConvNd, nn.Linear)
COLUMNS = ["method", "variant", "label", "pair", "layer", "depth", "position", "image", "target_a", "target_b",
           "value", "cosine", "defined", "test"]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each row of ``a`` and ``b`` ([B, ...], flattened per row), as float64 [B].

    Sixt et al. (2020), cosine-similarity convergence: the CSC statistic is (the absolute value of)
    this. Rows where either vector is exactly zero have no direction and give NaN (never a silent 0,
    which would read as "orthogonal")."""
    if a.shape != b.shape:
        raise ValueError(f"cosine needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() < 1 or a.shape[0] == 0:
        raise ValueError(f"cosine needs a batch dimension with at least one row, got shape {tuple(a.shape)}")
    # float64: the vectors near the input can be tiny (LRP-epsilon absorbs relevance), their product tinier
    a, b = a.detach().flatten(1).double(), b.detach().flatten(1).double()
    na, nb = a.norm(dim=1), b.norm(dim=1)
    out = (a * b).sum(dim=1) / (na * nb)
    out = out.clamp(-1.0, 1.0)  # rounding can overshoot 1 by an ulp
    return torch.where((na == 0) | (nb == 0), torch.full_like(out, float("nan")), out)


def _requests(methods: Iterable) -> list[tuple[str, str, dict]]:
    """(label, name, options) for each request: :data:`checks.PAPER_METHODS` labels such as
    ``"lrp_alpha1_beta0"`` or anything :func:`checks.method_requests` reads; only methods of
    :data:`PROPAGATION_METHODS` are accepted."""
    if isinstance(methods, str) or (isinstance(methods, tuple) and methods and isinstance(methods[-1], dict)):
        methods = [methods]  # one request, not a sequence of them
    labels = {row[0] for row in PAPER_METHODS}
    out = []
    for m in methods:
        if isinstance(m, str) and m in labels:
            out.extend(paper_methods([m]))
        else:
            out.extend(method_requests([m]))
    if not out:
        raise ValueError("pass at least one method")
    names = [lab for lab, _, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"method labels must be unique, got {names}")
    accepted_labels = [row[0] for row in PAPER_METHODS if row[1] in PROPAGATION_METHODS]
    for lab, name, opts in out:
        if name not in PROPAGATION_METHODS:
            raise ValueError(f"cosine-similarity convergence needs a method whose map is the vector back-propagated "
                             f"layer by layer; {lab!r} ({name}) is not one. Accepted methods: "
                             f"{list(PROPAGATION_METHODS)}, or the labels {accepted_labels}"
                             + ("; input_x_gradient propagates the gradient's vectors: request 'gradient'"
                                if name == "input_x_gradient" else ""))
        _check_options(name, opts)
    return out


def _pair(pair, n: int) -> tuple:
    """Validate the two targets: names, class indices or one index per image (sliced per batch)."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"pair must be two targets, e.g. ('top1', 'random'), got {pair!r}")
    out = []
    for t in pair:
        if isinstance(t, str):
            if t not in TARGET_NAMES:
                raise ValueError(f"unknown target {t!r}; use one of {list(TARGET_NAMES)}, a class index or "
                                 "a LongTensor with one class per image")
        elif isinstance(t, bool):
            raise TypeError("a target must be a name, a class index or a LongTensor, not a bool")
        elif not isinstance(t, int):
            t = torch.as_tensor(t)
            if t.is_floating_point() or t.dtype == torch.bool or t.shape != (n,):
                raise ValueError(f"a per-image target must hold {n} integer class indices, got "
                                 f"dtype {t.dtype}, shape {tuple(t.shape)}")
        out.append(t)
    a, b = out
    if isinstance(a, (str, int)) and type(a) is type(b) and a == b:
        raise ValueError(f"the two targets must differ, got {pair!r}: identical vectors have cosine 1 at every layer")
    return a, b


class _InputSignals:
    """Forward pre-hooks on every parametrised layer that hook the layer's INPUT tensor, so the
    backward pass hands over the vector arriving there.

    The hooks must be registered before the method's own hooks: the rule pre-hooks of
    ``rules.rules_attached`` hand the module a clone of its input and route the rule's output to the
    ORIGINAL input tensor, so only a hook on the tensor as it arrives sees the modified signal (a hook
    on the clone would see the module's own, bypassed, gradient). A tensor that feeds several layers
    (a ResNet block's input feeds conv1 and the downsample) is hooked once per layer and both
    record the total vector arriving at that tensor. A layer called several times records each call.
    """

    def __init__(self, model: nn.Module):
        self.layers = [(name, m) for name, m in model.named_modules() if isinstance(m, PARAMETRISED)]
        if not self.layers:
            raise ValueError(f"{type(model).__name__} has no Conv or Linear layer; cosine-similarity convergence "
                             "compares the vectors arriving at the inputs of parametrised layers")
        self.handles = []
        self.calls: list[str] = []
        self.grads: dict[int, torch.Tensor] = {}
        self.shapes: dict[int, tuple] = {}

    def attach(self) -> None:
        for name, module in self.layers:
            self.handles.append(module.register_forward_pre_hook(self._pre_hook(name)))

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def reset(self) -> None:
        self.calls, self.grads, self.shapes = [], {}, {}

    def _pre_hook(self, name: str):
        def hook(module, args):
            # only the method's differentiable pass counts (a no-grad forward resolving targets does not)
            if not torch.is_grad_enabled() or not args or not isinstance(args[0], torch.Tensor):
                return None
            x = args[0]
            if not x.requires_grad:
                return None
            call = len(self.calls)
            self.calls.append(name)
            self.shapes[call] = (tuple(x.shape), x.dtype, x.device)

            def keep(grad, call=call):
                # a copy: autograd may accumulate a later gradient into this buffer in place
                self.grads[call] = grad.detach().clone()

            x.register_hook(keep)
            return None

        return hook

    def vectors(self) -> tuple[list[str], list[torch.Tensor]]:
        """The layer names (``name#k`` for the k-th call of a reused layer) and the recorded vectors;
        a layer no gradient reached (the rules stopped all of it) gives a zero vector."""
        counts = {n: self.calls.count(n) for n in set(self.calls)}
        seen: dict[str, int] = {}
        names, vecs = [], []
        for call, name in enumerate(self.calls):
            k = seen.get(name, 0)
            seen[name] = k + 1
            names.append(name if counts[name] == 1 else f"{name}#{k}")
            grad = self.grads.get(call)
            shape, dtype, device = self.shapes[call]
            vecs.append(torch.zeros(shape, dtype=dtype, device=device) if grad is None else grad)
        return names, vecs


def cosine_convergence(model: nn.Module, x: torch.Tensor, methods: Iterable, *, pair: Sequence = ("top1", "random"),
                       seed: int = 0, batch_size: int = 64, image_ids: Sequence[int] | None = None,
                       progress: bool = True) -> pd.DataFrame:
    """Cosine similarity of the vectors two targets back-propagate to every parametrised layer's input.

    Sixt et al. (2020), cosine-similarity convergence (CSC): ``|cos|`` between the relevance vectors
    of two classes at each layer; rising towards 1 from the output to the input means the method's
    map forgets the later layers and the explained class. The gradient is the control.

    ``methods``: :data:`PROPAGATION_METHODS` names, :data:`checks.PAPER_METHODS` labels (e.g.
    ``"lrp_alpha1_beta0"``) or ``(label, name, options)`` tuples (:func:`checks.method_requests`);
    other methods are refused. ``pair``: two different targets, names (``"top1"``, ``"bottom1"``,
    ``"random"``), class indices or one class per image; the "random" class is keyed by ``seed`` and
    the image's index in ``image_ids`` (default 0..N-1), as in :func:`~saliency_sanity.checks.class_sensitivity`, so
    the table is the same for any ``batch_size``. An image whose two targets coincide is refused.

    One row per method x layer call x image: ``layer`` (module name), ``position`` (0 = first layer in
    forward order), ``depth`` (0 = the layer nearest the output), ``target_a`` / ``target_b``,
    ``value = |cos|``, ``cosine`` (signed), ``defined`` (False where a vector is zero: NaN) and
    ``test = "csc"``. The model is left as it was (weights, hooks, ``requires_grad``, train/eval).
    """
    check_model(model)
    check_images(x)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    requests = _requests(methods)
    target_a, target_b = _pair(pair, len(x))
    ids = _image_ids(image_ids, x)
    signals = _InputSignals(model)
    device = next(model.parameters()).device
    parts = []
    bar = tqdm(total=len(range(0, len(x), batch_size)) * len(requests), disable=not progress,
               desc="cosine-similarity convergence")
    with preserved(model, weights=True):
        signals.attach()  # first, so that our pre-hooks run before the methods' rule hooks
        try:
            for start in range(0, len(x), batch_size):
                xb = x[start:start + batch_size].to(device)
                images = ids[start:start + len(xb)]
                seeds = image_seeds(seed, images)
                with torch.no_grad():
                    logits = model(xb.clone())  # a clone: a first in-place layer must not write into x
                targets = [resolve_targets(logits, t[start:start + len(xb)] if isinstance(t, torch.Tensor) else t,
                                           seeds) for t in (target_a, target_b)]
                same = (targets[0] == targets[1]).cpu()
                if same.any():
                    bad = [images[i] for i in torch.nonzero(same).flatten().tolist()]
                    raise ValueError(f"the two targets coincide for image(s) {bad[:10]}: choose a pair that "
                                     "differs for every image")
                for label, name, opts in requests:
                    spec = get_method(name)
                    runs = []
                    for t in targets:
                        signals.reset()
                        spec.fn(model, xb, t, seed=seeds, **{**spec.defaults, **opts})
                        runs.append(signals.vectors())
                    (layers, va), (layers_b, vb) = runs
                    if layers != layers_b:  # one model, one input: the forward must call the same layers
                        raise RuntimeError(f"the two passes called different layers: {layers} vs {layers_b}")
                    n = len(layers)
                    for position, (layer, a, b) in enumerate(zip(layers, va, vb)):
                        cos = cosine(a, b).cpu()
                        parts.append(pd.DataFrame({
                            "test": "csc", "method": name, "variant": _variant(name, opts), "label": label,
                            "pair": pair_name(*pair), "layer": layer, "depth": n - 1 - position,
                            "position": position, "image": images, "target_a": targets[0].cpu().numpy(),
                            "target_b": targets[1].cpu().numpy(), "value": cos.abs().numpy(),
                            "cosine": cos.numpy(), "defined": (~cos.isnan()).numpy()}))
                    bar.update(1)
        finally:
            signals.detach()
            bar.close()
    frame = pd.concat(parts, ignore_index=True)[COLUMNS]
    order = {lab: i for i, (lab, _, _) in enumerate(requests)}
    frame = frame.sort_values(["label", "position", "image"], kind="stable",
                              key=lambda col: col.map(order) if col.name == "label" else col).reset_index(drop=True)
    undefined = int((~frame["defined"]).sum())
    if undefined:
        which = frame.loc[~frame["defined"], "label"].value_counts().to_dict()
        warnings.warn(f"{undefined} of {len(frame)} cosine similarities are undefined (NaN, defined=False): a "
                      f"back-propagated vector was all zero (per method: {which}). Means over 'value' skip them.",
                      stacklevel=2)
    return frame


def convergence_summary(frame: pd.DataFrame, by: Sequence[str] = ("label", "depth")) -> pd.DataFrame:
    """Mean, median and count of ``value`` (|cos|) per group over the defined rows, with the count of
    undefined ones: the numbers behind :func:`plotting.convergence_curves`."""
    groups = frame.groupby(list(by), sort=True)
    out = groups["value"].agg(mean="mean", median="median", defined="count", rows="size")
    out["undefined"] = out.pop("rows") - out["defined"]
    return out.reset_index()


__all__ = ["COLUMNS", "PROPAGATION_METHODS", "convergence_summary", "cosine", "cosine_convergence"]
