"""Fidelity to the methods' authors and peers: FullGrad as its authors post-process it (a plain
transcription of idiap/fullgrad-saliency's formulas), the LRP epsilon-gamma-z^B composite against
Zennit's EpsilonGammaBox, LRP-epsilon's default against Input x Gradient and Zennit, and Guided
Grad-CAM against Captum's GuidedGradCam; on the project's VGG and ResNet, on a small net with
BatchNorm and on non-square 3-channel images. Peers are compared in float64."""
import pytest
import torch
import torch.nn.functional as F
from captum.attr import GuidedGradCam
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
from zennit.composites import EpsilonGammaBox, LayerMapComposite
from zennit.core import Stabilizer
from zennit.layer import Sum
from zennit.rules import Epsilon, Norm, Pass
from zennit.types import Activation, AvgPool, Convolution

from saliency_sanity import METHODS, attribute, attribute_many
from saliency_sanity.models.architectures import BasicBlock, build_model
from saliency_sanity.checks import handling

from helpers.peers import random_batchnorm, without_inplace

RGB = (2, 3, 20, 28)  # non-square, 3 channels: VGG pools to 5x7, the ResNet strides to 5x7


class BNNet(nn.Sequential):
    """Conv-with-bias -> BN, a bias-free conv -> BN feeding a biased conv WITHOUT a ReLU between (signed
    inputs for LRP-gamma), pooling, two linear layers."""

    def __init__(self, cin=3, classes=5):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            super().__init__(nn.Conv2d(cin, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                             nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                             nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, classes))
        random_batchnorm(self, seed=1)


def model_for(arch, rgb=False, dtype=torch.float64):
    """The project's VGG / ResNet (seed 0), for 1x28x28 or RGB images; ResNet BatchNorms randomised."""
    if arch == "bnnet":
        return BNNet(cin=3 if rgb else 1).to(dtype).eval()
    if arch == "vgg":
        model = build_model("vgg", in_channels=3 if rgb else 1, seed=0)
        if rgb:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1)
                model.classifier.fc1 = nn.Linear(64 * 5 * 7, 128)  # 20x28 pools to 5x7
    else:
        model = random_batchnorm(build_model("resnet", in_channels=3 if rgb else 1, seed=0))
    return model.to(dtype).eval()


def images(rgb=False, dtype=torch.float64, seed=3):
    shape = RGB if rgb else (3, 1, 28, 28)
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def targets(model, x):
    return torch.arange(len(x)) * 3 % 5  # classes 0, 3, 1 (every model has >= 5)


CASES = [("vgg", False), ("resnet", False), ("bnnet", True), ("vgg", True), ("resnet", True)]
IDS = ["vgg", "resnet", "bnnet-rgb", "vgg-rgb", "resnet-rgb"]


def close(ours, theirs, rtol=1e-7):
    """float64 agreement, the absolute tolerance relative to the map's size (untrained nets give small maps)."""
    assert ours.shape == theirs.shape
    assert theirs.abs().max() > 0
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=rtol * theirs.abs().max().item())


# ----------------------------------------------------------------------------- FullGrad

def reference_fullgrad(model, x, target, handling=torch.abs, signed=False):
    """FullGrad written out from the authors' formulas (idiap/fullgrad-saliency, FullGrad.saliency and
    _postProcess), independent of the package: gradients by full backward hooks on every Conv2d /
    BatchNorm2d with a bias, biases as FullGradExtractor computes them, each term handled (|.| in the
    original), min-max scaled per sample over channels and positions (eps 1e-6), summed over
    channels, bilinearly resized with align_corners=True, and added. ``signed``: division by max|.|."""
    model = without_inplace(model)
    grads, handles = {}, []

    def keep(module, grad_input, grad_output):
        grads[module] = grad_output[0]  # the gradient at the module's output

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) and m.bias is not None:
            handles.append(m.register_full_backward_hook(keep))
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    score = out[torch.arange(len(x)), target].sum()
    (grad_x,) = torch.autograd.grad(score, xg)
    for h in handles:
        h.remove()

    def post_process(t):
        t = handling(t)
        flat = t.reshape(len(t), -1)
        if signed:
            return t / (flat.abs().max(1).values.view(-1, 1, 1, 1) + 1e-6)
        t = t - flat.min(1).values.view(-1, 1, 1, 1)
        return t / (t.reshape(len(t), -1).max(1).values.view(-1, 1, 1, 1) + 1e-6)

    cam = post_process(grad_x * x).sum(1, keepdim=True)
    for m, g in grads.items():
        if isinstance(m, nn.BatchNorm2d):
            b = -(m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps)) + m.bias
        else:
            b = m.bias
        term = post_process(g * b.detach().view(1, -1, 1, 1))
        cam = cam + F.interpolate(term, size=x.shape[-2:], mode="bilinear", align_corners=True).sum(1, keepdim=True)
    assert len(grads) == sum(isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) and m.bias is not None
                             for m in model.modules())
    return cam[:, 0].detach()


@pytest.mark.parametrize("arch,rgb", CASES, ids=IDS)
def test_fullgrad_default_is_the_authors_post_processing(arch, rgb):
    model, x = model_for(arch, rgb), images(rgb)
    target = targets(model, x)
    ours = attribute(model, x, target, "fullgrad")
    close(ours, reference_fullgrad(model, x, target))
    # the per-channel scaling (pytorch-grad-cam) is a different map
    assert not torch.allclose(ours, attribute(model, x, target, "fullgrad", normalize="per_channel"))


@pytest.mark.parametrize("aggregation", ["positive", "signed"])
def test_fullgrad_variants_under_per_sample_scaling(aggregation):
    """positive: min-max of ReLU(terms); signed: terms / max|terms| per sample (the sign is kept)."""
    model, x = model_for("bnnet", True), images(True)
    target = torch.tensor([1, 4])
    handling = (lambda t: t.clamp(min=0)) if aggregation == "positive" else (lambda t: t)
    theirs = reference_fullgrad(model, x, target, handling, signed=aggregation == "signed")
    close(attribute(model, x, target, "fullgrad", aggregation=aggregation), theirs)
    if aggregation == "signed":
        assert (theirs < 0).any() and (theirs > 0).any()


def test_fullgrad_batchnorm_bias_terms_matter():
    """The BatchNorm effective bias is non-zero in these tests: without it the map would differ."""
    model, x = model_for("resnet"), images()
    target = targets(model, x)
    plain = build_model("resnet", seed=0).double().eval()  # fresh BatchNorm: effective bias 0
    assert not torch.allclose(attribute(model, x, target, "fullgrad"), attribute(plain, x, target, "fullgrad"))
    with pytest.raises(ValueError, match="unknown normalize 'per_image'"):
        attribute(model, x, target, "fullgrad", normalize="per_image")


# ----------------------------------------------------------------------------- LRP (Zennit)

def _block_forward(self, x):
    out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
    return self.relu2(self.canonizer_sum(torch.stack([self.shortcut(x), out], dim=-1)))


class ProjectResNetCanonizer(AttributeCanonizer):
    """Zennit's ResNet canonizer written for the project's BasicBlock (``shortcut`` and an ``Add``)."""

    def __init__(self):
        super().__init__(lambda name, m: {"forward": _block_forward.__get__(m), "canonizer_sum": Sum()}
                         if isinstance(m, BasicBlock) else None)


def zero_bn_eps(model):
    """Zennit's merge keeps BatchNorm's eps in an identity BatchNorm (x / sqrt(1 + eps)); eps = 0 makes
    both merges exact (our merge with eps is checked in test_methods_propagation)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0
    return model


def zennit(model, x, target, composite):
    with torch.no_grad():
        one_hot = torch.eye(model(x[:1]).shape[1], dtype=x.dtype)[target]
    with Gradient(model=without_inplace(model), composite=composite) as attributor:
        _, relevance = attributor(x, lambda out: one_hot * out)  # relevance starts as the target logit
    return relevance


def canonizers(model):
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        extra = [ProjectResNetCanonizer()] if any(isinstance(m, BasicBlock) for m in model.modules()) else []
        return [SequentialMergeBatchNorm(), *extra]
    return []


@pytest.mark.parametrize("arch,rgb", CASES, ids=IDS)
@pytest.mark.parametrize("options", [{}, {"epsilon": 0.25, "gamma": 0.1}], ids=["defaults", "eps0.25-gamma0.1"])
def test_lrp_composite_equals_zennit_epsilon_gamma_box(arch, rgb, options):
    model, x = zero_bn_eps(model_for(arch, rgb)), images(rgb)
    target = targets(model, x)
    params = {"epsilon": 1e-6, "gamma": 0.25, **options}  # Zennit's defaults are ours
    composite = EpsilonGammaBox(low=0.0, high=1.0, canonizers=canonizers(model), **params)
    ours = attribute(model, x, target, "lrp_composite", reduce=None, **options)
    close(ours, zennit(model, x, target, composite))


def test_lrp_composite_with_signed_pixels_equals_zennit():
    """Pixels in [-2, 2]: z^B with those bounds; the BNNet's third conv sees signed inputs (gamma's x- terms)."""
    model, x = zero_bn_eps(model_for("bnnet", True)), images(True) * 4 - 2
    target = torch.tensor([2, 0])
    composite = EpsilonGammaBox(low=-2.0, high=2.0, epsilon=0.1, gamma=0.5, canonizers=canonizers(model))
    ours = attribute(model, x, target, "lrp_composite", reduce=None, low=-2.0, high=2.0, epsilon=0.1, gamma=0.5)
    close(ours, zennit(model, x, target, composite))
    with pytest.raises(ValueError, match=r"lrp_composite uses the z\^B rule for inputs in \[low, high\] = \[0.0, 1.0\]"):
        attribute(model, x, target, "lrp_composite")
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        attribute(model, x, target, "lrp_composite", low=-2.0, high=2.0, gamma=-0.1)


def zennit_epsilon(model, x, target, epsilon):
    layer_map = [(Activation, Pass()), (AvgPool, Norm()), (Sum, Norm()), (Convolution, Epsilon(epsilon)),
                 (nn.Linear, Epsilon(epsilon))]
    return zennit(model, x, target, LayerMapComposite(layer_map=layer_map, canonizers=canonizers(model)))


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_lrp_epsilon_default_differs_from_input_x_gradient(arch):
    """The default epsilon (0.25) equals Zennit's Epsilon(0.25) and is NOT Input x Gradient, which
    LRP-0 is on these ReLU nets (BatchNorm merged; the ResNet's Norm rules keep a 1e-6 stabiliser)."""
    model, x = zero_bn_eps(model_for(arch)), images()
    target = targets(model, x)
    assert METHODS["lrp_epsilon"].defaults == {"epsilon": 0.25, "relative": False}
    ours = attribute(model, x, target, "lrp_epsilon", reduce=None)
    close(ours, zennit_epsilon(model, x, target, 0.25))
    ixg = attribute(model, x, target, "input_x_gradient", reduce=None)
    close(attribute(model, x, target, "lrp_epsilon", reduce=None, epsilon=0.0), ixg, rtol=1e-9 if arch == "vgg" else 1e-3)
    cosine = F.cosine_similarity(ours.flatten(1), ixg.flatten(1)).min()
    assert (ours - ixg).abs().max() > 0.5 * ixg.abs().max() and cosine < 0.99


@pytest.mark.parametrize("arch,rgb", [("vgg", False), ("resnet", True)], ids=["vgg", "resnet-rgb"])
def test_lrp_epsilon_relative_equals_zennit_norm_scaled_stabilizer(arch, rgb):
    model, x = zero_bn_eps(model_for(arch, rgb)), images(rgb)
    target = targets(model, x)
    ours = attribute(model, x, target, "lrp_epsilon", reduce=None, epsilon=0.25, relative=True)
    close(ours, zennit_epsilon(model, x, target, Stabilizer(0.25, norm_scale=True)))
    # scale-free: with the last layer's weight and bias x10 the logit is x10 and so is the map, exactly
    # (an absolute epsilon would weigh that layer's outputs differently)
    scaled = zero_bn_eps(model_for(arch, rgb))
    last = scaled.classifier.fc2 if arch == "vgg" else scaled.fc
    with torch.no_grad():
        last.weight.mul_(10.0)
        last.bias.mul_(10.0)
    close(attribute(scaled, x, target, "lrp_epsilon", reduce=None, relative=True), 10 * ours, rtol=1e-9)
    assert not torch.allclose(attribute(scaled, x, target, "lrp_epsilon", reduce=None),
                              10 * attribute(model, x, target, "lrp_epsilon", reduce=None))


# ----------------------------------------------------------------------------- Guided Grad-CAM (Captum)

LAYERS = {"vgg": "features.relu3", "resnet": "layer3", "bnnet": "6"}


def captum_guided_gradcam(model, x, target, layer, mode):
    peer = without_inplace(model)
    module = dict(peer.named_modules())[layer]
    return GuidedGradCam(peer, module).attribute(x, target=target, interpolate_mode=mode)


@pytest.mark.parametrize("arch,rgb", CASES, ids=IDS)
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_guided_gradcam_equals_captum(arch, rgb, mode):
    model, x = model_for(arch, rgb), images(rgb)
    target = targets(model, x)
    # the default layer: the model's CAM_LAYER, the BNNet's last Conv2d ("6")
    ours = attribute(model, x, target, "guided_gradcam", reduce=None, interpolate_mode=mode)
    close(ours, captum_guided_gradcam(model, x, target, LAYERS[arch], mode))


def test_guided_gradcam_layer_and_definition():
    """Another layer via ``layer=``; and the map IS Guided Backprop x the upsampled Grad-CAM map."""
    model, x = model_for("vgg", True), images(True)
    target = torch.tensor([4, 7])
    ours = attribute(model, x, target, "guided_gradcam", reduce=None, layer="features.conv2")
    close(ours, captum_guided_gradcam(model, x, target, "features.conv2", "bilinear"))
    product = (attribute(model, x, target, "guided_backprop", reduce=None)
               * attribute(model, x, target, "gradcam", layer="features.conv2").unsqueeze(1))
    close(ours, product, rtol=1e-12)
    with pytest.raises(ValueError, match="unknown interpolate_mode 'cubic'"):
        attribute(model, x, target, "guided_gradcam", interpolate_mode="cubic")
    assert METHODS["guided_gradcam"].kind == "pixel"
    assert handling("guided_gradcam") == "positive propagation"


# ----------------------------------------------------------------------------- attribute_many

@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_attribute_many_equals_attribute(arch):
    model, x = model_for(arch, dtype=torch.float32), images(dtype=torch.float32)
    methods = ["fullgrad", ("fullgrad/channel", "fullgrad", {"normalize": "per_channel"}),
               ("fullgrad/signed", "fullgrad", {"aggregation": "signed"}), "gradcam", "lrp_composite",
               "lrp_epsilon", ("lrp_epsilon/rel", "lrp_epsilon", {"relative": True}), "guided_gradcam",
               ("ggc/nearest", "guided_gradcam", {"interpolate_mode": "nearest"})]
    many = attribute_many(model, x, "top1", methods)
    for request in methods:
        label, name, opts = (request, request, {}) if isinstance(request, str) else request
        torch.testing.assert_close(many[label], attribute(model, x, "top1", name, **opts), rtol=1e-5, atol=1e-7)
