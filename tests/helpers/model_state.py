"""A model's state before a call, and the check that the call left it so: one place for every test.

Three depths, each a record and its comparison:

- ``weights(model)``: the state dict (parameters and persistent buffers), cloned. ``assert_unchanged(model,
  before)`` fails unless every tensor is bit-identical (same names, dtypes and values); ``identical(a, b)``
  compares two such records.
- ``state(model)``: the weights and what a call must also give back: each parameter's ``requires_grad``
  and ``.grad``, each module's training flag and hooks, and no ``forward`` patched onto a module. The
  same ``assert_unchanged(model, before)`` compares all of it when ``before`` is a :class:`ModelState`.
- ``snapshot(model)`` and ``differences(model, before)``: everything, down to tensor objects, storage,
  in-place writes and torch's global hooks (the restoration suite, ``cross_cutting/test_restoration.py``,
  which also shows that ``differences`` sees each kind of change).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.modules.module as torch_module
from torch import nn

MODULE_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
                     "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                     "_load_state_dict_post_hooks")
TENSOR_HOOK_ATTRS = ("_backward_hooks", "_post_accumulate_grad_hooks")
GLOBAL_HOOKS = tuple(sorted(n for n in vars(torch_module) if n.startswith("_global_")))


def _copy(value):
    """A hook dict as its (id, hook) pairs in call order (other values as they are)."""
    return list(value.items()) if isinstance(value, dict) else value


# ----------------------------------------------------------------------------- the weights


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict (parameters and persistent buffers), detached and cloned."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """The names whose tensors differ between two weight records (dtype or a value), and those in only one."""
    out = sorted(a.keys() ^ b.keys())
    return out + [k for k in a if k in b and not (a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]))]


def identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Two weight records are bit-identical: the same names, dtypes and values."""
    return not changed(a, b)


# ----------------------------------------------------------------------------- weights, flags and hooks


@dataclass(frozen=True)
class ModelState:
    """What :func:`state` records; compared by :func:`assert_unchanged`."""

    weights: dict[str, torch.Tensor]
    requires_grad: dict[str, bool]
    grads: dict[str, torch.Tensor | None]
    training: dict[str, bool]
    hooks: dict[str, dict[str, object]]
    patched_forward: list[str]


def state(model: nn.Module) -> ModelState:
    """The weights, each parameter's ``requires_grad`` and ``.grad`` (cloned), each module's training flag
    and hooks (every hook dict of ``nn.Module``, in call order), and the modules with a ``forward`` of
    their own (patched onto the instance)."""
    return ModelState(
        weights=weights(model),
        requires_grad={n: p.requires_grad for n, p in model.named_parameters()},
        grads={n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()},
        training={n: m.training for n, m in model.named_modules()},
        hooks={n: {h: _copy(getattr(m, h, None)) for h in MODULE_HOOK_DICTS} for n, m in model.named_modules()},
        patched_forward=[n for n, m in model.named_modules() if "forward" in vars(m)],
    )


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor] | ModelState) -> None:
    """``model`` is as ``before`` recorded it: its weights bit-identical (``before`` from :func:`weights`), and
    also its flags, gradients, hooks and ``forward`` (``before`` from :func:`state`)."""
    if not isinstance(before, ModelState):
        diff = changed(model.state_dict(), before)
        assert not diff, f"weights changed: {diff}"
        return
    after = state(model)
    diff = changed(after.weights, before.weights)
    assert not diff, f"weights changed: {diff}"
    assert after.requires_grad == before.requires_grad, "requires_grad changed"
    assert after.grads.keys() == before.grads.keys()
    for name, grad in after.grads.items():
        old = before.grads[name]
        assert (grad is None) == (old is None) and (grad is None or torch.equal(grad, old)), f".grad of {name}"
    assert after.training == before.training, "training flags changed"
    assert after.hooks == before.hooks, [n for n in after.hooks if after.hooks[n] != before.hooks.get(n)]
    assert after.patched_forward == before.patched_forward, "forward patched"


# ----------------------------------------------------------------------------- everything


def tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by name, non-persistent buffers included."""
    return {**dict(model.named_parameters(remove_duplicate=False)),
            **dict(model.named_buffers(remove_duplicate=False))}


def snapshot(model: nn.Module, *, values: dict | None = None, copy_values: bool = True) -> dict:
    """Everything of ``model`` a call must leave as it was, plus torch's global hooks and grad mode."""
    every = tensors(model)
    if values is None:
        values = {k: v.detach().clone() if copy_values else v.detach() for k, v in every.items()}
    return {
        "values": values,
        "tensors": {k: (v, v.data_ptr(), v.dtype, v.device, tuple(v.shape)) for k, v in every.items()},
        "versions": {k: v._version for k, v in every.items()},
        "modules": {name: (m, type(m), m.training, sorted(vars(m)), m._is_full_backward_hook,
                           {h: _copy(getattr(m, h, None)) for h in MODULE_HOOK_DICTS})
                    for name, m in model.named_modules(remove_duplicate=False)},
        "params": {name: (p, p.requires_grad, p.grad, None if p.grad is None else p.grad.clone(),
                          {h: _copy(getattr(p, h, None)) for h in TENSOR_HOOK_ATTRS})
                   for name, p in model.named_parameters(remove_duplicate=False)},
        "global": {name: _copy(getattr(torch_module, name)) for name in GLOBAL_HOOKS},
        "grad_mode": torch.is_grad_enabled(),
    }


def differences(model: nn.Module, before: dict, *, versions: bool = True) -> list[str]:
    """What changed since ``before``; ``versions`` also counts in-place writes of the same values."""
    after = snapshot(model, copy_values=False)
    out = []
    if after["values"].keys() != before["values"].keys():
        out.append(f"tensor names {sorted(before['values'])} -> {sorted(after['values'])}")
    for k, v in after["values"].items():
        if k in before["values"] and not torch.equal(v, before["values"][k]):
            out.append(f"value of {k}")
    for k, (t, ptr, dtype, device, shape) in after["tensors"].items():
        old = before["tensors"].get(k)
        if old is not None and (t is not old[0] or (ptr, dtype, device, shape) != old[1:]):
            out.append(f"tensor object, storage, dtype, device or shape of {k}")
    if versions:
        out += [f"in-place write to {k}" for k, v in after["versions"].items() if before["versions"].get(k) != v]
    if after["modules"].keys() != before["modules"].keys():
        out.append("module tree")
    for name, (m, typ, training, attrs, full_bw, hooks) in after["modules"].items():
        old = before["modules"].get(name)
        if old is None:
            continue
        label = name or "<root>"
        if m is not old[0] or typ is not old[1]:
            out.append(f"module object {label}")
        if training != old[2]:
            out.append(f"training flag of {label}: {old[2]} -> {training}")
        if attrs != old[3]:
            out.append(f"attributes of {label}: {sorted(set(attrs) ^ set(old[3]))}")
        if full_bw != old[4]:
            out.append(f"_is_full_backward_hook of {label}")
        out += [f"{h} of {label}" for h in MODULE_HOOK_DICTS if hooks[h] != old[5][h]]
    if after["params"].keys() != before["params"].keys():
        out.append("parameter names")
    for name, (p, flag, grad, grad_value, hooks) in after["params"].items():
        old = before["params"].get(name)
        if old is None:
            continue
        if p is not old[0]:
            out.append(f"parameter object {name}")
        if flag != old[1]:
            out.append(f"requires_grad of {name}: {old[1]} -> {flag}")
        if grad is not old[2]:
            out.append(f".grad of {name} replaced")
        elif grad is not None and not torch.equal(grad, old[3]):
            out.append(f".grad of {name} written")
        out += [f"tensor hooks {h} of {name}" for h in TENSOR_HOOK_ATTRS if hooks[h] != old[4][h]]
    out += [f"global {name}" for name in GLOBAL_HOOKS if after["global"][name] != before["global"][name]]
    if after["grad_mode"] != before["grad_mode"]:
        out.append("grad mode")
    return out
