"""Model-parameter randomization as a context manager over stages in forward order.

Adebayo et al. (2018), Sec. 3.1: *cascading* re-initialisation from the logits downwards,
cumulatively, and *independent* re-initialisation of one layer (or block) at a time with the rest
kept trained; their small-CNN re-init draws from a truncated normal with std 0.01. Khakzar et al.
(2020) re-initialise top-down from N(0, 0.1) (``init="normal", std=0.1``); Hedström et al. (2023)
recommend the bottom-up order. Both orders and both modes exist here::

    with randomized(model, mode="cascading", order="top_down", example_input=x[:1]) as stages:
        for stage in stages:      # stage 0 is the trained model ("original")
            ...                   # here the model holds this stage's weights

Which layers form the stages, and in what order: :mod:`saliency_sanity.checks.stages`. Choices this
module makes (all are options; the defaults are stated, not claimed as a paper's):

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
import math
import numbers
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from .._core.draws import keyed_seed
from .._core.validation import check_choice, check_model
from .stages import _BATCHNORMS, BATCHNORM_POLICIES, Stage, randomization_stages

__all__ = ["Stages", "randomized", "randomize_layer", "layer_generator"]

INITS = ("truncated_normal", "normal", "uniform", "default")
BIAS_POLICIES = ("zero", "init", "keep")


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
