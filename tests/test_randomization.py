"""Parameter randomization: forward order, cascading/independent stages, seeded draws, restoration."""
from collections import OrderedDict

import pytest
import torch
from torch import nn

from saliency_sanity.models import build_model
from saliency_sanity.randomization import layer_generator, randomization_stages, randomize_layer, randomized


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def changed_layers(model, before):
    out = set()
    for k, v in model.state_dict().items():
        if not torch.equal(v, before[k]):
            out.add(k.rsplit(".", 1)[0])
    return out


class Scrambled(nn.Module):
    """Registration order differs from forward order; one ReLU module is used twice."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.second = nn.Linear(8, 8)
        self.first = nn.Linear(4, 8)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.head(self.act(self.second(self.act(self.first(x)))))


def test_stages_follow_forward_order_not_registration():
    plan = randomization_stages(Scrambled(), order="bottom_up", example_input=torch.zeros(1, 4))
    assert [s.name for s in plan] == ["original", "first", "second", "head"]
    top = randomization_stages(Scrambled(), example_input=torch.zeros(1, 4))
    assert [s.name for s in top] == ["original", "head", "second", "first"]


@pytest.fixture
def vgg():
    return build_model("vgg", seed=0).eval()


def test_cascading_top_down_randomizes_cumulatively(vgg):
    before = snapshot(vgg)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        reference = vgg(x)
    order = ["classifier.fc2", "classifier.fc1", "features.conv3", "features.conv2", "features.conv1"]
    with randomized(vgg, example_input=x) as stages:
        assert len(stages) == 6
        for stage in stages:
            assert changed_layers(vgg, before) == set(order[:stage.index])
            assert set(stage.randomized_so_far) == set(order[:stage.index])
            if stage.index:
                with torch.no_grad():
                    assert not torch.allclose(vgg(x), reference)
    assert not changed_layers(vgg, before)
    with torch.no_grad():
        assert torch.equal(vgg(x), reference)


def test_independent_randomizes_one_layer_at_a_time(vgg):
    before = snapshot(vgg)
    with randomized(vgg, mode="independent", order="bottom_up", example_input=torch.rand(1, 1, 28, 28)) as stages:
        names = []
        for stage in stages:
            assert changed_layers(vgg, before) == set(stage.layers)
            names.append(stage.name)
    assert names[1] == "features.conv1" and names[-1] == "classifier.fc2"
    assert not changed_layers(vgg, before)


def test_restored_after_exception_and_break(vgg):
    before = snapshot(vgg)
    with pytest.raises(RuntimeError, match="boom"):
        with randomized(vgg) as stages:
            for stage in stages:
                if stage.index == 2:
                    raise RuntimeError("boom")
    assert not changed_layers(vgg, before)
    with randomized(vgg) as stages:
        for stage in stages:
            if stage.index == 1:
                break
    assert not changed_layers(vgg, before)


def test_batchnorm_policies_and_buffers_restored():
    model = build_model("resnet", seed=0).eval()
    before = snapshot(model)
    with randomized(model, batchnorm="reset", order="bottom_up", example_input=torch.rand(1, 1, 28, 28)) as stages:
        for stage in stages:
            if stage.name == "stem.bn":
                assert torch.equal(model.stem.bn.running_var, torch.ones_like(model.stem.bn.running_var))
                break
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    skip = randomization_stages(model, batchnorm="skip", example_input=torch.rand(1, 1, 28, 28))
    assert not any("bn" in s.name for s in skip)
    keep = randomization_stages(model, example_input=torch.rand(1, 1, 28, 28))
    assert any(s.name == "stem.bn" for s in keep)


def test_blocks_default_and_custom():
    model = build_model("resnet", seed=0)
    blocks = randomization_stages(model, unit="block", order="bottom_up", example_input=torch.rand(1, 1, 28, 28))
    assert [s.name for s in blocks] == ["original", "stem", "layer1", "layer2", "layer3", "fc"]
    vgg_blocks = randomization_stages(build_model("vgg"), unit="block", order="bottom_up",
                                      example_input=torch.rand(1, 1, 28, 28))
    assert [s.name for s in vgg_blocks][1:] == ["features.conv1", "features.conv2", "features.conv3",
                                                "classifier.fc1", "classifier.fc2"]
    custom = randomization_stages(model, unit="block", blocks=["layer3", "fc"], example_input=torch.rand(1, 1, 28, 28))
    assert [s.name for s in custom] == ["original", "fc", "layer3"]
    with pytest.raises(ValueError, match="unknown block"):
        randomization_stages(model, unit="block", blocks=["layer9"])


def test_seeded_draws_are_per_layer_and_reproducible(vgg):
    def draw(mode, order):
        with randomized(vgg, mode=mode, order=order, seed=3) as stages:
            for stage in stages:
                if "features.conv2" in stage.layers:
                    return vgg.features.conv2.weight.clone()

    a = draw("cascading", "top_down")
    assert torch.equal(a, draw("independent", "bottom_up"))
    assert layer_generator(3, "a").initial_seed() != layer_generator(3, "b").initial_seed()
    assert layer_generator(3, "a").initial_seed() == layer_generator(3, "a").initial_seed()
    big = nn.Linear(200, 200)
    randomize_layer(big, "big", std=0.01, seed=0)
    w = big.weight
    assert w.abs().max() <= 0.02 + 1e-7 and abs(w.std().item() - 0.0088) < 0.0008  # truncated at 2 std
    assert torch.equal(big.bias, torch.zeros_like(big.bias))


def test_bad_arguments(vgg):
    for kwargs, message in [({"mode": "parallel"}, "unknown mode"), ({"order": "random"}, "unknown order"),
                            ({"unit": "neuron"}, "unknown unit"), ({"init": "xavier"}, "unknown init"),
                            ({"batchnorm": "freeze"}, "unknown batchnorm"), ({"std": 0}, "std must be > 0"),
                            ({"bias": "one"}, "unknown bias")]:
        with pytest.raises(ValueError, match=message):
            with randomized(vgg, **kwargs):
                pass
