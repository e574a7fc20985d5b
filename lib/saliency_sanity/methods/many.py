"""Several methods at once, with every shared-pass method read off ONE forward/backward pass."""
from __future__ import annotations

import inspect
import time
from typing import Iterable

import torch
from torch import nn

from .._core.guard import preserved
from .._core.validation import check_images, check_model
from .cam import _check_cam_layer, fullgrad_from, gradcam_from, gradcam_pp_from, handle
from .dispatch import REDUCTIONS, reduce_channels
from .gradients import _target_at, gradient_from, input_x_gradient_from
from .registry import get_method
from .requests import method_requests
from .shared_pass import biased_layers, run_pass


def _check_options(name: str, options: dict) -> None:
    """Reject options the method function does not take, as calling it would."""
    params = inspect.signature(get_method(name).fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # the method validates its own options
    accepted = set(params) - {"model", "x", "target", "seed"}
    unknown = set(options) - accepted
    if unknown:
        raise TypeError(f"{name} got unexpected option(s) {sorted(unknown)}; it takes {sorted(accepted)}")


def attribute_many(model: nn.Module, x: torch.Tensor, target="top1", methods: Iterable = ("gradient",), *,
                   reduce: str | None = "sum", seed: int = 0, options: dict | None = None) -> dict[str, torch.Tensor]:
    """Maps of several methods for the same images and targets, as ``{label: map}``.

    ``methods`` are names or ``(label, name, options)`` tuples, so one method can appear with
    several options (e.g. ``("gradcam/positive", "gradcam", {"aggregation": "positive"})``).
    ``options`` maps a method name to options for every request of that method (a request's own
    options win), e.g. ``{"integrated_gradients": {"steps": 16}}``.
    Gradient, Input x Gradient, Grad-CAM, Grad-CAM++ and FullGrad are read off one shared pass
    (the union of their layers); the other methods run their own passes. The resolved targets
    are returned under the key ``"target"``. Equal to calling :func:`attribute` per method.
    """
    check_model(model)
    check_images(x)
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduce {reduce!r}; choose 'sum', 'abs_sum' or None")
    requests = method_requests(methods, options)
    for _, name, opts in requests:
        _check_options(name, opts)
    out: dict[str, torch.Tensor] = {}
    with preserved(model):
        # the methods the registry marks shared_pass are read off one PassRecord (the readers below)
        shared = [(lab, name, {**get_method(name).defaults, **opts}) for lab, name, opts in requests
                  if get_method(name).shared_pass]
        layers: list[str] = []
        for _, name, opts in shared:
            if "aggregation" in opts:
                handle(torch.zeros(1), opts["aggregation"])
            if name in ("gradcam", "gradcam_pp"):
                opts["layer"] = _check_cam_layer(model, opts.get("layer"))
                layers.append(opts["layer"])
            elif name == "fullgrad":
                layers += biased_layers(model)
        if shared:
            needs_input = any(name in ("gradient", "input_x_gradient", "fullgrad") for _, name, _ in shared)
            record = run_pass(model, x, target, seed=seed, layers=layers, input_grad=needs_input)
            resolved = record.target
            readers = {
                "gradient": lambda o: reduce_channels(gradient_from(record), reduce),
                "input_x_gradient": lambda o: reduce_channels(input_x_gradient_from(record), reduce),
                "gradcam": lambda o: gradcam_from(record, o["layer"], o["aggregation"], o["relu"]),
                "gradcam_pp": lambda o: gradcam_pp_from(record, o["layer"], o["aggregation"], o["relu"]),
                "fullgrad": lambda o: fullgrad_from(record, model, o["aggregation"], o["normalize"]),
            }
            for lab, name, opts in shared:
                out[lab] = readers[name](opts)
        else:
            resolved = _target_at(model, x, target, seed)
        for lab, name, opts in requests:
            if lab in out:
                continue
            spec = get_method(name)
            maps = spec.fn(model, x, resolved, seed=seed, **{**spec.defaults, **opts})
            out[lab] = reduce_channels(maps, reduce) if spec.kind == "pixel" else maps
    out = {lab: out[lab] for lab, _, _ in requests}
    out["target"] = resolved
    return out


def maps_for_every_label(model: nn.Module, x: torch.Tensor, method: str, labels, options: dict | None = None, *,
                         seed: int = 0) -> tuple[torch.Tensor, float]:
    """One method's map made for each of ``labels``: maps [B, L, H, W] and the seconds per map.
    Gupta et al. (2022): completeness and soundness read a map made FOR every label, not only the
    predicted one. ``labels``: a number of classes L (labels 0..L-1) or the class indices; map
    ``[:, j]`` explains ``labels[j]`` for every image (one :func:`attribute_many` call per label,
    with ``options`` and ``seed``). The seconds are the wall time of all calls divided by B * L.
    """
    labels = list(range(labels)) if isinstance(labels, int) and not isinstance(labels, bool) else \
        [int(c) for c in labels]
    if not labels:
        raise ValueError("labels must name at least one class")
    tic = time.perf_counter()
    per_label = [attribute_many(model, x, torch.full((len(x),), c, device=x.device), [(method, method, options or {})],
                                seed=seed)[method]
                 for c in labels]
    return torch.stack(per_label, 1), (time.perf_counter() - tic) / (len(x) * len(labels))
