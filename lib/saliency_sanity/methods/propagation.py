"""Modified back-propagation: Guided Backprop, Deconvnet, RectGrad and LRP (epsilon, alpha-beta, z+,
and the epsilon-gamma-z^B composite).

Khakzar et al. (2020) call Guided Backprop, RectGrad and LRP-alpha1beta0 / z+ *positive
propagation*: only positive evidence flows back. Deconvnet, LRP-epsilon and LRP-alpha2beta1
propagate signed evidence (the composite's gamma rule favours positive contributions but keeps
negative ones). Guided Grad-CAM (Guided Backprop x Grad-CAM) lives in ``cam.py``. Each method is a
composite (module -> rule of ``rules.py``) applied in one forward and one backward pass; the target
is read off that forward pass's logits.

LRP composite (as Zennit's ``LayerMapComposite`` with its canonizers):
- Conv2d / Linear get the method's rule; relevance starts as the target logit's value, so the map
  sums to the logit where the rule conserves relevance (no biases, small epsilon).
- BatchNorm2d right after a Conv2d is merged into it for the pass, as Zennit's
  ``SequentialMergeBatchNorm`` does: the convolution's rule uses the merged weight and bias
  (computed inside the pass; the user's model is never written) and the BatchNorm passes relevance.
- Average pooling and residual sums (``models.Add``) split relevance in proportion to their inputs
  (Zennit's Norm rule); this is what Zennit's ResNet canonizer gives with its explicit ``Sum``
  module. torchvision's ResNet blocks add in place (``out += identity``), invisible to hooks: for
  the pass their ``forward`` is replaced by one that calls an ``Add`` module, restored afterwards.
- ReLU, max pooling (winner takes all), Flatten, Dropout (eval) pass the gradient; for ReLU this
  equals Zennit's Pass rule because relevance at an inactive unit is zero.
- Any other layer raises: a silent gradient through e.g. a Tanh would not be LRP. Functional calls
  (``F.relu``, ``a + b``) are invisible to module hooks; write residual sums as ``models.Add``.
"""
from __future__ import annotations

import contextlib
import types
from typing import Callable, Iterator

import torch
from torch import nn
import torch.nn.functional as F

from . import rules
from .._core.guard import preserved
from ..models.architectures import Add
from .registry import register
from .targets import resolve_targets


def _relu_modules(model: nn.Module, method: str) -> list[nn.Module]:
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(f"{type(model).__name__} has no nn.ReLU module; {method} modifies the backward pass of "
                         "ReLU modules (functional F.relu / torch.relu calls are not seen): use nn.ReLU modules")
    return relus


def _run(model: nn.Module, x: torch.Tensor, target, seed: int, assignments: dict, *, start: str = "one",
         tracer: rules.Tracer | None = None, after_forward: Callable[[], None] | None = None) -> torch.Tensor:
    """One forward with the rules attached, then back-propagation from the target logit: a gradient
    of 1 (``start="one"``) or the logit's value (``"logit"``, LRP's initial relevance)."""
    with preserved(model, frozen=True):
        xg = x.detach().clone().requires_grad_(True)
        with rules.rules_attached(assignments, tracer), torch.enable_grad():
            logits = model(xg.clone())  # a clone: a first in-place layer may write into it, not into the leaf
            if after_forward is not None:
                after_forward()
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                raise ValueError("the model must return logits of shape [B, classes], got "
                                 f"{getattr(logits, 'shape', type(logits).__name__)}")
            t = resolve_targets(logits.detach(), target, seed)
            one_hot = F.one_hot(t, logits.shape[1]).to(logits)
            seed_grad = one_hot * logits.detach() if start == "logit" else one_hot
            (grad,) = torch.autograd.grad(logits, xg, grad_outputs=seed_grad)
    return grad.detach()


@register("guided_backprop", family="propagation")
def guided_backprop(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0) -> torch.Tensor:
    """Guided Backprop: at every ReLU, the positive gradient where the ReLU's input is positive.

    Springenberg et al. (2015), Fig. 1; equal to Captum's ``GuidedBackprop``.
    """
    return _run(model, x, target, seed, {m: rules.relu_guided for m in _relu_modules(model, "guided_backprop")})


@register("deconvnet", family="propagation")
def deconvnet(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0) -> torch.Tensor:
    """Deconvnet: at every ReLU, the ReLU of the backward signal, the forward mask ignored.

    Zeiler & Fergus (2014), Sec. 2.1 "Rectification"; equal to Captum's ``Deconvolution``.
    """
    return _run(model, x, target, seed, {m: rules.relu_deconvnet for m in _relu_modules(model, "deconvnet")})


@register("rectgrad", family="propagation")
def rectgrad(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, percentile: float = 98.0,
             times_input: bool = False) -> torch.Tensor:
    """RectGrad: at every ReLU, the gradient where activation x gradient exceeds its percentile.

    Kim et al. (2019), "Why are saliency maps noisy?", the RectGrad rule with tau the q-th percentile. Details
    follow the authors' code (github.com/1202kbs/Rectified-Gradient, ``RectifiedGradient``):
    importance = ReLU output x incoming gradient; threshold = the ``percentile``-th percentile
    (nearest rank) of one sample's importances over the whole layer (channels and positions), for
    every nn.ReLU module, each call of a reused module on its own; strict ``>``; no other mask. The
    last layer has no ReLU, so nothing is excluded. The authors' code multiplies the final
    gradient by the input and zeroes the border gradient of "SAME"-padded convolutions (a
    visual fix); ``times_input=True`` gives the former, the latter is not implemented. The default
    returns the rectified gradient itself, comparable with Guided Backprop and Deconvnet.
    """
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 <= percentile < 100:
        raise ValueError(f"percentile must be a number in [0, 100), got {percentile!r}")
    rule = rules.relu_rectgrad(float(percentile))
    grad = _run(model, x, target, seed, {m: rule for m in _relu_modules(model, "rectgrad")})
    return grad * x if times_input else grad


# ----------------------------------------------------------------------------- LRP composites

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# eval-mode dropout is the identity; _DropoutNd is the base of every dropout module
_GRADIENT = (nn.ReLU, nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.modules.dropout._DropoutNd, nn.Identity)
_NORM = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, Add)
_SUPPORTED = ("Conv2d, Linear, BatchNorm2d right after a Conv2d, ReLU, MaxPool2d, AvgPool2d, adaptive pooling, "
              "Flatten, Dropout, Identity, saliency_sanity.models.architectures.Add")

LayerRule = Callable[[nn.Module, torch.Tensor, "torch.Tensor | None"], rules.Rule]


def _basic_block_forward(block, x, add):
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    identity = x if block.downsample is None else block.downsample(x)
    return block.relu(add(out, identity))


def _bottleneck_forward(block, x, add):
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.relu(block.bn2(block.conv2(out)))
    out = block.bn3(block.conv3(out))
    identity = x if block.downsample is None else block.downsample(x)
    return block.relu(add(out, identity))


@contextlib.contextmanager
def _explicit_residual_sums(model: nn.Module) -> Iterator[list[Add]]:
    """Give every torchvision ResNet block an explicit ``Add`` for the pass (Zennit's ResNet
    canonizer does the same with its ``Sum``); the original ``forward`` is restored on exit."""
    try:
        from torchvision.models.resnet import BasicBlock, Bottleneck
    except ImportError:  # no torchvision, no torchvision blocks
        yield []
        return
    forwards = {BasicBlock: _basic_block_forward, Bottleneck: _bottleneck_forward}
    patched: list[nn.Module] = []
    adds: list[Add] = []
    try:
        for m in model.modules():
            if type(m) in forwards and "forward" not in m.__dict__:
                add = Add()
                fn = forwards[type(m)]
                m.forward = types.MethodType(lambda block, x, fn=fn, add=add: fn(block, x, add), m)
                patched.append(m)
                adds.append(add)
        yield adds
    finally:
        for m in patched:
            del m.forward


class _LRPComposite:
    """Which rule each module gets. Decided before the pass from the module types, and during the
    forward pass (as a ``rules.Tracer``) for what types cannot tell: which Conv2d each BatchNorm2d
    follows, and which layer comes first (``first_rule``, e.g. z^B for the pixels)."""

    def __init__(self, model: nn.Module, layer_rule: LayerRule, first_rule: LayerRule | None = None,
                 extra_sums: list[Add] = (), epsilon: float = 1e-6):
        self.layer_rule, self.first_rule = layer_rule, first_rule
        self.names = {m: n or "<model>" for n, m in model.named_modules()}
        self.first: nn.Module | None = None
        self.bn_after: dict[nn.Module, nn.BatchNorm2d] = {}  # conv -> the BatchNorm it feeds
        self._produced: dict[int, tuple[nn.Module, torch.Tensor]] = {}  # tensors kept so ids stay unique
        self._unpaired: list[nn.Module] = []
        self._rules: dict[nn.Module, rules.Rule] = {}
        self.assignments: dict[nn.Module, rules.Rule] = {}
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
                    raise ValueError(f"LRP supports zero-padded convolutions; layer {self.names[m]!r} has "
                                     f"padding_mode={m.padding_mode!r}")
                self.assignments[m] = self._layer(m)
            elif isinstance(m, nn.BatchNorm2d):
                if m.running_mean is None or m.running_var is None:
                    raise ValueError(f"BatchNorm2d {self.names[m]!r} keeps no running statistics "
                                     "(track_running_stats=False), so LRP cannot merge it into its convolution")
                self.assignments[m] = rules.lrp_pass
            elif isinstance(m, _NORM):
                self.assignments[m] = rules.lrp_norm(m, epsilon)
            elif isinstance(m, _GRADIENT):
                continue
            elif isinstance(m, _CONTAINERS) or (any(True for _ in m.children())
                                                and not any(True for _ in m.parameters(recurse=False))):
                continue
            else:
                raise ValueError(f"LRP has no rule for layer {self.names[m]!r} ({type(m).__name__}); supported: "
                                 f"{_SUPPORTED}. Other layers would pass a plain gradient, which is not LRP")
        for add in extra_sums:
            self.assignments[add] = rules.lrp_norm(add, epsilon)

    # -- rules.Tracer: the forward pass tells which convolution each BatchNorm follows
    def before(self, module: nn.Module, args: tuple) -> None:
        if self.first is None and isinstance(module, (nn.Conv2d, nn.Linear)):
            self.first = module
        if isinstance(module, nn.BatchNorm2d):
            conv = self._produced.get(id(args[0]), (None,))[0]
            if conv is None or self.bn_after.get(conv, module) is not module:
                self._unpaired.append(module)
            else:
                self.bn_after[conv] = module

    def after(self, module: nn.Module, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            self._produced[id(output)] = (module, output)

    def check(self) -> None:
        """After the forward pass: every BatchNorm must have followed a convolution directly."""
        self._produced.clear()
        if self._unpaired:
            names = sorted({self.names[m] for m in self._unpaired})
            raise ValueError(f"LRP merges each BatchNorm2d into the Conv2d right before it, but {names} do not "
                             "directly follow a Conv2d module")

    def _parameters(self, conv: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The layer's weight and bias, merged with the BatchNorm after it if there is one."""
        w, b = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
        bn = self.bn_after.get(conv)
        if bn is None:
            return w, b
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.detach()
        shift = -bn.running_mean * scale + (0 if bn.bias is None else bn.bias.detach())
        merged_bias = shift if b is None else b * scale + shift
        return w * scale.view(-1, *[1] * (w.dim() - 1)), merged_bias

    def _layer(self, module: nn.Module) -> rules.Rule:
        """A rule made at backward time, when the forward pass has told which BatchNorm follows and
        which layer came first."""

        def rule(grad, x):
            if module not in self._rules:
                make = self.first_rule if self.first_rule is not None and module is self.first else self.layer_rule
                self._rules[module] = make(module, *self._parameters(module))
            return self._rules[module](grad, x)

        return rule


def _lrp(model: nn.Module, x: torch.Tensor, target, seed: int, layer_rule: LayerRule,
         first_rule: LayerRule | None = None) -> torch.Tensor:
    with _explicit_residual_sums(model) as sums:
        composite = _LRPComposite(model, layer_rule, first_rule, sums)
        return _run(model, x, target, seed, composite.assignments, start="logit", tracer=composite,
                    after_forward=composite.check)


def _number(name: str, value, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{name} must be a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return float(value)


@register("lrp_epsilon", family="propagation")
def lrp_epsilon(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, epsilon: float = 0.25,
                relative: bool = False) -> torch.Tensor:
    """LRP-epsilon on every Conv2d / Linear; relevance starts as the target logit.

    Bach et al. (2015), Eq. 58: R_i = sum_j x_i w_ij / (z_j + eps sign(z_j)) R_j, as Zennit's
    ``Epsilon(epsilon)``. The default eps = 0.25 is our choice: large enough to act as the rule's
    parameter rather than a stabiliser -- it absorbs the relevance of weak or contradictory outputs
    (|z_j| of the order of eps), which is what makes LRP-epsilon differ from LRP-0, and LRP-0 IS
    Input x Gradient on ReLU networks with max pooling (biases included; Montavon et al. 2019,
    "Layer-Wise Relevance Propagation: An Overview"); ``epsilon=0`` or Zennit's stabiliser default
    1e-6 give that identity (up to the 1e-6 stabilisers of the Norm rule in a ResNet),
    so the former default 1e-6 made this method a duplicate of ``input_x_gradient``. 0.25 is the
    constant the LRP literature pairs with its rules (Zennit's Gamma default gamma = 0.25) and the value
    the project's Zennit comparison already tests. As an absolute value it presumes layer outputs of
    order 1: the untrained project models have per-layer output RMS 0.01-0.3 on 28x28 inputs in
    [0, 1], where 0.25 absorbs most of the relevance. ``relative=True`` makes the rule scale-free:
    eps = ``epsilon`` x the RMS of each sample's layer output (Zennit's ``Stabilizer(epsilon,
    norm_scale=True)``; Montavon et al.'s LRP tutorial uses 0.1 x that "std"), unchanged when a
    layer's weights are rescaled, e.g. by re-initialisation in the randomization checks.
    """
    epsilon = _number("epsilon", epsilon, minimum=0.0)
    if not isinstance(relative, bool):
        raise ValueError(f"relative must be True or False, got {relative!r}")
    return _lrp(model, x, target, seed, lambda m, w, b: rules.lrp_epsilon(m, w, b, epsilon, relative))


@register("lrp_alpha_beta", family="propagation")
def lrp_alpha_beta(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, alpha: float = 2.0,
                   beta: float = 1.0) -> torch.Tensor:
    """LRP-alpha-beta on every Conv2d / Linear; alpha=2, beta=1 by default (signed).

    Bach et al. (2015), Eq. 60, with alpha - beta = 1; alpha=1, beta=0 keeps only positive
    contributions (positive propagation, Khakzar et al. 2020). As Zennit's ``AlphaBeta``.
    """
    alpha, beta = _number("alpha", alpha), _number("beta", beta, minimum=0.0)
    if abs(alpha - beta - 1) > 1e-9:
        raise ValueError(f"LRP-alpha-beta needs alpha - beta = 1 (e.g. alpha=2, beta=1 or alpha=1, beta=0), "
                         f"got alpha={alpha}, beta={beta}")
    return _lrp(model, x, target, seed, lambda m, w, b: rules.lrp_alpha_beta(m, w, b, alpha, beta))


def _pixel_bounds(x: torch.Tensor, low, high, method: str) -> tuple[float, float]:
    """Validate the z^B rule's pixel range [low, high] against the images."""
    low, high = _number("low", low), _number("high", high)
    if low >= high:
        raise ValueError(f"low must be below high, got low={low}, high={high}")
    lo, hi = x.min().item(), x.max().item()
    if lo < low or hi > high:
        raise ValueError(f"{method} uses the z^B rule for inputs in [low, high] = [{low}, {high}], but x lies in "
                         f"[{lo:.4g}, {hi:.4g}]; pass low= and high= the range of your (normalised) pixels")
    return low, high


@register("lrp_zplus", family="propagation")
def lrp_zplus(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, low: float = 0.0,
              high: float = 1.0) -> torch.Tensor:
    """LRP-z+ on every Conv2d / Linear but the first, which gets z^B for pixels in [low, high].

    Montavon et al. (2017), deep Taylor decomposition: z+ for ReLU layers, z^B for the bounded input
    layer; as Zennit's ``ZPlus`` and ``ZBox`` rules. On the non-negative
    inputs of layers after a ReLU z+ equals alpha1-beta0; z^B keeps the first layer's relevance
    signed in the pixel domain, where z+ would ignore negative weights on bright pixels.
    """
    low, high = _pixel_bounds(x, low, high, "lrp_zplus")
    return _lrp(model, x, target, seed, lambda m, w, b: rules.lrp_alpha_beta(m, w, b, 1.0, 0.0),
                first_rule=lambda m, w, b: rules.lrp_zbox(m, w, b, low, high))


@register("lrp_composite", family="propagation")
def lrp_composite(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, low: float = 0.0,
                  high: float = 1.0, epsilon: float = 1e-6, gamma: float = 0.25) -> torch.Tensor:
    """LRP composite: epsilon on Linear layers, gamma on Conv2d, z^B on the first (pixel) layer.

    Montavon et al. (2019), "Layer-Wise Relevance Propagation: An Overview", Sec. 10.3 (LRP-0/epsilon
    for upper, LRP-gamma for lower layers, z^B for pixels in [low, high], Montavon et al. 2017);
    equal to Zennit's ``EpsilonGammaBox(low, high, epsilon, gamma)`` with the same parameters and
    its BatchNorm / ResNet canonizers (BatchNorm merged into the convolution before it, residual
    sums and average pooling split by the Norm rule). The defaults are Zennit's: epsilon = 1e-6
    (LRP-0 in the dense layers, as Montavon et al. recommend for the top layers) and gamma = 0.25
    (the overview's VGG-16 value). Gamma is generalised to signed inputs as Zennit's ``Gamma``
    (:func:`rules.lrp_gamma`); it favours positive contributions but keeps negative ones, so the
    composite is signed propagation. The first layer is the first Conv2d or Linear called in the
    forward pass (Zennit: the first Conv2d in module order; the same for convolutional nets).
    """
    low, high = _pixel_bounds(x, low, high, "lrp_composite")
    epsilon = _number("epsilon", epsilon, minimum=0.0)
    gamma = _number("gamma", gamma, minimum=0.0)

    def layer_rule(m, w, b):
        if isinstance(m, nn.Linear):
            return rules.lrp_epsilon(m, w, b, epsilon)
        return rules.lrp_gamma(m, w, b, gamma)

    return _lrp(model, x, target, seed, layer_rule, first_rule=lambda m, w, b: rules.lrp_zbox(m, w, b, low, high))
