"""The registry of saliency methods: one name per method, so notebooks and checks can loop over them."""
from __future__ import annotations

from dataclasses import dataclass, field
import inspect
from typing import Callable

import torch


@dataclass(frozen=True)
class MethodSpec:
    """What the dispatcher needs to know about one method.

    ``kind`` is ``"pixel"`` (the map has the input's shape [B, C, H, W] before channel reduction)
    or ``"cam"`` (the map is already [B, H, W], upsampled to the input size). ``shared_pass``
    marks methods that can be read off one plain forward/backward pass (see ``shared_pass.py``).
    ``defaults`` are the keyword options of ``fn`` with their defaults, read from its signature (the one
    place a default is written). How a method handles gradients (Khakzar et al. 2020) depends on its
    options (LRP-alpha-beta is signed or positive), so it is a property of a request, not of the method:
    :data:`saliency_sanity.checks.PAPER_METHODS`.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    kind: str = "pixel"
    family: str = "gradient"
    shared_pass: bool = False
    description: str = ""
    defaults: dict = field(default_factory=dict)


METHODS: dict[str, MethodSpec] = {}


def option_defaults(fn: Callable) -> dict:
    """The keyword-only options of a method function with their defaults (``seed`` is not an option)."""
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.kind is p.KEYWORD_ONLY and p.default is not p.empty and k != "seed"}


def register(name: str, *, kind: str = "pixel", family: str = "gradient", shared_pass: bool = False,
             description: str = ""):
    """Decorator adding a method function ``fn(model, x, target, *, seed, **options)`` to :data:`METHODS`."""

    def wrap(fn):
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        METHODS[name] = MethodSpec(name, fn, kind, family, shared_pass,
                                   description or (fn.__doc__ or "").strip().splitlines()[0], option_defaults(fn))
        return fn

    return wrap


def get_method(name: str) -> MethodSpec:
    if not isinstance(name, str):
        raise TypeError(f"method must be a method name (str), got {type(name).__name__}")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)} "
                         "(saliency_sanity.METHODS lists them)")
    return METHODS[name]
