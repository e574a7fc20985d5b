"""Grad-CAM, Grad-CAM++ and FullGrad against Captum and pytorch-grad-cam, and the aggregation family."""
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from pytorch_grad_cam import FullGrad, GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from saliency_sanity import attribute, attribute_many
from saliency_sanity.methods.cam import handle
from saliency_sanity.models.architectures import build_model, get_layer

from helpers.peers import random_batchnorm, rgb_images, rgb_model

LAYERS = {"vgg": "features.relu3", "resnet": "layer3"}
CLASSES = [3, 4, 8]  # classes whose Grad-CAM is non-zero on every image of every case


def live_batchnorm(model):
    """Random BatchNorm statistics, so that FullGrad's BatchNorm bias terms are live, and in every
    BatchNorm channel 0 with an effective bias of exactly 0 (eps = 0, var = weight = 1, bias = mean):
    the per-channel scaling hides the size of a bias, not whether it vanishes, so a wrong formula for
    the effective bias gives channel 0 a map of its own."""
    random_batchnorm(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = 0.0
                m.running_var[0], m.weight[0], m.bias[0] = 1.0, 1.0, m.running_mean[0]
    return model


@pytest.fixture(params=["vgg", "resnet", "vgg-rgb", "resnet-rgb"])
def case(request):
    """(CAM layer, model, images): the 1x28x28 project models and the narrow 3-channel models on
    non-square 22x30 images (peers.RGB_SHAPE); float32, as pytorch-grad-cam computes in float32."""
    arch, rgb = request.param.split("-")[0], request.param.endswith("rgb")
    model = rgb_model(arch) if rgb else build_model(arch, seed=0).eval()
    x = rgb_images() if rgb else torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    return LAYERS[arch], live_batchnorm(model), x


def minmax(m):
    m = m - m.flatten(1).amin(1)[:, None, None]
    return m / m.flatten(1).amax(1)[:, None, None]


def test_gradcam_equals_captum_layer_gradcam(case):
    layer, model, x = case
    target = torch.tensor(CLASSES[:len(x)])
    ours = attribute(model, x, target, "gradcam")
    layer_map = LayerGradCam(model, get_layer(model, layer)).attribute(x, target=target, relu_attributions=True)
    theirs = LayerAttribution.interpolate(layer_map, x.shape[-2:], interpolate_mode="bilinear").squeeze(1)
    assert ours.shape == (len(x), *x.shape[-2:]) and (ours.flatten(1).amax(1) > 0).all()
    # float32; the untrained nets' maps are small, so the absolute tolerance follows their size
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6 * theirs.abs().max().item())


@pytest.mark.parametrize("ours_name,peer", [("gradcam", GradCAM), ("gradcam_pp", GradCAMPlusPlus)])
def test_cams_equal_pytorch_grad_cam(case, ours_name, peer):
    """pytorch-grad-cam returns min-max scaled maps (resized with OpenCV, which equals torch's
    bilinear resize); we compare after the same scaling, float32 tolerance."""
    layer, model, x = case
    classes = CLASSES[:len(x)]
    with peer(model=model, target_layers=[get_layer(model, layer)]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes]))
    ours = attribute(model, x, torch.tensor(classes), ours_name)
    assert (ours.flatten(1).amax(1) > ours.flatten(1).amin(1)).all()  # no constant map, which scales to 0
    torch.testing.assert_close(minmax(ours), theirs, rtol=1e-4, atol=2e-4)


def test_fullgrad_equals_pytorch_grad_cam(case):
    """Every BatchNorm's effective bias is non-zero but in channel 0, where it is exactly 0 (see
    live_batchnorm): the bias-gradient terms of BatchNorm layers are part of the comparison."""
    _, model, x = case
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            bias = m.bias - m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps)
            assert bias[0] == 0 and bias[1:].abs().min() > 1e-4
    classes = [0, 4, 8][:len(x)]
    with FullGrad(model=model, target_layers=[]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes]))
    # pytorch-grad-cam scales every channel of every term to [0, 1], and the sum once more
    ours = attribute(model, x, torch.tensor(classes), "fullgrad", normalize="per_channel")
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-4)  # float32, peer in NumPy/OpenCV


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


class Positive(TwoChannel):
    """TwoChannel with a positive read-out and a positive conv bias: every gradient is >= 0."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Conv2d(1, 2, 1, bias=True)
        with torch.no_grad():
            self.features.weight[:] = torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)
            self.features.bias[:] = torch.tensor([0.5, 0.25])
            self.head.weight[:] = torch.tensor([[1.0, 0.5], [0.25, 2.0]])


def test_variants_agree_when_every_gradient_is_non_negative():
    net = Positive().eval()
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) + 0.1
    for name in ("gradcam", "gradcam_pp"):
        signed = attribute(net, x, 0, name, aggregation="signed", relu=False)
        for aggregation in ("positive", "absolute"):
            torch.testing.assert_close(attribute(net, x, 0, name, aggregation=aggregation, relu=False), signed)
    # FullGrad's signed variant scales by max|.| instead of min-max (our choice), so only the two
    # non-negative handlings must agree
    torch.testing.assert_close(attribute(net, x, 1, "fullgrad", aggregation="positive"),
                               attribute(net, x, 1, "fullgrad", aggregation="absolute"))


def test_absolute_aggregation_ignores_the_sign_of_the_gradient():
    """In TwoChannel (with a conv bias) class 1's gradients are exactly minus class 0's: the
    absolute variants of Grad-CAM and FullGrad give both classes the same map, the signed ones do
    not. Grad-CAM++ is the exception: its coefficient G^2 / (2 G^2 + sum A G^3) sees the sign of
    G through G^3, so even its absolute variant tells the two classes apart."""
    net = TwoChannel().eval()
    net.features.bias = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1)) + 0.1
    pp0, pp1 = (attribute(net, x, c, "gradcam_pp", aggregation="absolute") for c in (0, 1))
    assert not torch.allclose(pp0, pp1)
    for name in ("gradcam", "fullgrad"):
        a0, a1 = (attribute(net, x, c, name, aggregation="absolute") for c in (0, 1))
        torch.testing.assert_close(a0, a1)
        s0, s1 = (attribute(net, x, c, name, aggregation="signed") for c in (0, 1))
        assert not torch.allclose(s0, s1), name


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
    """Every gradient/CAM method runs on torchvision's models at 224x224 (random weights, cheap
    options) and returns finite maps of the input's size."""
    from saliency_sanity.models.architectures import torchvision_model

    model = torchvision_model(name).eval()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    methods = ["gradient", "input_x_gradient", "gradcam", "gradcam_pp", "fullgrad",
               ("smoothgrad", "smoothgrad", {"n_samples": 2}), ("integrated_gradients", "integrated_gradients", {"steps": 2})]
    maps = attribute_many(model, x, "top1", methods)
    assert len(maps) == len(methods) + 1
    for label, value in maps.items():
        if label != "target":
            assert value.shape == (1, 224, 224) and torch.isfinite(value).all(), label
