"""Restoration: every method and check, also one that raised mid-call, leaves the user's model as it was."""
from __future__ import annotations

import functools
import inspect
import re
import warnings
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.modules.module as torch_module
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from saliency_sanity import METHODS, attribute, attribute_many
from saliency_sanity.checks import class_sensitivity, data_randomization_test, randomization_test
from saliency_sanity.methods.masks import sound_masks
from saliency_sanity.checks.randomize import randomized
from saliency_sanity.metrics.soundness import completeness_soundness

from helpers.model_state import differences, snapshot, tensors


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- the user's models and hooks


class Injected(Exception):
    """The user's own error: no RuntimeError/ValueError, so the package has no reason to catch it."""


class InjectedInterrupt(KeyboardInterrupt):
    """A Ctrl-C inside the user's forward pass: no Exception, so only ``finally`` restores."""


class Injector:
    """The user's counting hooks (inner module forward, output tensor backward) that raise when armed."""

    def __init__(self, model: nn.Module, inner: nn.Module):
        self.forward_calls = self.backward_calls = 0
        self.raise_forward_at: int | None = None
        self.raise_backward_at: int | None = None
        self.forward_error: type[BaseException] = Injected
        inner.register_forward_hook(self.forward_hook)
        model.register_forward_hook(self.output_hook)

    def reset(self, *, forward_at: int | None = None, backward_at: int | None = None,
              forward_error: type[BaseException] = Injected) -> None:
        self.forward_calls = self.backward_calls = 0
        self.raise_forward_at, self.raise_backward_at, self.forward_error = forward_at, backward_at, forward_error

    def forward_hook(self, module, args, output):
        self.forward_calls += 1
        if self.forward_calls == self.raise_forward_at:
            raise self.forward_error(f"forward call {self.forward_calls}")

    def output_hook(self, module, args, output):
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(self.tensor_hook)

    def tensor_hook(self, grad):
        self.backward_calls += 1
        if self.backward_calls == self.raise_backward_at:
            raise Injected(f"backward call {self.backward_calls}")


def _user_pre_hook(module, args):
    return None


def _user_full_backward_hook(module, grad_input, grad_output):
    return None


def _user_full_backward_pre_hook(module, grad_output):
    return None


def _user_kwargs_hook(module, args, kwargs, output):
    return None


def _user_tensor_hook(grad):
    return None


class ReusedReLU(nn.Module):
    """One in-place ReLU module applied three times in forward (and a non-persistent buffer)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("offset", torch.tensor(0.1), persistent=False)
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(2), nn.Flatten()
        self.fc1, self.fc2 = nn.Linear(16, 8), nn.Linear(8, 5)

    def forward(self, x):
        x = self.relu(self.conv1(x - self.offset))
        x = self.relu(self.conv2(x))
        return self.fc2(self.relu(self.fc1(self.flatten(self.pool(x)))))


def _sequential_cnn():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 6, 3, padding=1),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(inplace=True),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5))
    model.eval()
    model[3].train()  # mixed flags: a call must restore each module's own flag
    return model


def _resnet18():
    model = torchvision.models.resnet18(num_classes=5)
    model.train()
    model.layer4.eval()
    return model


def _reused_relu():
    return ReusedReLU().eval()


class Unsupported(nn.Module):
    """Functional ReLUs and a BatchNorm after a ReLU: refused by ReLU-rule methods and by LRP."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool, self.flatten, self.fc = nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)

    def forward(self, x):
        x = self.bn(torch.relu(self.conv1(x)))
        return self.fc(self.flatten(self.pool(torch.relu(self.conv2(x)))))


def _unsupported():
    return Unsupported().eval()


def _batchnorm_train():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                          nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5))
    return model.train()


@dataclass(frozen=True)
class ModelCase:
    """A model to test on: its builder, input shape, and the modules the user's hooks sit on."""

    build: Callable[[], nn.Module]
    shape: tuple
    inner: str  # the module whose forward hook raises
    head: str  # the last Linear: the user's full backward hook, tensor hook and .grad


MODELS = {
    "sequential": ModelCase(_sequential_cnn, (2, 3, 12, 12), "2", "9"),
    "resnet18": ModelCase(_resnet18, (2, 3, 16, 16), "layer2", "fc"),
    "reused_relu": ModelCase(_reused_relu, (2, 3, 12, 12), "relu", "fc2"),
    "batchnorm_train": ModelCase(_batchnorm_train, (2, 3, 12, 12), "4", "8"),
    "unsupported": ModelCase(_unsupported, (2, 3, 12, 12), "conv2", "fc"),
}


def make_model(case: ModelCase, seed: int = 0) -> tuple[nn.Module, Injector]:
    """A fresh copy of the case's model with the user's own hooks, a frozen parameter and a .grad."""
    state, training = pristine(case, seed)
    with torch.device("meta"):  # no initialisation: the values come from the pristine copy
        model = case.build()
    model.to_empty(device="cpu")
    with torch.no_grad():
        for name, t in tensors(model).items():
            t.copy_(state[name])
    for m, flag in zip(model.modules(), training):
        m.training = flag
    modules = dict(model.named_modules())
    head = modules[case.head]
    model.register_forward_pre_hook(_user_pre_hook)
    model.register_forward_hook(_user_kwargs_hook, with_kwargs=True, always_call=True)
    head.register_full_backward_hook(_user_full_backward_hook)
    head.register_full_backward_pre_hook(_user_full_backward_pre_hook)
    head.weight.register_hook(_user_tensor_hook)
    head.bias.grad = torch.full_like(head.bias, 0.5)
    next(model.parameters()).requires_grad_(False)
    return model, Injector(model, modules[case.inner])


@functools.cache
def pristine(case: ModelCase, seed: int) -> tuple[dict, list]:
    """State and train/eval flags of the seeded model with non-trivial BatchNorm statistics, built once."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = case.build()
        training = [m.training for m in model.modules()]
        if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
            model.train()
            with torch.no_grad():
                for _ in range(2):
                    model(torch.randn(4, *case.shape[1:]) * 2 + 0.5)
                for m in model.modules():  # statistics far from the initial 0 / 1
                    if isinstance(m, nn.BatchNorm2d):
                        m.running_mean.uniform_(-0.5, 0.5)
                        m.running_var.uniform_(0.5, 2.0)
    return {k: v.detach() for k, v in tensors(model).items()}, training


def images(case: ModelCase, seed: int = 0) -> torch.Tensor:
    """Inputs in [0, 1] (lrp_zplus's default pixel range)."""
    return torch.rand(case.shape, generator=torch.Generator().manual_seed(seed))


def test_models_are_what_the_cases_claim():
    """Each model case has the property it stands for."""
    for name, case in MODELS.items():
        model, injector = make_model(case)
        model(images(case)).sum().backward()
        assert injector.forward_calls == (3 if name == "reused_relu" else 1) and injector.backward_calls == 1
    for case in MODELS.values():  # the pristine values stand for the "before" of every call
        model, _ = make_model(case)
        assert differences(model, snapshot(model, values=pristine(case, 0)[0]), versions=False) == []
        assert [m.training for m in model.modules()] == pristine(case, 0)[1]
    bn, _ = make_model(MODELS["batchnorm_train"])
    assert bn.training and all(m.training for m in bn.modules())
    assert int(bn[1].num_batches_tracked) == 2 and (bn[1].running_var - 1).abs().max() > 0.1
    resnet, _ = make_model(MODELS["resnet18"])
    assert resnet.training and not resnet.layer4.training
    assert int(resnet.bn1.num_batches_tracked) == 2
    reused, _ = make_model(MODELS["reused_relu"])
    assert "offset" not in reused.state_dict() and float(reused.offset) == pytest.approx(0.1)


# ----------------------------------------------------------------------------- the calls


# small steps / samples; a fill mean for the sound mask, which has no default one
CHEAP_VALUES = {"steps": 2, "n_samples": 2, "mean": 0.3}


def cheap_options(method: str) -> dict:
    """Small ``steps`` / ``n_samples`` (and a ``mean``) for any method that takes them; otherwise its defaults."""
    params = inspect.signature(METHODS[method].fn).parameters
    return {k: v for k, v in CHEAP_VALUES.items() if k in params}


def _quietly(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _attribute(method):
    def call(model, x, other):
        maps = _quietly(attribute, model, x, "top1", method, **cheap_options(method))
        assert maps.shape[0] == len(x) and maps.shape[-2:] == x.shape[-2:] and torch.isfinite(maps).all()
        return maps
    return call


CHECK_METHODS = ("gradient", "guided_backprop")
METRICS = ["spearman_abs"]


def _randomization_test(model, x, other):
    frame = _quietly(randomization_test, model, x, CHECK_METHODS, metrics=METRICS, stages=[0, -1], init="normal",
                     progress=False)
    assert sorted(frame.stage.unique())[0] == 0 and frame.stage.nunique() == 2


def _class_sensitivity(model, x, other):
    frame = _quietly(class_sensitivity, model, x, CHECK_METHODS, metrics=METRICS, progress=False)
    assert len(frame) == 2 * len(CHECK_METHODS) * len(x)


def _data_randomization_test(model, x, other):
    frame = _quietly(data_randomization_test, model, other, x, CHECK_METHODS, metrics=METRICS, progress=False)
    assert len(frame) == len(CHECK_METHODS) * len(x)


def _completeness_soundness(model, x, other):
    maps = torch.rand(len(x), 5, *x.shape[-2:], generator=torch.Generator().manual_seed(3))
    frame = _quietly(completeness_soundness, model, x, maps, steps=2, mean=0.3)
    assert len(frame) == 5 * len(x) and frame["value"].between(0, 1).all()


def _sound_masks(model, x, other):
    masks = _quietly(sound_masks, model, x, torch.tensor([[0, 1], [2, 3]]), steps=2, progress=False, mean=0.3)
    assert masks.shape == (2, 2, *x.shape[-2:])


def _attribute_many(model, x, other):
    """The methods that share one pass (each method's own pass is covered by attribute)."""
    methods = [m for m, spec in METHODS.items() if spec.shared_pass]
    maps = _quietly(attribute_many, model, x, "top1", methods)
    assert set(maps) == {*methods, "target"}


CALLS: dict[str, Callable] = {
    **{"method:" + m: _attribute(m) for m in METHODS},
    "check:randomization_test": _randomization_test,
    "check:class_sensitivity": _class_sensitivity,
    "check:data_randomization_test": _data_randomization_test,
    "check:completeness_soundness": _completeness_soundness,
    "check:sound_masks": _sound_masks,
    "check:attribute_many": _attribute_many,
}
# Calls with two models: the second (a "random-label" model) is the one whose hooks raise.
TWO_MODELS = {"check:data_randomization_test"}
# Calls that never back-propagate, so there is nothing to raise in a backward pass.
NO_BACKWARD = {"check:completeness_soundness"}

# The (call, model) pairs that refuse the model with a clear error, and why. Everything else must succeed.
_NO_RELU = r"^Unsupported has no nn\.ReLU module; {} modifies the backward pass of ReLU modules"
_BN_NOT_AFTER_CONV = (r"^LRP merges each BatchNorm2d into the Conv2d right before it, but \['bn'\] do not directly "
                      r"follow a Conv2d module")
EXPECTED_ERRORS: dict[tuple[str, str], tuple[type, str]] = {
    # before any pass: the rule needs nn.ReLU modules, and functional relus are invisible to hooks
    **{("method:" + m, "unsupported"): (ValueError, _NO_RELU.format(m))
       for m in ("guided_backprop", "deconvnet", "rectgrad", "guided_gradcam")},
    # after the forward pass, with the rules attached: LRP finds the BatchNorm it cannot merge
    **{("method:" + m, "unsupported"): (ValueError, _BN_NOT_AFTER_CONV)
       for m in ("lrp_epsilon", "lrp_alpha_beta", "lrp_zplus", "lrp_composite")},
    # the checks run guided_backprop (CHECK_METHODS): the refusal comes mid-check, e.g. inside randomized()
    **{(c, "unsupported"): (ValueError, _NO_RELU.format("guided_backprop"))
       for c in ("check:randomization_test", "check:class_sensitivity", "check:data_randomization_test")},
}


def _run(call: str, model_name: str, *, forward_at=None, backward_at=None, forward_error=Injected):
    """Build the case's model(s), arm the hooks, call; return (outcome, injector, changes per model)."""
    case = MODELS[model_name]
    model, injector = make_model(case)
    other, other_injector = make_model(case, seed=1) if call in TWO_MODELS else (None, None)
    armed = other_injector if other_injector is not None else injector
    subjects = [m for m in (model, other) if m is not None]
    befores = [snapshot(m, values=pristine(case, seed)[0]) for m, seed in zip(subjects, (0, 1))]
    armed.reset(forward_at=forward_at, backward_at=backward_at, forward_error=forward_error)
    fn = CALLS[call]
    try:
        fn(model, images(case), other)
        outcome = None
    except BaseException as err:  # noqa: BLE001 -- the tests decide which errors are right
        outcome = err
    strict = not call.startswith("check:randomization")
    changes = [differences(m, b, versions=strict) for m, b in zip(subjects, befores)]
    return outcome, armed, changes


@functools.cache
def normal_run(call: str, model_name: str):
    """The normal call, once per (call, model): outcome, forward and backward calls seen, changes."""
    outcome, armed, changes = _run(call, model_name)
    return outcome, armed.forward_calls, armed.backward_calls, changes


def _check_refusal(call, model_name, outcome):
    """``outcome`` is what the table expects for (call, model): None, or its error type and message."""
    expected = EXPECTED_ERRORS.get((call, model_name))
    if expected is None:
        assert outcome is None, f"{call} on {model_name} raised {outcome!r}"
        return
    kind, message = expected
    assert type(outcome) is kind, f"{call} on {model_name}: expected {kind.__name__}, got {outcome!r}"
    assert re.search(message, str(outcome)), str(outcome)


PAIRS = [(call, model) for call in CALLS for model in MODELS]
CASES = [pytest.param(call, model, id=f"{call}-{model}") for call, model in PAIRS]


@pytest.mark.parametrize("call, model_name", CASES)
def test_a_normal_call_leaves_the_model_as_it_was(call, model_name):
    """A normal call succeeds (or refuses the model as the table says) and changes nothing."""
    outcome, forward_calls, backward_calls, changes = normal_run(call, model_name)
    _check_refusal(call, model_name, outcome)
    assert changes == [[]] * len(changes)
    if outcome is None:
        assert forward_calls > 0
        assert (backward_calls == 0) == (call in NO_BACKWARD)


@pytest.mark.parametrize("where", ["forward", "backward"])
@pytest.mark.parametrize("call, model_name", CASES)
def test_an_error_in_the_users_pass_propagates_and_leaves_the_model_as_it_was(call, model_name, where):
    """An error at the first and at the last forward (backward) call propagates; the model is as it was."""
    _, forward_calls, backward_calls, _ = normal_run(call, model_name)
    count = forward_calls if where == "forward" else backward_calls
    if not count:  # nothing to raise in: a refusal before any such pass, or a call that never back-propagates
        assert (where == "backward" and call in NO_BACKWARD) or (call, model_name) in EXPECTED_ERRORS
        outcome, _, changes = _run(call, model_name)
        _check_refusal(call, model_name, outcome)
        assert changes == [[]] * len(changes)
    for at in sorted({1, count}) if count else ():
        outcome, _, changes = _run(call, model_name, **{f"{where}_at": at})
        assert type(outcome) is Injected and str(outcome) == f"{where} call {at}", repr(outcome)
        assert changes == [[]] * len(changes), f"raised at {where} call {at} of {count}"


@pytest.mark.parametrize("call, model_name", CASES)
def test_an_interrupt_in_the_users_forward_pass_leaves_the_model_as_it_was(call, model_name):
    """A KeyboardInterrupt at the last forward call propagates; the model is as it was."""
    _, forward_calls, _, _ = normal_run(call, model_name)
    if not forward_calls:
        assert (call, model_name) in EXPECTED_ERRORS
        return
    outcome, _, changes = _run(call, model_name, forward_at=forward_calls, forward_error=InjectedInterrupt)
    assert type(outcome) is InjectedInterrupt and str(outcome) == f"forward call {forward_calls}", repr(outcome)
    assert changes == [[]] * len(changes)


def test_every_method_and_model_is_covered():
    """Every registered method is a call of its own, and the refusal table names only real calls and models."""
    assert {c for c in CALLS if c.startswith("method:")} == {"method:" + m for m in METHODS}
    assert all(c in CALLS and m in MODELS for c, m in EXPECTED_ERRORS)
    assert NO_BACKWARD <= set(CALLS) and TWO_MODELS <= set(CALLS)


# ----------------------------------------------------------------------------- the snapshot itself


UNDO: list[Callable] = []


def _global_hook(model):
    UNDO.append(torch_module.register_module_forward_hook(lambda *args: None).remove)


def _grad_mode_off(model):
    UNDO.append(functools.partial(torch.set_grad_enabled, torch.is_grad_enabled()))
    torch.set_grad_enabled(False)


def _patched_forward(model):
    model[0].forward = lambda x: x


def _in_place(fn):
    """A mutation that writes tensors in place (outside autograd)."""
    def mutate(model):
        with torch.no_grad():
            fn(model)
    return mutate


MUTATIONS: dict[str, Callable] = {
    "weight value": _in_place(lambda m: m[0].weight.view(-1)[0].add_(1e-6)),
    "buffer value": _in_place(lambda m: m[1].running_var.mul_(1.5)),
    "batch counter": _in_place(lambda m: m[4].num_batches_tracked.add_(1)),
    "non-persistent buffer": lambda m: m[1].register_buffer("extra", torch.zeros(1), persistent=False),
    "weight storage swapped": lambda m: setattr(m[3].weight, "data", m[3].weight.data.clone()),
    "same values written in place": _in_place(lambda m: m[3].weight.mul_(1)),
    "parameter replaced": lambda m: setattr(m[8], "bias", nn.Parameter(m[8].bias.detach().clone())),
    "leftover forward hook": lambda m: m[2].register_forward_hook(lambda *a: None),
    "leftover kwargs pre-hook": lambda m: m[2].register_forward_pre_hook(lambda *a: None, with_kwargs=True),
    "leftover full backward hook": lambda m: m[5].register_full_backward_hook(lambda *a: None),
    "leftover tensor hook": lambda m: m[3].weight.register_hook(lambda g: None),
    "user's hook removed": lambda m: m._forward_pre_hooks.clear(),
    "user's hooks reordered": lambda m: m._forward_hooks.move_to_end(next(iter(m._forward_hooks))),
    "user's tensor hook removed": lambda m: m[8].weight._backward_hooks.clear(),
    "training flag": lambda m: m[4].eval(),
    "requires_grad": lambda m: m[3].weight.requires_grad_(False),
    "frozen parameter unfrozen": lambda m: m[0].weight.requires_grad_(True),
    ".grad replaced by an equal tensor": lambda m: setattr(m[8].bias, "grad", m[8].bias.grad.clone()),
    ".grad written": _in_place(lambda m: m[8].bias.grad.add_(1)),
    ".grad added": lambda m: setattr(m[3].weight, "grad", torch.zeros_like(m[3].weight)),
    "forward patched": _patched_forward,
    "global hook": _global_hook,
    "grad mode": _grad_mode_off,
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_the_snapshot_sees_every_kind_of_change(mutation):
    """Each kind of change a call could leave behind makes the comparison fail."""
    model, _ = make_model(MODELS["batchnorm_train"])
    before = snapshot(model)
    MUTATIONS[mutation](model)
    try:
        found = differences(model, before)
    finally:
        while UNDO:
            UNDO.pop()()
    assert found, mutation
    if mutation == "same values written in place":
        assert found == ["in-place write to 3.weight"] and differences(model, before, versions=False) == []


def test_the_snapshot_sees_no_change_where_there_is_none():
    """A no-grad forward in eval mode, and the injector's counting, change nothing."""
    model, injector = make_model(MODELS["batchnorm_train"])
    before = snapshot(model)
    model.eval()
    with torch.no_grad():
        model(images(MODELS["batchnorm_train"]))
    model.train()
    assert injector.forward_calls == 1 and differences(model, before) == []


# ----------------------------------------------------------------------------- errors the package raises


@pytest.mark.parametrize("model_name", ["sequential", "reused_relu", "batchnorm_train"])
@pytest.mark.parametrize("method", list(METHODS))
def test_a_target_out_of_range_raises_and_leaves_the_model_as_it_was(method, model_name):
    """The package's own error for a bad target, raised mid-method, leaves the model as it was."""
    case = MODELS[model_name]
    model, _ = make_model(case)
    before = snapshot(model)
    with pytest.raises(ValueError, match="out of range"):
        _quietly(attribute, model, images(case), 7, method, **cheap_options(method))
    assert differences(model, before) == []


# ----------------------------------------------------------------------------- random small models


@st.composite
def small_models(draw):
    """Random conv stacks: depth, width, BatchNorm, in-place ReLUs, mode, frozen parameters, a user hook."""
    depth, width = draw(st.integers(1, 3)), draw(st.integers(2, 5))
    batchnorm, inplace = draw(st.booleans()), draw(st.booleans())
    torch.manual_seed(draw(st.integers(0, 10_000)))
    layers, channels = [], 1
    for _ in range(depth):
        layers.append(nn.Conv2d(channels, width, 3, padding=1))
        if batchnorm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU(inplace=inplace))
        channels = width
    layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, 5)]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    model.train(draw(st.booleans()))
    params = list(model.parameters())
    for i in draw(st.sets(st.integers(0, len(params) - 1), max_size=2)):
        params[i].requires_grad_(False)
    if draw(st.booleans()):
        model[0].register_forward_hook(lambda module, args, out: None)
    return model


def small_images(seed=0, n=2):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


SMALL = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SMALL
@given(model=small_models())
def test_every_method_on_random_small_models_leaves_the_model_as_it_was(model):
    """attribute_many with every registered method, on random small models."""
    before = snapshot(model)
    maps = _quietly(attribute_many, model, small_images(), "top1", list(METHODS),
                    options={m: cheap_options(m) for m in METHODS if cheap_options(m)})
    assert all(torch.isfinite(maps[m]).all() for m in METHODS)
    assert differences(model, before) == []


@SMALL
@given(model=small_models(), mode=st.sampled_from(["cascading", "independent"]),
       order=st.sampled_from(["top_down", "bottom_up"]), fail_at=st.integers(0, 3))
def test_randomized_restores_also_when_the_body_raises(model, mode, order, fail_at):
    """An error in the user's code inside randomized() leaves the weights bit-identical."""
    before = snapshot(model)
    with pytest.raises(Injected, match="user code failed"):
        with randomized(model, mode=mode, order=order, seed=1) as stages:
            for stage in stages:
                attribute(model, small_images(), "top1", "gradient")
                if stage.index >= min(fail_at, len(stages) - 1):
                    raise Injected("user code failed")
    assert differences(model, before, versions=False) == []


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_callers_images_are_never_written(method):
    """A model whose first layer is an in-place ReLU would write into x if any pass ran on x itself."""
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 4)).eval()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) - 0.5
    before = x.clone()
    bounds = {"low": -0.5, "high": 0.5} if method in ("lrp_zplus", "lrp_composite") else {}
    attribute(model, x, "top1", method, **cheap_options(method), **bounds)
    assert torch.equal(x, before)
