"""Modified backward rules attached to modules by hooks, undone when the pass ends.

The design follows Zennit (Anders et al. 2021): a *rule* replaces the backward pass of one module;
a *composite* maps modules to rules. A pre-forward hook keeps the module's input (and hands the
module a clone, so in-place ReLUs cannot overwrite it); a forward hook wraps the output in an
autograd Function whose backward applies the rule. A module called several times keeps a stack of
inputs, one per call.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn


class _RuleFn(torch.autograd.Function):
    """Identity on ``output`` in the forward pass; in the backward pass the rule maps the gradient
    at the output to gradients for the stashed inputs (the module's own backward is bypassed)."""

    @staticmethod
    def forward(ctx, rule, n_inputs, output, *inputs):
        ctx.rule, ctx.n_inputs = rule, n_inputs
        ctx.save_for_backward(*inputs)
        return output.clone()

    @staticmethod
    def backward(ctx, grad_output):
        inputs = ctx.saved_tensors
        with torch.enable_grad():
            grads = ctx.rule(grad_output, *inputs)
        return (None, None, None, *grads)


@contextlib.contextmanager
def rules_attached(assignments: dict[nn.Module, Callable]) -> Iterator[None]:
    """Attach ``rule(grad_output, *inputs) -> tuple of grads`` to each module; remove on exit."""
    handles = []
    stacks: dict[nn.Module, list] = {m: [] for m in assignments}

    def pre_hook(module, args):
        stacks[module].append(args)
        return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)

    def post_hook(module, args, output):
        inputs = stacks[module].pop()
        tensors = tuple(a for a in inputs if isinstance(a, torch.Tensor))
        return _RuleFn.apply(assignments[module], len(tensors), output, *tensors)

    try:
        for module in assignments:
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
        yield
    finally:
        for h in handles:
            h.remove()


def stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """z + epsilon * sign(z), with sign(0) = +1 (Zennit's convention), so no division by zero."""
    return z + epsilon * (z.sign() + (z == 0).to(z))


# ----------------------------------------------------------------------------- ReLU rules

def relu_gradient(grad, z):
    return (grad * (z > 0).to(grad),)


def relu_guided(grad, z):
    """Guided Backprop (Springenberg et al. 2015, Eq. 7): positive gradient where the input is positive."""
    return (grad.clamp(min=0) * (z > 0).to(grad),)


def relu_deconvnet(grad, z):
    """Deconvnet (Zeiler & Fergus 2014): ReLU of the gradient, the forward mask ignored."""
    return (grad.clamp(min=0),)


def relu_rectgrad(percentile: float):
    """RectGrad (Kim et al. 2019, Eq. 6): pass the gradient only where activation x gradient is
    above the ``percentile``-th percentile of that layer's activation x gradient, per sample."""
    q = percentile / 100.0

    def rule(grad, z):
        importance = z.clamp(min=0) * grad
        tau = torch.quantile(importance.flatten(1).double(), q, dim=1).to(grad).view(-1, *[1] * (grad.dim() - 1))
        return (grad * (importance > tau).to(grad),)

    return rule


# ----------------------------------------------------------------------------- LRP rules

def layer_function(module: nn.Module, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
    """The module's forward as a function of its input, with weight and bias replaceable."""
    w = module.weight if weight is None else weight
    b = module.bias if bias is None else bias
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise ValueError(f"LRP supports zero-padded convolutions, got padding_mode={module.padding_mode!r}")
        return lambda x: F.conv2d(x, w, b, module.stride, module.padding, module.dilation, module.groups)
    if isinstance(module, nn.Linear):
        return lambda x: F.linear(x, w, b)
    raise TypeError(type(module).__name__)


def _modified_terms(grad, x, terms, stabilizer_of):
    """Zennit's basic hook: for each (input modifier, forward function) compute the output, then the
    gradient of the outputs with the mapped output gradient, and the per-term contributions."""
    xs = [mod(x).detach().requires_grad_(True) for mod, _ in terms]
    outs = [fn(xi) for xi, (_, fn) in zip(xs, terms)]
    denominators = stabilizer_of(outs)
    grads = torch.autograd.grad(outs, xs, grad_outputs=[grad / d for d in denominators])
    return xs, grads


def lrp_epsilon(module, epsilon: float, weight=None, bias=None):
    """LRP-epsilon (Bach et al. 2015, Eq. 58): R_i = sum_j x_i w_ij / (z_j + eps sign z_j) R_j."""
    fn = layer_function(module, weight, bias)

    def rule(grad, x):
        xs, grads = _modified_terms(grad, x, [(lambda t: t, fn)], lambda outs: [stabilize(outs[0], epsilon)])
        return (xs[0] * grads[0],)

    return rule


def lrp_alpha_beta(module, alpha: float, beta: float, epsilon: float = 1e-6, weight=None, bias=None):
    """LRP-alpha-beta (Bach et al. 2015, Eq. 60; Montavon et al. 2019), alpha - beta = 1: positive and
    negative contributions normalised separately; alpha=1, beta=0 keeps only positive ones."""
    w = module.weight if weight is None else weight
    b = module.bias if bias is None else bias
    zero = None if b is None else torch.zeros_like(b)
    pos_b = None if b is None else b.clamp(min=0)
    neg_b = None if b is None else b.clamp(max=0)
    plus, minus = (lambda t: t.clamp(min=0)), (lambda t: t.clamp(max=0))
    terms = [(plus, layer_function(module, w.clamp(min=0), pos_b)), (minus, layer_function(module, w.clamp(max=0), zero)),
             (plus, layer_function(module, w.clamp(max=0), neg_b)), (minus, layer_function(module, w.clamp(min=0), zero))]

    def rule(grad, x):
        def denominators(outs):
            p, n = stabilize(outs[0] + outs[1], epsilon), stabilize(outs[2] + outs[3], epsilon)
            return [p, p, n, n]

        xs, g = _modified_terms(grad, x, terms, denominators)
        return (alpha * (xs[0] * g[0] + xs[1] * g[1]) - beta * (xs[2] * g[2] + xs[3] * g[3]),)

    return rule


def lrp_zbox(module, low: float, high: float, epsilon: float = 1e-6, weight=None, bias=None):
    """LRP-z^B for the first layer with bounded input [low, high] (Montavon et al. 2017, Sec. 4)."""
    w = module.weight if weight is None else weight
    b = module.bias if bias is None else bias
    terms = [(lambda t: t, layer_function(module, w, b)),
             (lambda t: torch.full_like(t, low), layer_function(module, w.clamp(min=0), None if b is None else b.clamp(min=0))),
             (lambda t: torch.full_like(t, high), layer_function(module, w.clamp(max=0), None if b is None else b.clamp(max=0)))]

    def rule(grad, x):
        def denominators(outs):
            d = stabilize(outs[0] - outs[1] - outs[2], epsilon)
            return [d, -d, -d]

        xs, g = _modified_terms(grad, x, terms, denominators)
        return (xs[0] * g[0] + xs[1] * g[1] + xs[2] * g[2],)

    return rule


def lrp_norm(module, epsilon: float = 1e-6):
    """Parameter-free layers (average pooling, sums): relevance in proportion to each input's share of
    the output, R_i = x_i d(z)/dx_i R / z (Zennit's Norm rule)."""

    def rule(grad, *inputs):
        xs = [x.detach().requires_grad_(True) for x in inputs]
        out = module.forward(*xs)  # forward() skips the hooks this rule is attached by
        grads = torch.autograd.grad(out, xs, grad_outputs=grad / stabilize(out, epsilon))
        return tuple(x * g for x, g in zip(xs, grads))

    return rule


def lrp_pass(grad, *inputs):
    """Relevance passes unchanged (used for BatchNorm merged into the preceding convolution)."""
    return (grad,)
