"""One forward and one backward pass that every gradient-reading method can share.

Gradient, Input x Gradient, Grad-CAM, Grad-CAM++ and FullGrad all read the same quantities: the
logits, the input gradient, and the activations and gradients of some layers. Recording them once
is what makes ``attribute_many`` cost about one pass for all of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

from .._core.guard import preserved
from ..models.architectures import get_layer
from .targets import resolve_targets


@dataclass
class PassRecord:
    """What one forward/backward pass saw. Activations and gradients are per named layer; a module
    called several times in one forward has one entry per call (in call order)."""

    x: torch.Tensor
    logits: torch.Tensor
    target: torch.Tensor
    grad_x: torch.Tensor | None
    activations: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    gradients: dict[str, list[torch.Tensor]] = field(default_factory=dict)


def biased_layers(model: nn.Module) -> list[str]:
    """Names of the layers FullGrad reads: every Conv2d and BatchNorm2d that has a bias
    (Srinivas & Fleuret 2019, Sec. 4; BatchNorm's effective bias, see :func:`effective_bias`)."""
    return [name for name, m in model.named_modules()
            if type(m) in (nn.Conv2d, nn.BatchNorm2d) and m.bias is not None]


def effective_bias(module: nn.Module) -> torch.Tensor:
    """The bias a layer adds to each channel; for BatchNorm in eval mode
    beta - running_mean * gamma / sqrt(running_var + eps)."""
    if isinstance(module, nn.BatchNorm2d):
        return (module.bias - module.running_mean * module.weight
                / torch.sqrt(module.running_var + module.eps)).detach()
    return module.bias.detach()


def run_pass(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0,
             layers: Iterable[str] = (), input_grad: bool = True) -> PassRecord:
    """Forward ``x``, pick the target logit of each image, and back-propagate it once.

    Records the input gradient and, for every layer in ``layers``, its output and the gradient of
    the target logit with respect to it. Parameters get no gradients (their ``requires_grad`` is
    switched off for the pass and restored after). Without ``input_grad`` the backward pass stops
    at the recorded layers (Grad-CAM alone needs nothing below its layer); ``grad_x`` is then None.
    """
    if not input_grad and not layers:
        raise ValueError("a pass without the input gradient must record at least one layer")
    layers = list(dict.fromkeys(layers))
    modules = {name: get_layer(model, name) for name in layers}
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    handles = []

    def make_hook(name):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise ValueError(f"layer {name!r} returns {type(output).__name__}, not a tensor; "
                                 "choose a layer with a single tensor output")
            if not output.requires_grad:  # nothing below needs a gradient: the graph starts here
                output = output.detach().requires_grad_(True)
            captured[name].append(output)
            # Later in-place ops (ReLU(inplace=True)) then modify the clone, not the recorded tensor.
            return output.clone()
        return hook

    with preserved(model, eval_mode=False, frozen=True):
        try:
            for name, module in modules.items():
                handles.append(module.register_forward_hook(make_hook(name)))
            xg = x.detach().clone().requires_grad_(input_grad)
            with torch.enable_grad():
                logits = model(xg.clone())  # a first in-place layer may write into it, not into the leaf
                if logits.dim() != 2:
                    raise ValueError(f"the model must return logits of shape [B, classes], got {tuple(logits.shape)}")
                t = resolve_targets(logits.detach(), target, seed)
                score = logits.gather(1, t[:, None]).sum()
                recorded = [a for name in layers for a in captured[name]]
                wrt = [xg, *recorded] if input_grad else recorded
                grads = torch.autograd.grad(score, wrt, allow_unused=True)
        finally:
            for h in handles:
                h.remove()
    grads = [torch.zeros_like(v) if g is None else g for g, v in zip(grads, wrt)]
    if not input_grad:
        grads = [None, *grads]
    record = PassRecord(x=x.detach(), logits=logits.detach(), target=t, grad_x=grads[0])
    it = iter(grads[1:])
    for name in layers:
        record.activations[name] = [a.detach() for a in captured[name]]
        record.gradients[name] = [next(it) for _ in captured[name]]
    missing = [name for name in layers if not captured[name]]
    if missing:
        raise ValueError(f"layer(s) {missing} were not called in the forward pass; choose layers the model uses")
    return record
