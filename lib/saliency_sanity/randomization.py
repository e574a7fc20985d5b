"""Model-parameter randomization as a context manager over stages in forward order.

Adebayo et al. (2018), Sec. 3.1: *cascading* re-initialisation from the logits downwards,
cumulatively, and *independent* re-initialisation of one layer at a time with the rest kept
trained; their small-CNN re-init draws from a truncated normal with std 0.01. Khakzar et al. use
N(0, 0.1) top-down; Hedström et al. (2023) recommend the bottom-up order: both orders exist here.

Binder et al. (2023) point out that top-down randomization keeps the scale of the activations that
reach the randomized layers; BatchNorm therefore gets an explicit policy (``batchnorm=``):
``"randomize_affine"`` (default: gamma/beta re-drawn, running statistics kept, so activations keep
their trained normalisation), ``"reset"`` (gamma/beta re-drawn and running_mean=0,
running_var=1) or ``"skip"`` (BatchNorm layers are never stages and never change).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from ._validation import check_choice, check_model

MODES = ("cascading", "independent")
ORDERS = ("top_down", "bottom_up")
UNITS = ("layer", "block")
INITS = ("truncated_normal", "normal", "uniform", "default")
BIAS_POLICIES = ("zero", "init", "keep")
BATCHNORM_POLICIES = ("randomize_affine", "reset", "skip")
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class Stage:
    """One step of a randomization run. Stage 0 is the trained model (``name="original"``)."""

    index: int
    name: str
    layers: tuple[str, ...]
    randomized_so_far: tuple[str, ...]
    mode: str
    order: str


class Stages:
    """The stages of a :func:`randomized` block: iterate to move the model through them."""

    def __init__(self, plan: list[Stage], apply: Callable[[Stage], None]):
        self._plan, self._apply = plan, apply

    def __len__(self) -> int:
        return len(self._plan)

    def __iter__(self) -> Iterator[Stage]:
        for stage in self._plan:
            self._apply(stage)
            yield stage

    @property
    def plan(self) -> list[Stage]:
        return list(self._plan)


def _param_layers(model: nn.Module, batchnorm: str) -> dict[str, nn.Module]:
    """Modules that own parameters directly (not through children)."""
    out = {}
    for name, module in model.named_modules():
        if not name or not any(True for _ in module.parameters(recurse=False)):
            continue
        if isinstance(module, _NORMS) and batchnorm == "skip":
            continue
        out[name] = module
    return out


def _forward_order(model: nn.Module, names: Sequence[str], example_input: torch.Tensor) -> list[str]:
    """Order ``names`` by the first call of each module in one traced forward pass."""
    seen: list[str] = []
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_pre_hook(lambda m, i, n=n: seen.append(n) if n not in seen else None)
               for n in names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    unused = [n for n in names if n not in seen]
    return seen + unused  # modules never called keep registration order at the end


def _dummy_inputs(model: nn.Module) -> list[torch.Tensor]:
    """Candidate inputs to trace a model without an example: the first Conv2d's channels at the
    usual image sizes, or the first Linear's features."""
    for m in model.modules():
        p = next(m.parameters(recurse=False), None)
        if isinstance(m, nn.Conv2d):
            return [torch.zeros(1, m.in_channels, s, s, device=p.device, dtype=p.dtype) for s in (28, 32, 64, 224)]
        if isinstance(m, nn.Linear):
            return [torch.zeros(1, m.in_features, device=p.device, dtype=p.dtype)]
    return []


def _traced_order(model: nn.Module, names: list[str], example_input: torch.Tensor | None) -> list[str]:
    if example_input is not None:
        return _forward_order(model, names, example_input)
    for x in _dummy_inputs(model):
        try:
            return _forward_order(model, names, x)
        except RuntimeError:
            continue
    raise ValueError(f"cannot trace the forward order of {type(model).__name__} without an input; "
                     "pass example_input=x[:1]")


def default_blocks(model: nn.Module) -> list[str]:
    """Top-level children that hold parameters; if fewer than 3, their children instead (so that
    e.g. ``features``/``classifier`` containers split into their layers)."""
    top = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
    if len(top) >= 3:
        return top
    deeper = []
    for n in top:
        kids = [f"{n}.{k}" for k, m in dict(model.named_modules())[n].named_children()
                if any(True for _ in m.parameters())]
        deeper += kids or [n]
    return deeper


def randomization_stages(model: nn.Module, *, unit: str = "layer", order: str = "top_down",
                         mode: str = "cascading", example_input: torch.Tensor | None = None,
                         batchnorm: str = "randomize_affine", blocks: Sequence[str] | None = None) -> list[Stage]:
    """The list of stages :func:`randomized` would go through, without changing the model."""
    check_model(model)
    check_choice(unit, UNITS, "unit")
    check_choice(order, ORDERS, "order")
    check_choice(mode, MODES, "mode")
    check_choice(batchnorm, BATCHNORM_POLICIES, "batchnorm")
    layers = _param_layers(model, batchnorm)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no parameters to randomize")
    ordered = _traced_order(model, list(layers), example_input)
    if unit == "layer":
        groups = [(n, (n,)) for n in ordered]
    else:
        names = list(blocks) if blocks is not None else default_blocks(model)
        modules = dict(model.named_modules())
        unknown = [b for b in names if b not in modules]
        if unknown:
            raise ValueError(f"unknown block(s) {unknown}; blocks must name submodules, e.g. {default_blocks(model)}")
        members = {b: tuple(n for n in ordered if n == b or n.startswith(b + ".")) for b in names}
        empty = [b for b, m in members.items() if not m]
        if empty:
            raise ValueError(f"block(s) {empty} hold no parameters to randomize")
        groups = sorted(members.items(), key=lambda kv: ordered.index(kv[1][0]))
    if order == "top_down":
        groups = groups[::-1]
    plan = [Stage(0, "original", (), (), mode, order)]
    so_far: tuple[str, ...] = ()
    for i, (name, members) in enumerate(groups, start=1):
        so_far = so_far + members if mode == "cascading" else members
        plan.append(Stage(i, name, members, so_far, mode, order))
    return plan


def layer_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded by (seed, layer name) through a stable hash, so a layer gets the same
    draw whatever the mode, order or Python process."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _draw(shape, init: str, std: float, gen: torch.Generator) -> torch.Tensor:
    if init == "truncated_normal":
        out = torch.empty(shape)
        nn.init.trunc_normal_(out, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=gen)
        return out
    if init == "normal":
        return torch.randn(shape, generator=gen) * std
    if init == "uniform":
        bound = std * math.sqrt(3)  # same variance as the normal with this std
        return (torch.rand(shape, generator=gen) * 2 - 1) * bound
    raise ValueError(f"unknown init {init!r}")


@torch.no_grad()
def randomize_layer(module: nn.Module, name: str, *, init="truncated_normal", std: float = 0.01, seed: int = 0,
                    bias: str = "zero", batchnorm: str = "randomize_affine") -> None:
    """Re-initialise the parameters ``module`` owns directly, from the (seed, name) generator."""
    gen = layer_generator(seed, name)
    if callable(init):
        init(module, gen)
        return
    if init == "default":
        if not hasattr(module, "reset_parameters"):
            raise ValueError(f"layer {name!r} ({type(module).__name__}) has no reset_parameters for init='default'")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(gen.initial_seed() % (2**63)))
            module.reset_parameters()
    else:
        for pname, p in module.named_parameters(recurse=False):
            if pname == "bias" and bias != "init":
                if bias == "zero":
                    p.zero_()
                continue
            p.copy_(_draw(p.shape, init, std, gen).to(p.device, p.dtype))
    if isinstance(module, _NORMS) and batchnorm == "reset" and module.running_mean is not None:
        module.running_mean.zero_()
        module.running_var.fill_(1.0)


@contextlib.contextmanager
def randomized(model: nn.Module, *, mode: str = "cascading", order: str = "top_down", unit: str = "layer",
               init: str | Callable = "truncated_normal", std: float = 0.01, seed: int = 0, bias: str = "zero",
               batchnorm: str = "randomize_affine", blocks: Sequence[str] | None = None,
               example_input: torch.Tensor | None = None) -> Iterator[Stages]:
    """Move ``model`` through randomization stages; restore it bit-identically on exit.

    ``with randomized(model) as stages: for stage in stages: ...`` — inside the loop body the model
    holds that stage's weights (stage 0: the trained weights). One copy of the state is kept for
    restoration (no copy per stage); the model object itself is changed in place, so hooks and
    references stay valid. Restored on normal exit, on ``break`` and on exceptions.
    """
    check_choice(bias, BIAS_POLICIES, "bias")
    if not callable(init):
        check_choice(init, INITS, "init")
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    plan = randomization_stages(model, unit=unit, order=order, mode=mode, example_input=example_input,
                                batchnorm=batchnorm, blocks=blocks)
    modules = dict(model.named_modules())
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    touched: set[str] = set()

    def restore(names):
        with torch.no_grad():
            for layer in names:
                for k, v in modules[layer].state_dict(keep_vars=True).items():
                    v.copy_(saved[f"{layer}.{k}"])

    def apply(stage: Stage) -> None:
        if mode == "independent":
            restore(touched)
            touched.clear()
        for layer in stage.layers:
            randomize_layer(modules[layer], layer, init=init, std=std, seed=seed, bias=bias, batchnorm=batchnorm)
            touched.add(layer)

    try:
        yield Stages(plan, apply)
    finally:
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                v.copy_(saved[k])
