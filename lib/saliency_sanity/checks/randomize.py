"""Model-parameter randomization as a context manager over stages in forward order.

Adebayo et al. (2018), Sec. 3.1: *cascading* re-initialisation from the logits downwards,
cumulatively, and *independent* re-initialisation of one layer (or block) at a time with the rest
kept trained; their small-CNN re-init draws from a truncated normal with std 0.01. Khakzar et al.
(2020) re-initialise top-down from N(0, 0.1) (``init="normal", std=0.1``); Hedström et al. (2023)
recommend the bottom-up order. Both orders and both modes exist here::

    with randomized(model, mode="cascading", order="top_down", example_input=x[:1]) as stages:
        for stage in stages:      # stage 0 is the trained model ("original")
            ...                   # here the model holds this stage's weights

Choices this module makes (all are options; the defaults are stated, not claimed as a paper's):

- **Stages** follow the *forward* order, traced by one forward pass on ``example_input`` (the
  first call of a module fixes its position; a module called several times is one stage), not
  the registration order. ``unit="layer"``: every module that owns parameters directly (Conv,
  Linear, BatchNorm, LayerNorm, ...). ``unit="block"``: see :func:`default_blocks`, or name the
  blocks with ``blocks=[...]``. Parameters owned by the root module itself are never randomized.
  The tracing pass is an ordinary forward pass (eval mode, no gradients): hooks the caller has
  registered see it.
- **Draws**: every layer has its own CPU ``torch.Generator`` seeded from ``(seed, layer name)``
  through :func:`saliency_sanity._core.draws.keyed_seed`, so a layer gets the same weights whatever the
  mode, order, dtype or device, and reruns are identical. Draws are made in float32 on the CPU,
  then copied to the parameter's device and dtype.
- **init**: ``"truncated_normal"`` (N(0, std²) truncated at ±2 std, as TensorFlow's
  ``truncated_normal`` used by Adebayo et al.; its empirical std is 0.88 std), ``"normal"``
  (N(0, std²)), ``"uniform"`` (U(-√3 std, √3 std), the same variance as the normal), ``"default"``
  (the module's own ``reset_parameters`` run on CPU under a generator seeded from the layer's
  seed) or a callable ``init(module, generator)`` that overwrites the module's parameters in place.
- **bias** (default ``"zero"``, our choice): ``"zero"`` sets biases to 0, as freshly initialised
  layers usually start (so a randomized layer keeps no trained offset); ``"init"`` draws them
  like the weights (for ``"default"``/callables: keeps what the init wrote); ``"keep"`` leaves
  the trained biases. A parameter counts as a bias when it is called ``bias`` (BatchNorm's beta).
- **BatchNorm** (``batchnorm=``, default ``"randomize_affine"``): gamma and beta are parameters and
  are re-drawn like any other (beta follows the bias policy), while the running statistics, which
  are buffers, keep their trained values, so a randomized BatchNorm still standardises its input
  as the trained network did. Binder et al. (2023) point out that top-down randomization keeps the
  scale of the activations reaching the randomized layers; keeping the statistics keeps that
  normalisation explicit rather than letting it change with the policy. ``"reset"`` also sets
  running_mean=0, running_var=1 (and the batch counter to 0), removing the trained
  normalisation; ``"skip"`` makes BatchNorm layers no stages at all, never changed. Other
  normalisation layers (LayerNorm, GroupNorm) are ordinary layers. Buffers change only through
  ``batchnorm="reset"``.

Restoration: one copy of the model's state (parameters and buffers) is kept for the whole block,
never a copy per stage; moving between stages re-draws only the layers new to the stage and
restores only the layers that leave it (in independent mode: the previous stage's). On exit,
normal, by ``break`` or by an exception, every parameter and buffer is copied back bit-identically.
The model object is changed in place, so references and hooks held by the caller stay valid;
``requires_grad`` flags and train/eval modes are not touched.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
import math
import numbers
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from .._core.draws import keyed_seed
from .._core.guard import preserved
from .._core.validation import check_choice, check_model

__all__ = ["Stage", "Stages", "randomized", "randomization_stages", "randomize_layer", "layer_generator",
           "default_blocks"]

MODES = ("cascading", "independent")
ORDERS = ("top_down", "bottom_up")
UNITS = ("layer", "block")
INITS = ("truncated_normal", "normal", "uniform", "default")
BIAS_POLICIES = ("zero", "init", "keep")
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


class Stages:
    """The stages of a :func:`randomized` block: iterating moves the model through them.

    Each step changes only what differs from the stage before (new layers re-drawn, leaving layers
    restored from the saved copy), so iterating again, or after a ``break``, starts from the
    trained model. Usable only inside the ``with`` block.
    """

    def __init__(self, plan: list[Stage], model: nn.Module, saved: dict[str, torch.Tensor], randomize: Callable):
        self._plan, self._saved, self._randomize = plan, saved, randomize
        self._modules = dict(model.named_modules())
        self._current: tuple[str, ...] = ()
        self._open = True

    def __len__(self) -> int:
        return len(self._plan)

    def __getitem__(self, i: int) -> Stage:
        return self._plan[i]

    @property
    def plan(self) -> list[Stage]:
        return list(self._plan)

    def __iter__(self) -> Iterator[Stage]:
        for stage in self._plan:
            self._move_to(stage)
            yield stage

    def _restore(self, names) -> None:
        with torch.no_grad():
            for layer in names:
                for key, value in self._modules[layer].state_dict(keep_vars=True).items():
                    value.copy_(self._saved[f"{layer}.{key}"])

    def _move_to(self, stage: Stage) -> None:
        if not self._open:
            raise RuntimeError("the stages of randomized() can only be iterated inside its `with` block; "
                               "the model has been restored to its trained weights")
        target = stage.randomized_so_far
        self._restore([n for n in self._current if n not in target])
        for layer in target:
            if layer not in self._current:
                self._randomize(self._modules[layer], layer)
        self._current = target

    def _close(self) -> None:
        self._open = False
        self._current = ()


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


# ----------------------------------------------------------------------------- drawing


def layer_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator keyed by (seed, "layer", layer name) (:func:`saliency_sanity._core.draws.keyed_seed`,
    not Python's salted ``hash``), so a layer gets the same draw whatever the mode, order, batch or
    process."""
    return torch.Generator().manual_seed(keyed_seed(int(seed), "layer", name))


def _check_options(init, std, bias: str, batchnorm: str) -> None:
    if not callable(init):
        check_choice(init, INITS, "init")
    check_choice(bias, BIAS_POLICIES, "bias")
    check_choice(batchnorm, BATCHNORM_POLICIES, "batchnorm")
    if isinstance(std, bool) or not isinstance(std, numbers.Real) or not math.isfinite(std) or std <= 0:
        raise ValueError(f"std must be > 0 and finite, got {std!r}; Adebayo et al. use 0.01, Khakzar et al. 0.1")


def _draw(shape, init: str, std: float, gen: torch.Generator) -> torch.Tensor:
    """Float32 CPU draw, so that CPU and GPU models (and any dtype) receive the same values."""
    if init == "truncated_normal":
        out = torch.empty(shape, dtype=torch.float32)
        return nn.init.trunc_normal_(out, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=gen)
    if init == "normal":
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std
    bound = std * math.sqrt(3)  # uniform: the same variance as the normal with this std
    return (torch.rand(shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound


def _reset_on_cpu(module: nn.Module, name: str, gen: torch.Generator) -> None:
    """Run ``module.reset_parameters()`` on float32 CPU stand-ins under the CPU RNG seeded from
    ``gen``: the global RNG of the parameters' device is never used, so CPU and GPU agree."""
    if not callable(getattr(module, "reset_parameters", None)):
        raise ValueError(f"layer {name!r} ({type(module).__name__}) has no reset_parameters() for init='default'; "
                         "use init='truncated_normal', 'normal', 'uniform' or a callable init(module, generator)")
    params = list(module.parameters(recurse=False))
    on_device = [p.data for p in params]
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    try:
        for p in params:
            p.data = torch.empty(p.shape, dtype=torch.float32)
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed would seed CUDA too
            module.reset_parameters()
        drawn = [p.data for p in params]
    finally:
        for p, data in zip(params, on_device):
            p.data = data
    for p, data in zip(params, drawn):
        p.copy_(data)


@torch.no_grad()
def randomize_layer(module: nn.Module, name: str | None = None, *, init: str | Callable = "truncated_normal",
                    std: float = 0.01, seed: int = 0, generator: torch.Generator | None = None,
                    bias: str = "zero", batchnorm: str = "randomize_affine") -> None:
    """Re-initialise, in place, the parameters ``module`` owns directly (not its children's).

    Adebayo et al. (2018), Sec. 3.1 (truncated normal, std 0.01). Draws come from ``generator``,
    or else from :func:`layer_generator` ``(seed, name)``; parameters are drawn in registration
    order (weight before bias). See the module docstring for ``init``, ``bias`` and ``batchnorm``;
    with ``batchnorm="skip"`` a BatchNorm module is left unchanged. Buffers are never changed
    except BatchNorm running statistics under ``batchnorm="reset"``.
    """
    _check_options(init, std, bias, batchnorm)
    if generator is None:
        if name is None:
            raise ValueError("randomize_layer needs generator=torch.Generator or the layer's name (with seed) "
                             "to seed one")
        generator = layer_generator(seed, name)
    elif not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    label = name if name is not None else type(module).__name__
    is_bn = isinstance(module, _BATCHNORMS)
    if is_bn and batchnorm == "skip":
        return
    params = dict(module.named_parameters(recurse=False))
    old_bias = params["bias"].detach().clone() if bias == "keep" and "bias" in params else None
    buffers = {k: b.detach().clone() for k, b in module.named_buffers(recurse=False)}
    if callable(init):
        init(module, generator)
    elif init == "default":
        _reset_on_cpu(module, label, generator)
    else:
        for pname, p in params.items():
            if pname == "bias" and bias != "init":
                continue  # not drawn, so the weight's draw does not depend on the bias policy
            p.copy_(_draw(p.shape, init, std, generator).to(device=p.device, dtype=p.dtype))
    if "bias" in params:
        if bias == "zero":
            params["bias"].zero_()
        elif bias == "keep":
            params["bias"].copy_(old_bias)
    # A reset_parameters() or a callable may touch buffers (BatchNorm resets its statistics):
    # buffers only change through the batchnorm policy.
    for k, b in module.named_buffers(recurse=False):
        if k in buffers:
            b.copy_(buffers[k])
    if is_bn and batchnorm == "reset" and module.track_running_stats:
        module.reset_running_stats()


# ----------------------------------------------------------------------------- the context manager


@contextlib.contextmanager
def randomized(model: nn.Module, *, mode: str = "cascading", order: str = "top_down", unit: str = "layer",
               init: str | Callable = "truncated_normal", std: float = 0.01, seed: int = 0, bias: str = "zero",
               batchnorm: str = "randomize_affine", blocks: Sequence[str] | None = None,
               example_input=None) -> Iterator[Stages]:
    """Move ``model`` through cascading or independent randomization stages, then restore it.

    Adebayo et al. (2018), Sec. 3.1; options as in the module docstring. Yields :class:`Stages`:
    ``for stage in stages`` puts the model at each stage's weights in turn, stage 0 being the
    trained model. ``example_input`` (e.g. ``x[:1]``) traces the forward order; without it, zero
    inputs shaped for the first Conv/Linear layer are tried (see :func:`randomization_stages`).
    Every argument is checked before the model is touched. On exit (normal, ``break`` or an
    exception) all parameters and buffers are restored bit-identically from one saved copy.
    """
    check_model(model)
    _check_options(init, std, bias, batchnorm)
    plan = randomization_stages(model, unit=unit, order=order, mode=mode, example_input=example_input,
                                batchnorm=batchnorm, blocks=blocks)

    def randomize(module: nn.Module, name: str) -> None:
        randomize_layer(module, name, init=init, std=std, seed=seed, bias=bias, batchnorm=batchnorm)

    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    stages = Stages(plan, model, saved, randomize)
    try:
        yield stages
    finally:
        stages._close()
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                v.copy_(saved[k])
