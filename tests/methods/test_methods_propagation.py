"""Modified back-propagation: Guided Backprop and Deconvnet against Captum, LRP against Zennit,
RectGrad against hand-checked values and an independent naive implementation; model safety."""
import copy

import numpy as np
import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop
from torch import nn
from torchvision.models.resnet import BasicBlock as TvBasicBlock, Bottleneck as TvBottleneck, ResNet
from zennit.attribution import Gradient
from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite
from zennit.layer import Sum
from zennit.rules import AlphaBeta, Epsilon, Norm, Pass, ZBox, ZPlus
from zennit.torchvision import ResNetCanonizer
from zennit.types import Activation, AvgPool, Convolution

from saliency_sanity import attribute
from saliency_sanity.models.architectures import BasicBlock, build_model

from helpers.model_state import assert_unchanged, state
from helpers.peers import RGB_SHAPE, random_batchnorm, rgb_images, rgb_model, without_inplace

# float64 everywhere a peer is compared: the implementations differ only in summation order
TOL = dict(rtol=1e-7, atol=1e-9)
PROPAGATION = ("guided_backprop", "deconvnet", "rectgrad", "lrp_epsilon", "lrp_alpha_beta", "lrp_zplus")


def project_model64(arch):
    return random_batchnorm(build_model(arch, seed=0)).double().eval()


def zero_bn_eps(model):
    """Zennit's merge leaves each BatchNorm computing x / sqrt(1 + eps) instead of the identity (it sets
    mean 0, var 1 but keeps eps), a 4e-4 relative difference here; with eps = 0 both are exact.
    Our merge with eps is checked against torch's fuse_conv_bn_eval and by conservation."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0
    return model


@pytest.fixture(params=["vgg", "resnet"])
def model64(request):
    return project_model64(request.param)


@pytest.fixture
def x64():
    return torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


# ----------------------------------------------------------------------------- Captum

@pytest.mark.parametrize("ours,peer", [("guided_backprop", GuidedBackprop), ("deconvnet", Deconvolution)])
def test_modified_relu_backprop_equals_captum(model64, x64, ours, peer):
    target = torch.tensor([2, 5, 8])
    theirs = peer(without_inplace(model64)).attribute(x64, target=target)
    torch.testing.assert_close(attribute(model64, x64, target, ours, reduce=None), theirs, **TOL)


def test_reused_inplace_relu_equals_captum_with_fresh_modules():
    """One in-place ReLU module called twice per forward: each call keeps its own input."""

    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.act = nn.ReLU(inplace=True)
            self.fc = nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            return self.fc(self.act(self.c2(self.act(self.c1(x)))).flatten(1))

    torch.manual_seed(0)
    net = Reuse().double().eval()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    peer = without_inplace(net)
    peer.act2 = nn.ReLU()
    peer.forward = lambda x: peer.fc(peer.act2(peer.c2(peer.act(peer.c1(x)))).flatten(1))
    for ours, captum in (("guided_backprop", GuidedBackprop), ("deconvnet", Deconvolution)):
        theirs = captum(peer).attribute(x, target=1)
        torch.testing.assert_close(attribute(net, x, 1, ours, reduce=None), theirs, **TOL)
    # RectGrad thresholds each call of the reused module on its own activations
    torch.testing.assert_close(attribute(net, x, 1, "rectgrad", reduce=None, percentile=50),
                               attribute(peer, x, 1, "rectgrad", reduce=None, percentile=50), **TOL)


# ----------------------------------------------------------------------------- Zennit

def _block_forward(self, x):
    """Our BasicBlock with the residual sum as Zennit's ``Sum`` over a stack (its ResNet canonizer's way)."""
    out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
    return self.relu2(self.canonizer_sum(torch.stack([self.shortcut(x), out], dim=-1)))


class ProjectResNetCanonizer(AttributeCanonizer):
    """zennit.torchvision.ResNetCanonizer targets torchvision's blocks (``downsample``, ``out +=``);
    ours have ``shortcut`` and an ``Add`` module, so the same canonizer is written for them."""

    def __init__(self):
        super().__init__(lambda name, m: {"forward": _block_forward.__get__(m), "canonizer_sum": Sum()}
                         if isinstance(m, BasicBlock) else None)


def zennit_lrp(model, x, target, rule, first_rule=None, canonizers=()):
    layer_map = [(Activation, Pass()), (AvgPool, Norm()), (Sum, Norm()), (Convolution, rule), (nn.Linear, rule)]
    canonizers = list(canonizers)
    if first_rule is None:
        composite = LayerMapComposite(layer_map=layer_map, canonizers=canonizers)
    else:
        composite = SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=[(Convolution, first_rule)],
                                                  canonizers=canonizers)
    one_hot = torch.eye(10, dtype=x.dtype)[target]
    with Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x, lambda out: one_hot * out)  # relevance starts as the target logit
    return relevance


LRP_CASES = [
    ("lrp_epsilon", {"epsilon": 1e-6}, lambda: Epsilon(1e-6), None),
    ("lrp_epsilon", {"epsilon": 0.25}, lambda: Epsilon(0.25), None),
    ("lrp_alpha_beta", {"alpha": 2.0, "beta": 1.0}, lambda: AlphaBeta(2.0, 1.0), None),
    ("lrp_alpha_beta", {"alpha": 1.0, "beta": 0.0}, lambda: AlphaBeta(1.0, 0.0), None),
    # our z+ composite: z^B on the first layer (pixels in [0, 1]), z+ above
    ("lrp_zplus", {}, lambda: ZPlus(), lambda: ZBox(0.0, 1.0)),
]


@pytest.mark.parametrize("ours,options,rule,first", LRP_CASES)
def test_lrp_equals_zennit(model64, x64, ours, options, rule, first):
    """On the ResNet with BatchNorm merged (SequentialMergeBatchNorm finds every conv-BN pair of our
    blocks, which register conv before bn) and residual sums split by the Norm rule."""
    model = zero_bn_eps(model64)
    canonizers = [SequentialMergeBatchNorm(), ProjectResNetCanonizer()] if hasattr(model, "layer1") else []
    target = torch.tensor([0, 4, 9])
    theirs = zennit_lrp(without_inplace(model), x64, target, rule(), first and first(), canonizers)
    torch.testing.assert_close(attribute(model, x64, target, ours, reduce=None, **options), theirs, **TOL)


RGB_CASES = [pytest.param("guided_backprop", {}, None, None, id="guided_backprop")] + [
    pytest.param(*case, id="-".join([case[0], *(f"{v:g}" for v in case[1].values())])) for case in LRP_CASES]


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
@pytest.mark.parametrize("ours,options,rule,first", RGB_CASES)
def test_equals_peers_on_rgb_non_square_images(arch, ours, options, rule, first):
    """Guided Backprop (Captum) and the LRP rules (Zennit) on 3-channel 22x30 images, float64. The narrow
    untrained nets give maps of 1e-6 to 1e-2, so the absolute tolerance is relative to the map's size."""
    model = zero_bn_eps(rgb_model(arch, torch.float64))
    x = rgb_images(torch.float64)
    target = torch.tensor([3, 8])
    if rule is None:
        theirs = GuidedBackprop(without_inplace(model)).attribute(x, target=target)
    else:
        canonizers = [SequentialMergeBatchNorm(), ProjectResNetCanonizer()] if arch == "resnet" else []
        theirs = zennit_lrp(without_inplace(model), x, target, rule(), first and first(), canonizers)
    ours = attribute(model, x, target, ours, reduce=None, **options)
    assert ours.shape == RGB_SHAPE and ours.abs().amax((1, 2, 3)).min() > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-7, atol=1e-7 * theirs.abs().max().item())


def test_lrp_with_signed_pixels_equals_zennit(x64):
    """Normalised pixels in [-1, 1]: alpha-beta's x- terms are live on the first layer; z^B gets the bounds."""
    model = project_model64("vgg")
    x = x64 * 2 - 1
    target = torch.tensor([5, 6, 7])
    theirs = zennit_lrp(without_inplace(model), x, target, AlphaBeta(2.0, 1.0))
    torch.testing.assert_close(attribute(model, x, target, "lrp_alpha_beta", reduce=None), theirs, **TOL)
    theirs = zennit_lrp(without_inplace(model), x, target, ZPlus(), ZBox(-1.0, 1.0))
    torch.testing.assert_close(attribute(model, x, target, "lrp_zplus", reduce=None, low=-1.0, high=1.0), theirs,
                               **TOL)


@pytest.mark.parametrize("method", ["lrp_epsilon", "lrp_alpha_beta", "lrp_zplus"])
def test_batchnorm_merge_equals_torch_fused_model(x64, method):
    """The merge inside the pass (eps included) equals a copy whose convolutions torch has fused with
    their BatchNorms (torch.nn.utils.fusion.fuse_conv_bn_eval) and whose BatchNorms are removed."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = project_model64("resnet")
    fused = copy.deepcopy(model)
    pairs = [(fused.stem, "conv", "bn")] + [(b, c, n) for b in (fused.layer1, fused.layer2, fused.layer3)
                                             for c, n in (("conv1", "bn1"), ("conv2", "bn2"))]
    pairs += [(b.shortcut, "conv", "bn") for b in (fused.layer2, fused.layer3)]
    for parent, conv, bn in pairs:
        setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn)))
        setattr(parent, bn, nn.Identity())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    torch.testing.assert_close(attribute(model, x64, "top1", method, reduce=None),
                               attribute(fused, x64, "top1", method, reduce=None), **TOL)


@pytest.mark.parametrize("block,width", [(TvBasicBlock, 64), (TvBottleneck, 16)])
def test_lrp_on_torchvision_resnet_equals_zennit_resnet_canonizer(block, width):
    """torchvision blocks add in place; our pass gives them an explicit sum, as Zennit's canonizer does."""
    torch.manual_seed(0)
    model = ResNet(block, [1, 1, 1, 1], num_classes=10, width_per_group=width)
    model = zero_bn_eps(random_batchnorm(model).double().eval())
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    target = torch.tensor([3, 7])
    for ours, options, rule, first in (LRP_CASES[0], LRP_CASES[2], LRP_CASES[4]):
        theirs = zennit_lrp(without_inplace(model), x, target, rule(), first and first(), [ResNetCanonizer()])
        torch.testing.assert_close(attribute(model, x, target, ours, reduce=None, **options), theirs, **TOL)
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_lrp_zero_equals_input_times_gradient_without_batchnorm(x64):
    """LRP-0 on a ReLU network with max pooling is x * gradient (Montavon et al. 2019, "LRP: an
    overview"), biases included: an identity checked without any LRP peer."""
    model = project_model64("vgg")
    xg = x64.clone().requires_grad_(True)
    target = torch.tensor([1, 3, 6])
    model(xg).gather(1, target[:, None]).sum().backward()
    torch.testing.assert_close(attribute(model, x64, target, "lrp_epsilon", reduce=None, epsilon=0.0),
                               x64 * xg.grad, rtol=1e-9, atol=1e-12)


class BiasFree(nn.Module):
    """A project model with every bias and BatchNorm shift zero (BatchNorm scales stay random)."""

    def __init__(self, arch):
        super().__init__()
        self.net = random_batchnorm(build_model(arch, seed=1), seed=1)
        with torch.no_grad():
            for m in self.net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.zero_()
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
@pytest.mark.parametrize("method,options", [("lrp_epsilon", {"epsilon": 1e-9}),
                                            ("lrp_alpha_beta", {"alpha": 1.0, "beta": 0.0})])
def test_lrp_conserves_the_logit_without_biases(arch, method, options):
    """Without biases relevance is conserved layer by layer, so the map sums to the explained logit;
    on the ResNet this covers BatchNorm merging (eps included) and the residual split."""
    model = BiasFree(arch).double().eval()
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.05
    maps = attribute(model, x, "top1", method, **options)
    with torch.no_grad():
        logits = model(x).max(1).values
    # the 1e-6 stabilisers (alpha-beta, pooling and residual Norm rules) absorb up to ~1e-5 of the relevance
    torch.testing.assert_close(maps.sum((1, 2)), logits, rtol=1e-4, atol=1e-8)


class NoDeadUnits(nn.Module):
    """Bias-free, unpadded, weights 0.4 + 0.4 N(0, 1) and one negative weight in each first-layer filter:
    for positive pixels every unit is active and has positive and negative weights (checked in the test)."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv1, self.relu1, self.pool1 = nn.Conv2d(1, 4, 3, bias=False), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = nn.Conv2d(4, 6, 3, bias=False), nn.ReLU(), nn.AvgPool2d(2)
        self.flatten, self.fc = nn.Flatten(), nn.Linear(150, 10, bias=False)
        with torch.no_grad():
            for layer in (self.conv1, self.conv2, self.fc):
                layer.weight.copy_(0.4 + 0.4 * torch.randn(layer.weight.shape, generator=gen))
            self.conv1.weight[:, 0, 0, 0] = -0.2

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        return self.fc(self.flatten(self.pool2(self.relu2(self.conv2(x)))))


def test_lrp_alpha_beta_conserves_without_dead_units():
    """alpha z+/z+ - beta z-/z- sums to (alpha - beta) R_j = R_j only where unit j has contributions of
    both signs; where it has no negative one the beta term vanishes and alpha R_j comes out (e.g. at
    zero-padded borders of the project models). On a net where every unit has both, alpha2-beta1
    conserves the logit like alpha1-beta0."""
    model = NoDeadUnits().double().eval()
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.05
    with torch.no_grad():
        z1 = model.conv1(x)
        z2 = model.conv2(model.pool1(z1.relu()))
    assert (z1 > 0).all() and (z2 > 0).all()
    for layer in (model.conv1, model.conv2, model.fc):
        w = layer.weight.flatten(1)
        assert ((w > 0).any(1) & (w < 0).any(1)).all()
    logits = model(x).detach()
    target = logits.argmax(1)
    for alpha, beta in ((2.0, 1.0), (1.0, 0.0), (3.0, 2.0)):
        maps = attribute(model, x, target, "lrp_alpha_beta", alpha=alpha, beta=beta)
        # the 1e-6 stabiliser in each denominator: up to ~1e-5 relative where z- is small
        torch.testing.assert_close(maps.sum((1, 2)), logits.gather(1, target[:, None])[:, 0], rtol=1e-4, atol=0)


# ----------------------------------------------------------------------------- RectGrad

class TinyRelu(nn.Module):
    """4 inputs -> 5 hidden ReLU units -> 2 logits, weights picked so every value is checked by hand:
    for x = (1, 2, 0.5, 3) the hidden pre-activations are z = (2.5, 3.5, 2, 3.5, -1), so a = (2.5, 3.5,
    2, 3.5, 0); the gradient of logit 0 at a is g = (1, -2, 3, 0.5, 1) and the importance a*g =
    (2.5, -7, 6, 1.75, 0)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 5, bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(5, 2, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, 0, 0, 0.5], [0, 1, 0, 0.5], [0, 0, 1, 0.5], [0.5, 0, 0, 1],
                                                [-1, 0, 0, 0]]))
            self.fc2.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 0.5, 1.0], [0.2, 0.1, -0.3, 0.4, 0.0]]))

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x.flatten(1))))


@pytest.mark.parametrize("percentile,kept,expected", [
    # importances sorted descending (6, 2.5, 1.75, 0, -7); tau at descending rank round(4 (1 - q/100))
    (80, [0, 0, 1, 0, 0], [0.0, 0.0, 3.0, 1.5]),    # rank 1: tau = 2.5, only unit 2 passes
    (60, [1, 0, 1, 0, 0], [1.0, 0.0, 3.0, 2.0]),    # rank 2: tau = 1.75 (strict: unit 3 at 1.75 is cut)
    (0, [1, 0, 1, 1, 1], [0.25, 0.0, 3.0, 2.5]),    # tau = min = -7: all but the minimum, the dead unit 4 too
])
def test_rectgrad_by_hand(percentile, kept, expected):
    net = TinyRelu().double().eval()
    x = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64).view(1, 1, 2, 2)
    g = net.fc2.weight[0].detach()
    # the map is W1^T (g * kept); the literal expected values are that product worked out by hand
    torch.testing.assert_close((net.fc1.weight.detach().T @ (g * torch.tensor(kept))).view(1, 1, 2, 2),
                               torch.tensor(expected, dtype=torch.float64).view(1, 1, 2, 2))
    ours = attribute(net, x, 0, "rectgrad", reduce=None, percentile=percentile)
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64).view(1, 1, 2, 2))
    torch.testing.assert_close(attribute(net, x, 0, "rectgrad", reduce=None, percentile=percentile, times_input=True),
                               ours * x)


class _NaiveRectFn(torch.autograd.Function):
    """Kim et al.'s rule written independently: numpy, a full descending sort, one sample at a time."""

    @staticmethod
    def forward(ctx, z, percentile):
        a = z.clamp(min=0)
        ctx.save_for_backward(a)
        ctx.percentile = percentile
        return a

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        out = np.zeros(grad.shape)
        for i in range(grad.shape[0]):
            importance = (a[i] * grad[i]).numpy()
            ordered = np.sort(importance.ravel())[::-1]
            tau = ordered[int(np.round((ordered.size - 1) * (1 - ctx.percentile / 100)))]
            out[i] = np.where(importance > tau, grad[i].numpy(), 0.0)
        return torch.from_numpy(out).to(grad), None


class NaiveRectReLU(nn.Module):
    def __init__(self, percentile):
        super().__init__()
        self.percentile = percentile

    def forward(self, z):
        return _NaiveRectFn.apply(z, self.percentile)


@pytest.mark.parametrize("percentile", [98, 50, 0])
def test_rectgrad_equals_naive_implementation(model64, x64, percentile):
    naive = copy.deepcopy(model64)
    for parent in list(naive.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, NaiveRectReLU(percentile))
    target = torch.tensor([1, 2, 3])
    xg = x64.clone().requires_grad_(True)
    naive(xg).gather(1, target[:, None]).sum().backward()
    ours = attribute(model64, x64, target, "rectgrad", reduce=None, percentile=percentile)
    torch.testing.assert_close(ours, xg.grad, **TOL)
    assert ours.abs().sum() > 0


# ----------------------------------------------------------------------------- safety and errors

@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_model_untouched_after_success_and_failure(arch, x64):
    model = project_model64(arch)
    expected = {m: attribute(model, x64, "top1", m) for m in PROPAGATION}
    model.train()  # calls evaluate in eval mode (BatchNorm on running statistics) and give train mode back
    next(model.parameters()).requires_grad_(False)
    before = state(model)
    for method in PROPAGATION:
        torch.testing.assert_close(attribute(model, x64, "top1", method), expected[method], rtol=0, atol=0)
    with pytest.raises(ValueError, match="out of range"):  # raised after the forward pass, hooks attached
        attribute(model, x64, 42, "lrp_alpha_beta")
    with pytest.raises(RuntimeError):  # raised inside the forward pass: 2 channels for a 1-channel model
        attribute(model, x64.expand(-1, 2, -1, -1), 0, "rectgrad")
    assert_unchanged(model, before)


def test_torchvision_blocks_restored_after_failure():
    model = ResNet(TvBottleneck, [1, 1, 1, 1], num_classes=10, width_per_group=16).eval()
    before = state(model)
    with pytest.raises(ValueError, match="out of range"):
        attribute(model, torch.rand(1, 3, 32, 32), 10, "lrp_epsilon")
    assert_unchanged(model, before)


def test_errors_name_the_problem():
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    for method in ("guided_backprop", "deconvnet", "rectgrad"):
        with pytest.raises(ValueError, match=rf"Sequential has no nn.ReLU module; {method} modifies the backward "
                                             r"pass of ReLU modules \(functional F.relu"):
            attribute(mlp, x, 0, method)
    vgg = build_model("vgg", seed=0).eval()
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        attribute(vgg, x, 0, "lrp_alpha_beta", alpha=2.0, beta=0.5)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        attribute(vgg, x, 0, "lrp_alpha_beta", alpha=0.5, beta=-0.5)
    with pytest.raises(ValueError, match=r"percentile must be a number in \[0, 100\)"):
        attribute(vgg, x, 0, "rectgrad", percentile=100)
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        attribute(vgg, x, 0, "lrp_epsilon", epsilon=-1.0)
    with pytest.raises(ValueError, match=r"z\^B rule for inputs in \[low, high\] = \[0.0, 1.0\], but x lies in "
                                         r"\[-0.99\d*, 0.99\d*\]; pass low= and high="):
        attribute(vgg, x * 2 - 1, 0, "lrp_zplus")
    attribute(vgg, x * 2 - 1, 0, "lrp_zplus", low=-1.0, high=1.0)  # the documented fix works
    layer_norm = nn.Sequential(nn.Conv2d(1, 2, 3), nn.LayerNorm([2, 26, 26]), nn.ReLU(), nn.Flatten(),
                               nn.Linear(1352, 3))
    with pytest.raises(ValueError, match=r"no rule for layer '1' \(LayerNorm\); supported: Conv2d"):
        attribute(layer_norm, x, 0, "lrp_epsilon")
    tanh = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(1352, 3))
    with pytest.raises(ValueError, match=r"no rule for layer '1' \(Tanh\)"):
        attribute(tanh, x, 0, "lrp_alpha_beta")
    bn_late = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(1352, 3)).eval()
    before = state(bn_late)
    with pytest.raises(ValueError, match=r"\['2'\] do not directly follow a Conv2d"):  # found in the forward pass
        attribute(bn_late, x, 0, "lrp_epsilon")
    assert_unchanged(bn_late, before)


def test_paper_catalogue_records_positive_propagation():
    """Khakzar et al. (2020): Guided Backprop, RectGrad and z+ propagate positively, and so does the
    alpha1-beta0 request of lrp_alpha_beta, whose default alpha2-beta1 is signed: handling belongs to a
    request (method and options), so the catalogue of requests records it, not the registry."""
    from saliency_sanity.checks import PAPER_METHODS
    from saliency_sanity.methods import METHODS

    positive = {label for label, name, _, kind in PAPER_METHODS if name in PROPAGATION and kind == "positive propagation"}
    assert positive == {"guided_backprop", "rectgrad", "lrp_zplus", "lrp_alpha1_beta0"}
    assert all(METHODS[n].family == "propagation" and METHODS[n].kind == "pixel" for n in PROPAGATION)
    assert METHODS["lrp_alpha_beta"].defaults == {"alpha": 2.0, "beta": 1.0}
    assert METHODS["lrp_epsilon"].defaults == {"epsilon": 0.25, "relative": False}  # not LRP-0 = Input x Gradient


@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_torchvision_models_at_224(name):
    from saliency_sanity.models.architectures import torchvision_model

    model = torchvision_model(name).eval()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for method in PROPAGATION:
        maps = attribute(model, x, "top1", method)
        assert maps.shape == (1, 224, 224) and torch.isfinite(maps).all() and maps.abs().sum() > 0, method
