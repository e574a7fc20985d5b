"""Saliency methods behind one call: ``attribute(model, x, target, method, **options)``.

Method families live in their own modules and add themselves to :data:`METHODS` on import.
"""
from __future__ import annotations

from .registry import METHODS, MethodSpec, get_method, register
from .targets import TARGET_NAMES, resolve_targets

# importing the families registers their methods
from . import gradients, propagation, cam  # noqa: E402,F401  isort: skip
from . import masks  # noqa: E402,F401  isort: skip
from .dispatch import REDUCTIONS, attribute, reduce_channels  # noqa: E402
from .many import attribute_many  # noqa: E402

__all__ = ["METHODS", "attribute_many", "MethodSpec", "REDUCTIONS", "TARGET_NAMES", "attribute", "get_method",
           "reduce_channels", "register", "resolve_targets"]
