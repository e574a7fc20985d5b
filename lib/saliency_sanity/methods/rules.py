"""Modified backward rules attached to modules by hooks, undone when the pass ends.

The design follows Zennit (Anders et al. 2021): a *rule* replaces the backward pass of one module;
a *composite* (``propagation.py``) maps modules to rules. A pre-forward hook keeps the module's
input and hands the module a clone, so an in-place ReLU cannot overwrite what the rule needs; a
forward hook wraps the output in an autograd Function whose backward applies the rule instead of
the module's own backward. A module called several times in one forward (a reused ReLU) keeps a
stack of inputs, one per call, and each call gets its own Function node.

A rule is ``rule(grad_output, *inputs) -> tuple of input gradients``. For LRP the "gradient" is
relevance divided by nothing: the pass starts from the target logit's value, so what reaches the
input is the relevance map itself.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Protocol

import torch
from torch import nn
import torch.nn.functional as F

Rule = Callable[..., tuple]


class Tracer(Protocol):
    """Observes the forward pass through the hooked modules (used to find BatchNorm pairs)."""

    def before(self, module: nn.Module, args: tuple) -> None: ...

    def after(self, module: nn.Module, output: torch.Tensor) -> None: ...


class _RuleFn(torch.autograd.Function):
    """Identity on ``output`` in the forward pass; in the backward pass the rule maps the gradient
    at the output to gradients for the stashed inputs (the module's own backward is bypassed)."""

    @staticmethod
    def forward(ctx, rule, output, *inputs):
        ctx.rule = rule
        ctx.save_for_backward(*inputs)
        return output.clone()  # a fresh tensor, so in-place ops after the module cannot reach the stash

    @staticmethod
    def backward(ctx, grad_output):
        with torch.enable_grad():
            grads = ctx.rule(grad_output, *ctx.saved_tensors)
        return (None, None, *grads)


@contextlib.contextmanager
def rules_attached(assignments: dict[nn.Module, Rule], tracer: Tracer | None = None) -> Iterator[None]:
    """Attach ``rule(grad_output, *inputs)`` to each module of ``assignments``; remove on exit.

    Only tensor positional inputs are passed to the rule (and receive gradients). ``tracer`` sees
    each hooked call's inputs before the module runs and its wrapped output after.
    """
    handles = []
    stacks: dict[nn.Module, list] = {m: [] for m in assignments}

    def pre_hook(module, args):
        if tracer is not None:
            tracer.before(module, args)
        stacks[module].append(args)
        return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)

    def post_hook(module, args, output):
        inputs = tuple(a for a in stacks[module].pop() if isinstance(a, torch.Tensor))
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"{type(module).__name__} returned {type(output).__name__}; modified backward "
                            "rules need modules that return one tensor")
        wrapped = _RuleFn.apply(assignments[module], output, *inputs)
        if tracer is not None:
            tracer.after(module, wrapped)
        return wrapped

    try:
        for module in assignments:
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
        yield
    finally:
        for h in handles:
            h.remove()


def stabilize(z: torch.Tensor, epsilon: float | torch.Tensor) -> torch.Tensor:
    """z + epsilon * sign(z) with sign(0) = +1 (Zennit's convention): the denominator keeps its sign
    and is never zero."""
    if isinstance(epsilon, (int, float)) and epsilon == 0:
        # LRP-0: a zero output only ever carries zero relevance (its unit is inactive); 1 avoids 0/0
        return z + (z == 0).to(z)
    return z + epsilon * (z.sign() + (z == 0).to(z))


# ----------------------------------------------------------------------------- ReLU rules

def relu_guided(grad, z):
    """Guided Backprop (Springenberg et al. 2015, Fig. 1): the positive gradient where the input is positive."""
    return (grad.clamp(min=0) * (z > 0).to(grad),)


def relu_deconvnet(grad, z):
    """Deconvnet (Zeiler & Fergus 2014, Sec. 2.1): ReLU of the backward signal, the forward mask ignored."""
    return (grad.clamp(min=0),)


def percentile_threshold(values: torch.Tensor, percentile: float) -> torch.Tensor:
    """The ``percentile``-th percentile of each sample's values (rank ``1:`` flattened), as [B].

    Nearest-rank, as ``tf.contrib.distributions.percentile`` (interpolation "nearest") in the
    RectGrad authors' code: the element at descending rank round((n-1) (1 - q/100)), so the
    threshold is one of the values. ``kthvalue`` selects it without sorting and works on any size.
    """
    flat = values.flatten(1)
    n = flat.shape[1]
    rank = (n - 1) - round((n - 1) * (1.0 - percentile / 100.0))  # ascending, 0-based
    return flat.kthvalue(rank + 1, dim=1).values


def relu_rectgrad(percentile: float) -> Rule:
    """RectGrad (Kim et al. 2019, its propagation rule): pass the gradient only where the importance score
    activation x gradient exceeds the ``percentile``-th percentile of that layer's scores, per sample.

    As in the authors' code: the activation is the ReLU's output, the comparison strict
    (``tau < a * g``), and the forward mask is NOT applied separately (for tau >= 0 it is implied;
    a low percentile with a negative tau lets gradient through dead units too).
    """

    def rule(grad, z):
        importance = z.clamp(min=0) * grad
        tau = percentile_threshold(importance, percentile).view(-1, *[1] * (grad.dim() - 1))
        return (grad * (importance > tau).to(grad),)

    return rule


# ----------------------------------------------------------------------------- LRP rules

def layer_function(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None):
    """The affine map of a Conv2d / Linear ``module`` with the given weight and bias."""
    if isinstance(module, nn.Conv2d):
        return lambda x: F.conv2d(x, weight, bias, module.stride, module.padding, module.dilation, module.groups)
    if isinstance(module, nn.Linear):
        return lambda x: F.linear(x, weight, bias)
    raise TypeError(f"LRP rules apply to Conv2d and Linear layers, got {type(module).__name__}")


def _clamp(t: torch.Tensor | None, **bounds) -> torch.Tensor | None:
    return None if t is None else t.clamp(**bounds)


def _contributions(grad, terms, denominator_of):
    """Zennit's basic hook in closed form. ``terms`` are (input, weight, bias, layer) tuples; every
    term's output z_t = layer(input_t) is computed, ``denominator_of(outputs)`` gives one
    denominator per term, and term t contributes input_t * d/d(input_t) [z_t . grad / d_t], i.e.
    input_t * (W_t^T (grad / d_t))."""
    return _backward_terms(terms, lambda outs: [grad / d for d in denominator_of(outs)])


def _backward_terms(terms, signals_of):
    """input_t * W_t^T s_t for every term t, with the backward signals s = ``signals_of(outputs)``."""
    xs = [x.detach().requires_grad_(True) for x, _, _, _ in terms]
    outs = [layer_function(m, w, b)(x) for x, (_, w, b, m) in zip(xs, terms)]
    grads = torch.autograd.grad(outs, xs, grad_outputs=signals_of(outs))
    return [x.detach() * g for x, g in zip(xs, grads)]


def relative_epsilon(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """epsilon * RMS of ``z`` per sample (over all but the batch dimension), shaped to broadcast:
    Zennit's ``Stabilizer(epsilon, norm_scale=True)``, the "0.25 std" of Montavon et al. (2019)."""
    return epsilon * z.detach().pow(2).mean(dim=tuple(range(1, z.dim())), keepdim=True).sqrt()


def lrp_epsilon(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None, epsilon: float,
                relative: bool = False) -> Rule:
    """LRP-epsilon (Bach et al. 2015, Eq. 58): R_i = sum_j x_i w_ij / (z_j + eps sign z_j) R_j.

    ``relative=True`` uses eps = ``epsilon`` * RMS_j(z_j) of each sample's layer output instead of
    ``epsilon`` itself (Zennit's ``Stabilizer(epsilon, norm_scale=True)``)."""

    def rule(grad, x):
        def denominators(outs):
            z = outs[0]
            return [stabilize(z, relative_epsilon(z, epsilon) if relative else epsilon)]

        (r,) = _contributions(grad, [(x, weight, bias, module)], denominators)
        return (r,)

    return rule


def lrp_gamma(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None, gamma: float,
              epsilon: float = 1e-6) -> Rule:
    """LRP-gamma (Montavon et al. 2019, "Layer-Wise Relevance Propagation: An Overview", Sec. 10.2.1),
    generalised to signed inputs as Zennit's ``Gamma``: an output z_j > 0 is explained by its
    positive contributions with the positive weights (and bias) favoured,
    z_j^{+gamma} = x+ (w + gamma w+) + x- (w + gamma w-) + (b + gamma b+); an output z_j < 0 by z_j^{-gamma} = x+ (w + gamma w-) + x- (w + gamma w+) +
    (b + gamma b-); R_i = sum_j [z_j > 0] x_i d z_j^{+gamma} / dx_i / z_j^{+gamma} R_j + (same for
    z_j < 0); units with z_j = 0 pass nothing. gamma = 0 is LRP-0 (up to the stabiliser), large
    gamma approaches z+ (alpha1-beta0). The x- terms are skipped when the input has no negative
    entry (every layer after a ReLU); they would contribute exact zeros."""
    w_up, w_down = weight + gamma * weight.clamp(min=0), weight + gamma * weight.clamp(max=0)
    b_up = None if bias is None else bias + gamma * bias.clamp(min=0)
    b_down = None if bias is None else bias + gamma * bias.clamp(max=0)
    forward = layer_function(module, weight, bias)

    def rule(grad, x):
        signed = bool((x < 0).any())
        x_pos = x.clamp(min=0)
        x_neg = x.clamp(max=0) if signed else None
        with torch.no_grad():
            z = forward(x)
        relevance = torch.zeros_like(x)
        for mask, (w_pos_in, w_neg_in, b) in (((z > 0).to(z), (w_up, w_down, b_up)),
                                               ((z < 0).to(z), (w_down, w_up, b_down))):
            terms = [(x_pos, w_pos_in, b, module)] + ([(x_neg, w_neg_in, None, module)] if signed else [])

            def signals(outs, mask=mask):
                return [grad * mask / stabilize(sum(outs), epsilon)] * len(outs)

            relevance = relevance + sum(_backward_terms(terms, signals))
        return (relevance,)

    return rule


def lrp_alpha_beta(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None, alpha: float, beta: float,
                   epsilon: float = 1e-6) -> Rule:
    """LRP-alpha-beta (Bach et al. 2015, Eq. 60), alpha - beta = 1.

    Positive contributions (x+ w+ and x- w-, plus the positive bias) and negative ones (x+ w-, x- w+,
    plus the negative bias) are normalised separately: R_i = sum_j (alpha z+_ij / z+_j - beta
    z-_ij / z-_j) R_j, as Zennit's AlphaBeta. Terms that are zero are skipped: the x- terms when
    the input has no negative entry (every layer after a ReLU), the negative part when beta = 0.
    """
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    b_pos, b_neg = _clamp(bias, min=0), _clamp(bias, max=0)

    def rule(grad, x):
        signed = bool((x < 0).any())
        x_pos = x.clamp(min=0)
        x_neg = x.clamp(max=0) if signed else None
        # (coefficient, terms whose outputs add up to one denominator)
        parts = [(alpha, [(x_pos, w_pos, b_pos, module)] + ([(x_neg, w_neg, None, module)] if signed else []))]
        if beta != 0:
            parts.append((-beta, [(x_pos, w_neg, b_neg, module)] + ([(x_neg, w_pos, None, module)] if signed else [])))
        relevance = torch.zeros_like(x)
        for coefficient, terms in parts:
            def denominators(outs):
                d = stabilize(sum(outs), epsilon)
                return [d] * len(outs)

            relevance = relevance + coefficient * sum(_contributions(grad, terms, denominators))
        return (relevance,)

    return rule


def lrp_zbox(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None, low: float, high: float,
             epsilon: float = 1e-6) -> Rule:
    """LRP-z^B for a first layer whose input lies in [low, high] (Montavon et al. 2017, deep Taylor decomposition):
    R_i = sum_j (x_i w_ij - l w+_ij - h w-_ij) / (z_j - z^l_j - z^h_j) R_j, as Zennit's ZBox
    (whose clamped parameters include the bias)."""
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    b_pos, b_neg = _clamp(bias, min=0), _clamp(bias, max=0)

    def rule(grad, x):
        terms = [(x, weight, bias, module), (torch.full_like(x, low), w_pos, b_pos, module),
                 (torch.full_like(x, high), w_neg, b_neg, module)]

        def denominators(outs):
            d = stabilize(outs[0] - outs[1] - outs[2], epsilon)
            return [d, -d, -d]

        return (sum(_contributions(grad, terms, denominators)),)

    return rule


def lrp_norm(module: nn.Module, epsilon: float = 1e-6) -> Rule:
    """Parameter-free linear layers (average pooling, residual sums): each input gets relevance in
    proportion to its share of the output, R_i = x_i dz/dx_i R / z (Zennit's Norm rule)."""

    def rule(grad, *inputs):
        xs = [x.detach().requires_grad_(True) for x in inputs]
        out = module.forward(*xs)  # forward() skips the hooks this rule is attached by
        grads = torch.autograd.grad(out, xs, grad_outputs=grad / stabilize(out, epsilon))
        return tuple(x.detach() * g for x, g in zip(xs, grads))

    return rule


def lrp_pass(grad, *inputs):
    """Relevance passes unchanged (a BatchNorm merged into the convolution before it)."""
    return (grad,)
