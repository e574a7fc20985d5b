"""The stages of a randomization run: which layers, grouped how, in which order.

Adebayo et al. (2018), Sec. 3.1 (cascading and independent re-initialisation); Hedström et al. (2023)
(bottom-up order). Planning only: nothing here changes a model's weights, which is
:func:`saliency_sanity.checks.randomize.randomized`'s job.

- **Stages** follow the *forward* order, traced by one forward pass on ``example_input`` (the
  first call of a module fixes its position; a module called several times is one stage), not
  the registration order. ``unit="layer"``: every module that owns parameters directly (Conv,
  Linear, BatchNorm, LayerNorm, ...). ``unit="block"``: see :func:`default_blocks`, or name the
  blocks with ``blocks=[...]``. Parameters owned by the root module itself are never randomized.
  The tracing pass is an ordinary forward pass (eval mode, no gradients): hooks the caller has
  registered see it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .._core.guard import preserved
from .._core.validation import check_choice, check_model

__all__ = ["Stage", "randomization_stages", "default_blocks"]

MODES = ("cascading", "independent")
ORDERS = ("top_down", "bottom_up")
UNITS = ("layer", "block")
BATCHNORM_POLICIES = ("randomize_affine", "reset", "skip")
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# Image sizes tried, in this order, when a model must be traced without an example input.
_DUMMY_SIZES = (28, 32, 64, 224)


@dataclass(frozen=True)
class Stage:
    """One step of a randomization run (Adebayo et al. 2018, Sec. 3.1).

    ``index`` 0 is the trained model (``name="original"``, no layers). ``name`` is the layer or
    block randomized at this stage, ``layers`` the module names it re-draws, ``randomized_so_far``
    every module randomized while the stage is active (cascading: this and all earlier stages;
    independent: ``layers``).
    """

    index: int
    name: str
    layers: tuple[str, ...]
    randomized_so_far: tuple[str, ...]
    mode: str
    order: str


# ----------------------------------------------------------------------------- planning


def _owns_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _param_layers(model: nn.Module, batchnorm: str) -> list[str]:
    """Names of the modules that own parameters directly, in registration order."""
    return [name for name, module in model.named_modules()
            if name and _owns_parameters(module) and not (batchnorm == "skip" and isinstance(module, _BATCHNORMS))]


def _run(model: nn.Module, example_input) -> None:
    if isinstance(example_input, (tuple, list)):
        model(*example_input)
    else:
        model(example_input)


def _forward_order(model: nn.Module, names: Sequence[str], example_input) -> list[str]:
    """``names`` ordered by the first call of each module in one forward pass (eval mode, no grad)."""
    seen: dict[str, None] = {}  # insertion-ordered set: a reused module keeps its first position
    modules = dict(model.named_modules())
    with preserved(model):  # eval mode (no BatchNorm statistics update); hooks removed on any exit
        handles = [modules[n].register_forward_pre_hook(lambda _m, _i, n=n: seen.setdefault(n))
                   for n in names]
        try:
            with torch.no_grad():
                _run(model, example_input)
        finally:
            for h in handles:
                h.remove()
    # Modules the forward pass never calls keep their registration order, after the called ones.
    return list(seen) + [n for n in names if n not in seen]


def _dummy_inputs(model: nn.Module) -> list[torch.Tensor]:
    """Inputs to trace a model that came without an example: zeros shaped for the first (in
    registration order) Conv1d/2d/3d at the sizes in ``_DUMMY_SIZES``, or for the first Linear."""
    conv_dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
    for m in model.modules():
        if type(m) in conv_dims or isinstance(m, nn.Linear):
            p = m.weight
            if isinstance(m, nn.Linear):
                return [torch.zeros(1, m.in_features, device=p.device, dtype=p.dtype)]
            dims = conv_dims[type(m)]
            return [torch.zeros(1, m.in_channels, *([s] * dims), device=p.device, dtype=p.dtype)
                    for s in _DUMMY_SIZES]
    return []


def _traced_order(model: nn.Module, names: list[str], example_input) -> list[str]:
    if example_input is not None:
        if not isinstance(example_input, (torch.Tensor, tuple, list)):
            raise TypeError(f"example_input must be a torch.Tensor (or a tuple of the model's inputs), "
                            f"got {type(example_input).__name__}")
        try:
            return _forward_order(model, names, example_input)
        except (RuntimeError, ValueError, TypeError) as err:
            shape = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else "tuple"
            raise ValueError(f"tracing the forward order of {type(model).__name__} on example_input of shape "
                             f"{shape} failed ({err}); pass an input the model accepts, e.g. x[:1] on the "
                             "model's device") from err
    candidates = _dummy_inputs(model)
    for x in candidates:
        try:
            return _forward_order(model, names, x)
        except (RuntimeError, ValueError):
            continue
    tried = [tuple(x.shape) for x in candidates]
    raise ValueError(f"cannot trace the forward order of {type(model).__name__} without an input "
                     f"(tried zero inputs of shapes {tried}); pass example_input=x[:1]")


def default_blocks(model: nn.Module) -> list[str]:
    """The default blocks of ``unit="block"``: the model's top-level children that hold parameters.

    If that gives fewer than 3 blocks (e.g. ``features``/``classifier`` containers, as in our
    ``VGGNet`` or torchvision's VGG), each such child is replaced by its own children that hold
    parameters, unless the child owns parameters directly or has no such children (then it stays
    whole). ResNets give ``stem``/``conv1``, ``bn1``, ``layer1``..``layerN``, ``fc``.
    """
    top = [(n, m) for n, m in model.named_children() if _has_parameters(m)]
    if len(top) >= 3:
        return [n for n, _ in top]
    out = []
    for name, module in top:
        kids = [f"{name}.{k}" for k, m in module.named_children() if _has_parameters(m)]
        out += [name] if _owns_parameters(module) or not kids else kids
    return out


def _block_groups(model: nn.Module, ordered: list[str], blocks: Sequence[str] | None) -> list[tuple[str, tuple]]:
    modules = dict(model.named_modules())
    if blocks is None:
        names = default_blocks(model)
    else:
        if isinstance(blocks, str) or not all(isinstance(b, str) for b in blocks):
            raise TypeError(f"blocks must be a list of module names such as {default_blocks(model)}, got {blocks!r}")
        names = list(blocks)
        if not names:
            raise ValueError(f"blocks is empty; name at least one submodule, e.g. {default_blocks(model)}")
        unknown = [b for b in names if b not in modules or not b]
        if unknown:
            raise ValueError(f"unknown block(s) {unknown} in {type(model).__name__}; blocks must name submodules "
                             f"as in model.named_modules(), e.g. {default_blocks(model)}")
        if len(set(names)) != len(names):
            raise ValueError(f"blocks {names} name a module twice; give each block once")
    members = {b: tuple(n for n in ordered if n == b or n.startswith(b + ".")) for b in names}
    empty = [b for b, m in members.items() if not m]
    if empty:
        raise ValueError(f"block(s) {empty} hold no parameters to randomize (BatchNorm layers are excluded "
                         "with batchnorm='skip'); choose blocks that contain Conv/Linear/... layers")
    owner: dict[str, str] = {}
    for b, layers in members.items():
        for layer in layers:
            if layer in owner:
                raise ValueError(f"blocks {owner[layer]!r} and {b!r} overlap (both contain {layer!r}); "
                                 "name disjoint submodules")
            owner[layer] = b
    return sorted(members.items(), key=lambda kv: ordered.index(kv[1][0]))


def randomization_stages(model: nn.Module, *, unit: str = "layer", order: str = "top_down",
                         mode: str = "cascading", example_input=None, batchnorm: str = "randomize_affine",
                         blocks: Sequence[str] | None = None) -> list[Stage]:
    """The stages :func:`randomized` goes through, computed without changing the model.

    Adebayo et al. (2018), Sec. 3.1. For planning and for labelling plots. The forward order is
    traced on ``example_input``; without one, zero inputs shaped for the first Conv/Linear layer
    (registration order) are tried at sizes 28, 32, 64 and 224 and a ValueError says when none fits.
    """
    check_model(model)
    check_choice(unit, UNITS, "unit")
    check_choice(order, ORDERS, "order")
    check_choice(mode, MODES, "mode")
    check_choice(batchnorm, BATCHNORM_POLICIES, "batchnorm")
    if blocks is not None and unit != "block":
        raise ValueError(f"blocks= is only used with unit='block' (got unit={unit!r}); pass unit='block'")
    layers = _param_layers(model, batchnorm)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no submodule with parameters to randomize")
    ordered = _traced_order(model, layers, example_input)
    if unit == "layer":
        groups = [(n, (n,)) for n in ordered]
    else:
        groups = _block_groups(model, ordered, blocks)
    if order == "top_down":
        groups = groups[::-1]
    plan = [Stage(0, "original", (), (), mode, order)]
    so_far: tuple[str, ...] = ()
    for i, (name, members) in enumerate(groups, start=1):
        so_far = so_far + members if mode == "cascading" else members
        plan.append(Stage(i, name, members, so_far, mode, order))
    return plan
