"""Leave the user's model exactly as it was: modes, requires_grad, hooks and weights."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
)


@contextlib.contextmanager
def preserved(model: nn.Module, *, eval_mode: bool = True, weights: bool = False,
              frozen: bool = False) -> Iterator[nn.Module]:
    """Run a block on ``model`` and restore its train/eval mode, ``requires_grad`` flags and hooks.

    With ``eval_mode`` the block sees the model in eval mode (dropout off, BatchNorm on running
    statistics), which is what a saliency map of a trained model must use. With ``frozen`` no
    parameter requires a gradient inside the block (a map needs the input's gradient only, and the
    weights' would cost a third of the backward pass). With ``weights`` the
    parameters and buffers are copied first and written back on exit (bit-identical), for blocks
    that overwrite them (randomization). Restoration also happens when the block raises.
    """
    modules = list(model.modules())
    training = [m.training for m in modules]
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    hooks = [{name: dict(getattr(m, name, {}) or {}) for name in _HOOK_DICTS} for m in modules]
    saved = None
    if weights:
        saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    try:
        if eval_mode:
            model.eval()
        if frozen:
            for p in params:
                p.requires_grad_(False)
        yield model
    finally:
        for m, was_training, old in zip(modules, training, hooks):
            m.training = was_training
            for name, before in old.items():
                current = getattr(m, name, None)
                if current is None:
                    continue
                for key in [k for k in current if k not in before]:
                    del current[key]
        for p, flag in zip(params, requires_grad):
            p.requires_grad_(flag)
        if saved is not None:
            with torch.no_grad():
                for k, v in model.state_dict(keep_vars=True).items():
                    v.copy_(saved[k])
