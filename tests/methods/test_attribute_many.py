"""attribute_many and the shared pass: equal to one call per method, one forward for the shared
group, and the user's model left exactly as it was (in-place ReLUs, reused modules, errors)."""

import pytest
import torch
from torch import nn

from saliency_sanity import attribute, attribute_many
from saliency_sanity.methods import METHODS
from saliency_sanity.methods.shared_pass import run_pass
from saliency_sanity.models.architectures import build_model

from helpers.model_state import assert_unchanged, state
from helpers.peers import without_inplace

SHARED = ["gradient", "input_x_gradient", "gradcam", "gradcam_pp", "fullgrad"]


def test_the_registry_marks_exactly_the_methods_read_off_the_shared_pass():
    """attribute_many reads every method the registry marks ``shared_pass`` off one pass; the one
    forward counted below holds only if the flag and the readers agree."""
    assert sorted(n for n, spec in METHODS.items() if spec.shared_pass) == sorted(SHARED)
CLOSE = dict(rtol=1e-5, atol=1e-6)  # float32; the same operations, only the batching of the reads differs


@pytest.fixture
def x():
    return torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(4))


def count_forwards(model):
    calls = {"n": 0}
    handle = model.register_forward_pre_hook(lambda m, i: calls.__setitem__("n", calls["n"] + 1))
    return calls, handle


def as_request(m):
    return (m, m, {}) if isinstance(m, str) else m


def test_equals_single_calls_with_one_forward(project_model, x):
    methods = SHARED + [("gradcam/positive", "gradcam", {"aggregation": "positive"}),
                        ("gradcam_pp/signed", "gradcam_pp", {"aggregation": "signed", "relu": False}),
                        ("fullgrad/signed", "fullgrad", {"aggregation": "signed"}),
                        ("ig", "integrated_gradients", {"steps": 4})]
    calls, handle = count_forwards(project_model)
    try:
        many = attribute_many(project_model, x, "top1", methods)
    finally:
        handle.remove()
    assert calls["n"] == 1 + 1  # one shared pass + one for integrated gradients (4 steps in one batch)
    for label, name, opts in map(as_request, methods):
        torch.testing.assert_close(many[label], attribute(project_model, x, "top1", name, **opts), **CLOSE)
    with torch.no_grad():
        assert torch.equal(many["target"], project_model(x).argmax(1))
    assert list(many) == [as_request(m)[0] for m in methods] + ["target"]


def test_cam_layers_are_a_union_in_one_pass(x):
    model = build_model("vgg", seed=0).eval()
    methods = [("cam2", "gradcam", {"layer": "features.conv2"}), "gradcam", ("pp2", "gradcam_pp", {"layer": "features.conv2"})]
    calls, handle = count_forwards(model)
    try:
        many = attribute_many(model, x, "random", methods, seed=3)
    finally:
        handle.remove()
    assert calls["n"] == 1
    for label, name, opts in map(as_request, methods):
        torch.testing.assert_close(many[label], attribute(model, x, "random", name, seed=3, **opts), **CLOSE)
    assert not torch.allclose(many["cam2"], many["gradcam"])  # two different layers were really read


def test_options_reduce_and_non_shared_methods(x):
    model = build_model("resnet", seed=0).eval()
    target = torch.tensor([2, 0, 7])
    many = attribute_many(model, x, target, ["smoothgrad", ("ig8", "integrated_gradients", {"steps": 8}),
                                             "integrated_gradients"],
                          reduce=None, seed=5, options={"integrated_gradients": {"steps": 3}, "smoothgrad": {"n_samples": 2}})
    torch.testing.assert_close(many["smoothgrad"], attribute(model, x, target, "smoothgrad", reduce=None, seed=5, n_samples=2))
    torch.testing.assert_close(many["ig8"], attribute(model, x, target, "integrated_gradients", reduce=None, steps=8))
    torch.testing.assert_close(many["integrated_gradients"],
                               attribute(model, x, target, "integrated_gradients", reduce=None, steps=3))
    assert torch.equal(many["target"], target)


def test_request_errors(x):
    model = build_model("vgg", seed=0).eval()
    with pytest.raises(ValueError, match="unique"):
        attribute_many(model, x, 0, ["gradient", "gradient"])
    with pytest.raises(ValueError, match="not 'target'"):
        attribute_many(model, x, 0, [("target", "gradient", {})])
    with pytest.raises(ValueError, match="unknown method 'gradcam_ppp'"):
        attribute_many(model, x, 0, ["gradcam_ppp"])
    with pytest.raises(TypeError, match=r"gradient got unexpected option\(s\) \['layer'\]"):
        attribute_many(model, x, 0, [("g", "gradient", {"layer": "features.conv1"})])
    with pytest.raises(TypeError, match="unexpected option"):
        attribute_many(model, x, 0, ["gradcam"], options={"gradcam": {"steps": 3}})
    with pytest.raises(ValueError, match="not requested"):
        attribute_many(model, x, 0, ["gradient"], options={"fullgrad": {"aggregation": "signed"}})
    with pytest.raises(ValueError, match="unknown reduce"):
        attribute_many(model, x, 0, ["gradcam"], reduce="max")
    with pytest.raises(ValueError, match="unknown aggregation"):
        attribute_many(model, x, 0, [("f", "fullgrad", {"aggregation": "negative"})])
    with pytest.raises(ValueError, match="is empty"):
        attribute_many(model, x, 0, [])
    with pytest.raises(TypeError, match="cannot read method request"):
        attribute_many(model, x, 0, [("label", "gradient")])


# ----------------------------------------------------------------------------- safety


@pytest.mark.parametrize("arch,layer", [("vgg", "features.conv3"), ("resnet", "layer3.bn1")])
def test_in_place_relus_give_the_same_maps(arch, layer, x):
    """The project models apply ReLU(inplace=True) to the recorded layers' outputs (``layer`` feeds
    one; FullGrad records every BatchNorm of the ResNet); the maps must read the layer's output,
    not what the in-place op made of it: equal to the same model with plain ReLUs."""
    model = build_model(arch, seed=0).eval()
    methods = SHARED + [("cam", "gradcam", {"layer": layer}), ("pp", "gradcam_pp", {"layer": layer})]
    ours = attribute_many(model, x, "top1", methods)
    plain = attribute_many(without_inplace(model), x, "top1", methods)
    for label, _, _ in map(as_request, methods):
        torch.testing.assert_close(ours[label], plain[label], rtol=0, atol=0)  # identical computation
    assert ours["cam"].abs().sum() > 0


class Reused(nn.Module):
    """One ReLU module and one Conv2d called twice: each call is its own activation."""

    def __init__(self, shared: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = self.conv2 if shared else nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.relu_b = self.relu if shared else nn.ReLU(inplace=True)
        self.head = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        h = self.relu(self.conv1(x))
        h = self.relu_b(self.conv2(h))
        h = self.relu(self.conv3(h))
        return self.head(h.flatten(1))


def test_reused_modules_are_recorded_per_call():
    torch.manual_seed(0)
    shared = Reused(shared=True).eval()
    separate = Reused(shared=False).eval()
    separate.load_state_dict(shared.state_dict(), strict=False)
    separate.conv3.load_state_dict(shared.conv2.state_dict())
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    record = run_pass(shared, x, "top1", layers=["relu", "conv2"])
    assert len(record.activations["relu"]) == 3 and len(record.activations["conv2"]) == 2
    ref = run_pass(separate, x, "top1", layers=["relu", "relu_b", "conv2", "conv3"])
    torch.testing.assert_close(record.gradients["relu"][1], ref.gradients["relu_b"][0])
    torch.testing.assert_close(record.gradients["conv2"][1], ref.gradients["conv3"][0])
    assert (record.activations["relu"][0] >= 0).all() and (record.activations["conv2"][0] < 0).any()
    # Grad-CAM reads the last call; FullGrad sums the bias terms of every call
    torch.testing.assert_close(attribute(shared, x, "top1", "gradcam", layer="relu"),
                               attribute(separate, x, "top1", "gradcam", layer="relu"))
    torch.testing.assert_close(attribute(shared, x, "top1", "fullgrad"), attribute(separate, x, "top1", "fullgrad"))


def test_model_unchanged_after_a_call_and_after_an_error(x):
    model = build_model("resnet", seed=0).train()  # train mode: BatchNorm statistics must not move
    model.layer1.requires_grad_(False)
    before = state(model)  # no .grad yet: the pass must compute no weight gradients
    attribute_many(model, x, "top1", SHARED + ["smoothgrad"], options={"smoothgrad": {"n_samples": 2}})
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="out of range"):  # raised inside the pass, hooks registered
        attribute_many(model, x, 99, SHARED)
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="out of range"):
        attribute(model, x, 99, "fullgrad")
    assert_unchanged(model, before)
