"""Modified back-propagation methods: Guided Backprop, Deconvnet, RectGrad and LRP (eps, alpha-beta, z+).

Khakzar et al. (2020) call Guided Backprop, RectGrad and LRP-alpha1beta0 / z+ *positive
propagation*: they let only positive evidence flow back. Deconvnet, LRP-eps and LRP-alpha2beta1
propagate signed evidence. Each method is one composite (module type -> rule) of ``rules.py``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..guard import preserved
from ..models import Add
from . import rules
from .registry import register
from .targets import resolve_targets


def _relu_modules(model: nn.Module, method: str) -> list[nn.Module]:
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(f"{type(model).__name__} has no nn.ReLU module; {method} modifies the backward pass of "
                         "ReLU modules (functional F.relu / torch.relu calls are not seen): use nn.ReLU modules")
    return relus


def _run(model: nn.Module, x: torch.Tensor, target, seed: int, assignments: dict, start: str = "one") -> torch.Tensor:
    """Forward with the rules attached, back-propagate from the target logit (``start="one"``: a
    gradient of 1; ``"logit"``: the logit's value, so LRP relevance sums to the logit)."""
    with preserved(model, eval_mode=False):
        for p in model.parameters():
            p.requires_grad_(False)
        xg = x.detach().clone().requires_grad_(True)
        with rules.rules_attached(assignments), torch.enable_grad():
            logits = model(xg)
            t = resolve_targets(logits.detach(), target, seed)
            seed_grad = torch.zeros_like(logits)
            value = logits.detach().gather(1, t[:, None]) if start == "logit" else 1.0
            seed_grad.scatter_(1, t[:, None], value if start == "logit" else torch.ones_like(t[:, None], dtype=logits.dtype))
            (grad,) = torch.autograd.grad(logits, xg, grad_outputs=seed_grad)
    return grad.detach()


@register("guided_backprop", family="propagation", positive=True)
def guided_backprop(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0) -> torch.Tensor:
    """Guided Backprop (Springenberg et al. 2015): positive gradients through positive ReLU inputs."""
    return _run(model, x, target, seed, {m: rules.relu_guided for m in _relu_modules(model, "guided_backprop")})


@register("deconvnet", family="propagation")
def deconvnet(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0) -> torch.Tensor:
    """Deconvnet (Zeiler & Fergus 2014): ReLU applied to the backward signal, forward mask ignored."""
    return _run(model, x, target, seed, {m: rules.relu_deconvnet for m in _relu_modules(model, "deconvnet")})


@register("rectgrad", family="propagation", positive=True, percentile=98.0)
def rectgrad(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, percentile: float = 98.0) -> torch.Tensor:
    """RectGrad (Kim et al. 2019): at every ReLU, keep the gradient where activation x gradient exceeds
    its ``percentile``-th percentile within that layer and sample (our choice: every ReLU, strict >)."""
    if not 0 <= percentile < 100:
        raise ValueError(f"percentile must be in [0, 100), got {percentile}")
    rule = rules.relu_rectgrad(percentile)
    return _run(model, x, target, seed, {m: rule for m in _relu_modules(model, "rectgrad")})


# ----------------------------------------------------------------------------- LRP composites

_PASS_THROUGH = (nn.ReLU, nn.Flatten, nn.Dropout, nn.Identity, nn.MaxPool2d, nn.Sequential, nn.ModuleList)
_POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[dict[nn.Module, nn.Module], nn.Module | None]:
    """One traced forward: each BatchNorm2d mapped to the Conv2d whose output it normalises, and the
    first Conv2d/Linear called."""
    produced: dict[int, tuple[nn.Module, torch.Tensor]] = {}  # the tensor is kept so its id stays unique
    pairs: dict[nn.Module, nn.Module] = {}
    order: list[nn.Module] = []

    def conv_out(mod, i, o):
        produced[id(o)] = (mod, o)

    def bn_in(mod, i):
        if id(i[0]) in produced:
            pairs[mod] = produced[id(i[0])][0]

    handles = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            handles.append(m.register_forward_pre_hook(lambda mod, i: order.append(mod) if not order else None))
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_out))
        elif isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_pre_hook(bn_in))
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    unmerged = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and m not in pairs]
    if unmerged:
        raise ValueError(f"LRP needs every BatchNorm2d directly after a Conv2d to merge them; not mergeable: {unmerged}")
    return pairs, (order[0] if order else None)


def _merged(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of conv followed by eval-mode BatchNorm as one convolution."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    return (conv.weight * scale.view(-1, 1, 1, 1)).detach(), ((bias - bn.running_mean) * scale + bn.bias).detach()


def _lrp_assignments(model: nn.Module, x: torch.Tensor, layer_rule, first_rule=None, epsilon: float = 1e-6) -> dict:
    """The LRP composite: ``layer_rule(module, weight, bias)`` on Conv2d/Linear (BatchNorm merged into
    its convolution, which then passes relevance unchanged), the Norm rule on pooling and sums,
    gradient elsewhere. ``first_rule`` replaces the rule of the first layer in forward order."""
    pairs, first = _trace(model, x)
    merged_into = {conv: bn for bn, conv in pairs.items()}
    assignments = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            weight, bias = _merged(m, merged_into[m]) if m in merged_into else (None, None)
            make = first_rule if (first_rule is not None and m is first) else layer_rule
            assignments[m] = make(m, weight, bias)
        elif isinstance(m, nn.BatchNorm2d):
            assignments[m] = rules.lrp_pass
        elif isinstance(m, _POOLS + (Add,)):
            assignments[m] = rules.lrp_norm(m, epsilon)
        elif not isinstance(m, _PASS_THROUGH) and not list(m.children()) and any(True for _ in m.parameters()):
            raise ValueError(f"LRP has no rule for layer {name!r} ({type(m).__name__}); supported: Conv2d, Linear, "
                             "BatchNorm2d after a Conv2d, ReLU, pooling, Flatten, Dropout")
    return assignments


@register("lrp_epsilon", family="propagation", epsilon=1e-6)
def lrp_epsilon(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, epsilon: float = 1e-6) -> torch.Tensor:
    """LRP-epsilon on every Conv2d/Linear (Bach et al. 2015); relevance starts as the target logit."""
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    rule = lambda m, w, b: rules.lrp_epsilon(m, epsilon, w, b)  # noqa: E731
    return _run(model, x, target, seed, _lrp_assignments(model, x, rule), start="logit")


@register("lrp_alpha_beta", family="propagation", alpha=2.0, beta=1.0)
def lrp_alpha_beta(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, alpha: float = 2.0,
                   beta: float = 1.0) -> torch.Tensor:
    """LRP-alpha-beta on every Conv2d/Linear; alpha=2, beta=1 by default (signed), alpha=1, beta=0 is
    positive propagation."""
    if abs(alpha - beta - 1) > 1e-9 or beta < 0:
        raise ValueError(f"LRP-alpha-beta needs alpha - beta = 1 and beta >= 0, got alpha={alpha}, beta={beta}")
    rule = lambda m, w, b: rules.lrp_alpha_beta(m, alpha, beta, weight=w, bias=b)  # noqa: E731
    return _run(model, x, target, seed, _lrp_assignments(model, x, rule), start="logit")


@register("lrp_zplus", family="propagation", positive=True, low=0.0, high=1.0)
def lrp_zplus(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, low: float = 0.0,
              high: float = 1.0) -> torch.Tensor:
    """LRP-z+ on every Conv2d/Linear except the first, which gets the z^B rule for inputs in
    [``low``, ``high``] (Montavon et al. 2017): the positive-propagation rule of deep Taylor
    decomposition. On layers with non-negative inputs z+ equals alpha1-beta0."""
    if low >= high:
        raise ValueError(f"low must be below high, got low={low}, high={high}")
    rule = lambda m, w, b: rules.lrp_alpha_beta(m, 1.0, 0.0, weight=w, bias=b)  # noqa: E731
    first = lambda m, w, b: rules.lrp_zbox(m, low, high, weight=w, bias=b)  # noqa: E731
    return _run(model, x, target, seed, _lrp_assignments(model, x, rule, first), start="logit")
