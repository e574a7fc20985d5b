"""Property tests: after any public call on any small model -- also a call that raised -- the model
is as it was: weights bit-identical, the same hooks, requires_grad and train/eval flags unchanged."""
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from saliency_sanity import attribute, attribute_many
from saliency_sanity.checks import class_sensitivity, randomization_test
from saliency_sanity.randomization import randomized

CHEAP = {"smoothgrad": {"n_samples": 2}, "integrated_gradients": {"steps": 2}, "sound_mask": {"steps": 2}}
METHODS = ["gradient", "input_x_gradient", "smoothgrad", "integrated_gradients", "guided_backprop", "deconvnet",
           "rectgrad", "lrp_epsilon", "lrp_alpha_beta", "lrp_zplus", "gradcam", "gradcam_pp", "fullgrad",
           "sound_mask"]
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def small_models(draw):
    """Conv stacks of random depth and width, with or without BatchNorm and in-place ReLUs, in train
    or eval mode, some parameters frozen, sometimes with a hook of the user's own."""
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


def snapshot(model):
    return {
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "hooks": [{name: dict(getattr(m, name)) for name in ("_forward_hooks", "_forward_pre_hooks",
                                                            "_backward_hooks", "_backward_pre_hooks")}
                  for m in model.modules()],
    }


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after["weights"].keys() == before["weights"].keys()
    for key, value in after["weights"].items():
        assert torch.equal(value, before["weights"][key]), key
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert all(a is b for a, b in zip(after["grads"], before["grads"])), "a .grad was written"
    assert after["hooks"] == before["hooks"]


def images(seed=0, n=2):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@SETTINGS
@given(model=small_models(), method=st.sampled_from(METHODS))
def test_attribute_leaves_the_model_as_it_was(model, method):
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = attribute(model, images(), "top1", method, **CHEAP.get(method, {}))
    assert maps.shape == (2, 8, 8) and torch.isfinite(maps).all()
    assert_unchanged(model, before)


@SETTINGS
@given(model=small_models(), method=st.sampled_from(METHODS))
def test_a_call_that_raises_leaves_the_model_as_it_was(model, method):
    before = snapshot(model)
    with pytest.raises(ValueError, match="out of range"):
        attribute(model, images(), 7, method, **CHEAP.get(method, {}))
    assert_unchanged(model, before)


@SETTINGS
@given(model=small_models(), mode=st.sampled_from(["cascading", "independent"]),
       order=st.sampled_from(["top_down", "bottom_up"]), fail_at=st.integers(0, 3))
def test_randomized_restores_also_when_the_body_raises(model, mode, order, fail_at):
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="user code failed"):
        with randomized(model, mode=mode, order=order, seed=1) as stages:
            for stage in stages:
                attribute(model, images(), "top1", "gradient")
                if stage.index >= min(fail_at, len(stages) - 1):
                    raise RuntimeError("user code failed")
    assert_unchanged(model, before)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=small_models())
def test_checks_leave_the_model_as_it_was(model):
    before = snapshot(model)
    methods = ["gradient", "guided_backprop", "gradcam"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        randomization_test(model, images(), methods, metrics=["spearman_abs"], progress=False)
        class_sensitivity(model, images(), methods, metrics=["spearman_abs"], progress=False)
        attribute_many(model, images(), "top1", methods + ["fullgrad"])
    assert_unchanged(model, before)
