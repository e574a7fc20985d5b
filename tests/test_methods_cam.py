"""Grad-CAM, Grad-CAM++ and FullGrad against Captum and pytorch-grad-cam, and the aggregation family."""
import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from pytorch_grad_cam import FullGrad, GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from saliency_sanity import attribute, attribute_many
from saliency_sanity.methods.cam import handle
from saliency_sanity.models import build_model, get_layer

LAYERS = {"vgg": "features.relu3", "resnet": "layer3"}


@pytest.fixture(params=["vgg", "resnet"])
def arch_model(request):
    return request.param, build_model(request.param, seed=0).eval()


@pytest.fixture
def x():
    return torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(4))


def minmax(m):
    m = m - m.flatten(1).amin(1)[:, None, None]
    return m / m.flatten(1).amax(1)[:, None, None]


def test_gradcam_equals_captum_layer_gradcam(arch_model, x):
    arch, model = arch_model
    target = torch.tensor([0, 5, 9])
    ours = attribute(model, x, target, "gradcam")
    layer_map = LayerGradCam(model, get_layer(model, LAYERS[arch])).attribute(x, target=target, relu_attributions=True)
    theirs = LayerAttribution.interpolate(layer_map, (28, 28), interpolate_mode="bilinear").squeeze(1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)  # float32


@pytest.mark.parametrize("ours_name,peer", [("gradcam", GradCAM), ("gradcam_pp", GradCAMPlusPlus)])
def test_cams_equal_pytorch_grad_cam(arch_model, x, ours_name, peer):
    """pytorch-grad-cam returns min-max scaled maps (resized with OpenCV, which equals torch's
    bilinear resize); we compare after the same scaling, float32 tolerance."""
    arch, model = arch_model
    classes = [1, 2, 3]
    with peer(model=model, target_layers=[get_layer(model, LAYERS[arch])]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes]))
    ours = minmax(attribute(model, x, torch.tensor(classes), ours_name))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-4)


def test_fullgrad_equals_pytorch_grad_cam(arch_model, x):
    arch, model = arch_model
    classes = [0, 4, 8]
    with FullGrad(model=model, target_layers=[]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes]))
    ours = minmax(attribute(model, x, torch.tensor(classes), "fullgrad"))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-4)


def test_aggregation_handling_is_identity_relu_abs():
    g = torch.tensor([-2.0, -0.5, 0.0, 1.5])
    assert torch.equal(handle(g, "signed"), g)
    assert torch.equal(handle(g, "positive"), torch.tensor([0.0, 0.0, 0.0, 1.5]))
    assert torch.equal(handle(g, "absolute"), g.abs())
    with pytest.raises(ValueError, match="unknown aggregation 'negative'"):
        handle(g, "negative")


class TwoChannel(torch.nn.Module):
    """A hand-checked net: two fixed 1x1 'feature' channels, the logit reads them with weights
    +1 and -1 after global average pooling, so dy/dA_k = +-1/(h*w) everywhere."""

    CAM_LAYER = "features"

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Conv2d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.features.weight[:] = torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)
        self.head = torch.nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.head.weight[:] = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def test_gradcam_variants_on_a_hand_checked_net():
    net = TwoChannel().eval()
    x = torch.rand(1, 1, 4, 4) + 0.1
    a1, a2 = x[0, 0], 2 * x[0, 0]
    n = 16
    # class 0: gradients +1/n on channel 1 and -1/n on channel 2
    signed = attribute(net, x, 0, "gradcam", aggregation="signed", relu=False)[0]
    torch.testing.assert_close(signed, (a1 - a2) / n)
    positive = attribute(net, x, 0, "gradcam", aggregation="positive", relu=False)[0]
    torch.testing.assert_close(positive, a1 / n)
    absolute = attribute(net, x, 0, "gradcam", aggregation="absolute", relu=False)[0]
    torch.testing.assert_close(absolute, (a1 + a2) / n)
    # absolute aggregation ignores the sign of the gradient: classes 0 and 1 get the same map
    other = attribute(net, x, 1, "gradcam", aggregation="absolute", relu=False)[0]
    torch.testing.assert_close(absolute, other)
    # the signed map flips with the class, so after the final ReLU the two classes differ
    assert not torch.allclose(attribute(net, x, 0, "gradcam"), attribute(net, x, 1, "gradcam"))


def test_attribute_many_equals_single_calls_with_one_forward(arch_model, x):
    _, model = arch_model
    methods = ["gradient", "input_x_gradient", "gradcam", ("gradcam/positive", "gradcam", {"aggregation": "positive"}),
               "gradcam_pp", "fullgrad", ("fullgrad/signed", "fullgrad", {"aggregation": "signed"}),
               ("ig", "integrated_gradients", {"steps": 4})]
    calls = {"n": 0}
    handle_ = model.register_forward_pre_hook(lambda m, i: calls.__setitem__("n", calls["n"] + 1))
    try:
        many = attribute_many(model, x, "top1", methods)
    finally:
        handle_.remove()
    assert calls["n"] == 1 + 1  # one shared pass + one for integrated gradients (4 steps in one batch)
    for label, name, opts in [(m, m, {}) if isinstance(m, str) else m for m in methods]:
        torch.testing.assert_close(many[label], attribute(model, x, "top1", name, **opts), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(many["target"], model(x).argmax(1))


def test_cam_errors():
    model = build_model("vgg", seed=0).eval()
    x = torch.rand(1, 1, 28, 28)
    with pytest.raises(ValueError, match="layer 'features.conv7' not found"):
        attribute(model, x, 0, "gradcam", layer="features.conv7")
    with pytest.raises(ValueError, match="spatial"):
        attribute(model, x, 0, "gradcam", layer="classifier.fc1")
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with pytest.raises(ValueError, match="no Conv2d layer"):
        attribute(mlp, x, 0, "gradcam")
    with pytest.raises(ValueError, match="unknown aggregation"):
        attribute(model, x, 0, "fullgrad", aggregation="max")


@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_torchvision_models_at_224(name):
    from saliency_sanity.models import torchvision_model

    model = torchvision_model(name).eval()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    maps = attribute_many(model, x, "top1", ["gradient", "input_x_gradient", "gradcam", "gradcam_pp", "fullgrad"])
    for label in ("gradient", "gradcam", "fullgrad"):
        assert maps[label].shape == (1, 224, 224) and torch.isfinite(maps[label]).all()
