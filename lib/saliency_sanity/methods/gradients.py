"""Gradient-family maps: Gradient, Input x Gradient, SmoothGrad and Integrated Gradients.

Simonyan et al. 2014 (Eq. 2, the gradient), Shrikumar et al. 2016 (input x gradient),
Smilkov et al. 2017 (Eq. 3, SmoothGrad), Sundararajan et al. 2017 (Eq. 3, integrated gradients).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .._core.draws import image_generators
from .._core.guard import preserved
from .registry import register
from .shared_pass import PassRecord, run_pass
from .targets import as_index_tensor, check_in_range, resolve_targets


def gradient_from(record: PassRecord) -> torch.Tensor:
    """dy_c/dx from a recorded pass, shape [B, C, H, W]."""
    return record.grad_x


def input_x_gradient_from(record: PassRecord) -> torch.Tensor:
    """x * dy_c/dx from a recorded pass (Shrikumar et al. 2016)."""
    return record.x * record.grad_x


@register("gradient", family="gradient", shared_pass=True)
def gradient(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0) -> torch.Tensor:
    """Plain gradient of the target logit with respect to the input (Simonyan et al. 2014)."""
    return gradient_from(run_pass(model, x, target, seed=seed))


@register("input_x_gradient", family="gradient", shared_pass=True)
def input_x_gradient(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0) -> torch.Tensor:
    """Input times gradient (Shrikumar et al. 2016)."""
    return input_x_gradient_from(run_pass(model, x, target, seed=seed))


def _batched_input_gradients(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor,
                             internal_batch_size: int | None) -> torch.Tensor:
    """Gradients of the target logits for a stack of inputs, ``internal_batch_size`` rows at a time."""
    chunk = internal_batch_size or len(inputs)
    if chunk < 1:
        raise ValueError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
    out = torch.empty_like(inputs)
    with preserved(model, eval_mode=False, frozen=True):
        for i in range(0, len(inputs), chunk):
            xi = inputs[i:i + chunk].detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(xi.clone())  # a first in-place layer may write into it, not into the leaf
                if i == 0:
                    check_in_range(target, logits.shape[1])
                score = logits.gather(1, target[i:i + chunk, None]).sum()
                out[i:i + chunk] = torch.autograd.grad(score, xi)[0]
    return out


def _target_at(model: nn.Module, x: torch.Tensor, target, seed: int) -> torch.Tensor:
    """Resolve a target for methods that never evaluate the model at ``x`` itself: names need one
    forward; explicit indices need none (their range is checked on the method's first forward)."""
    if isinstance(target, str):
        with torch.no_grad():
            # a clone: a model whose first layer works in place must not write into the caller's x
            return resolve_targets(model(x.clone()), target, seed)
    return as_index_tensor(target, len(x), x.device)


@register("smoothgrad", family="gradient")
def smoothgrad(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, n_samples: int = 16,
               noise: float = 0.15, internal_batch_size: int | None = None) -> torch.Tensor:
    """Average gradient over ``n_samples`` noisy copies of each image (Smilkov et al. 2017, Eq. 3).

    The noise is N(0, sigma^2) with sigma = ``noise`` * (max(x_i) - min(x_i)) per image, drawn from a
    generator seeded by ``seed`` (on the CPU, so CPU and GPU runs use the same noise); with one seed
    per image (:mod:`saliency_sanity._core.draws`) from one generator per image, independent of the batch. The target is
    resolved on the clean image. ``internal_batch_size`` bounds the number of noisy images per
    forward pass (all of them in one pass by default).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0 (a fraction of the input range), got {noise}")
    t = _target_at(model, x, target, seed)
    b = len(x)
    sigma = noise * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(1, b, 1, 1, 1)
    gens = image_generators(seed, b, "smoothgrad noise")
    if gens is None:
        eps = torch.randn((n_samples, *x.shape), generator=torch.Generator().manual_seed(int(seed)), dtype=x.dtype)
    else:
        eps = torch.stack([torch.randn((n_samples, *x.shape[1:]), generator=g, dtype=x.dtype) for g in gens], dim=1)
    eps = eps.to(x.device)
    noisy = (x.unsqueeze(0) + sigma * eps).reshape(n_samples * b, *x.shape[1:])
    grads = _batched_input_gradients(model, noisy, t.repeat(n_samples), internal_batch_size)
    return grads.view(n_samples, *x.shape).mean(0)


IG_RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def ig_nodes(steps: int, rule: str) -> tuple[list[float], list[float]]:
    """Quadrature nodes alpha in [0, 1] and weights for the path integral (same conventions as
    Captum's approximation methods, so the two agree step for step)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return list(0.5 * (nodes + 1)), list(0.5 * weights)
    if rule == "riemann_trapezoid":
        if steps < 2:
            raise ValueError("the trapezoid rule needs steps >= 2")
        alphas = list(np.linspace(0, 1, steps))
        w = [1 / (steps - 1)] * steps
        w[0] = w[-1] = 1 / (2 * (steps - 1))
        return alphas, w
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if rule not in offsets:
        raise ValueError(f"unknown integration rule {rule!r}; choose one of {list(IG_RULES)}")
    return [(i + offsets[rule]) / steps for i in range(steps)], [1 / steps] * steps


@register("integrated_gradients", family="gradient")
def integrated_gradients(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, steps: int = 32,
                         baseline=0.0, rule: str = "gausslegendre",
                         internal_batch_size: int | None = None) -> torch.Tensor:
    """(x - x') * integral of the gradient along the straight path from the baseline x' to x
    (Sundararajan et al. 2017, Eq. 3), by a ``steps``-node quadrature ``rule``.

    ``baseline`` is a float or a tensor broadcastable to ``x`` (zeros by default). The sum of the
    map approximates y_c(x) - y_c(x') (completeness). ``rule`` takes Captum's names and default
    (``"gausslegendre"``); the nodes and weights equal Captum's except for ``"riemann_trapezoid"``,
    where we use the textbook rule (spacing 1/(steps-1), weights summing to 1) while Captum's
    weights are ours times (steps-1)/steps. ``internal_batch_size`` bounds the number of path
    points per forward pass.
    """
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    try:
        base = torch.broadcast_to(base, x.shape)
    except RuntimeError as err:
        raise ValueError(f"baseline of shape {tuple(base.shape)} does not broadcast to x {tuple(x.shape)}") from err
    alphas, weights = ig_nodes(steps, rule)
    t = _target_at(model, x, target, seed)
    a = torch.tensor(alphas, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1, 1)
    path = (base.unsqueeze(0) + a * (x - base).unsqueeze(0)).reshape(-1, *x.shape[1:])
    grads = _batched_input_gradients(model, path, t.repeat(len(alphas)), internal_batch_size)
    w = torch.tensor(weights, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1, 1)
    return (x - base) * (grads.view(len(alphas), *x.shape) * w).sum(0)
