"""Modified back-propagation against Captum (Guided Backprop, Deconvolution) and Zennit (LRP rules)."""
import copy

import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import LayerMapComposite, NameLayerMapComposite
from zennit.rules import AlphaBeta, Epsilon, Norm, Pass, ZBox, ZPlus
from zennit.types import Activation, AvgPool

from saliency_sanity import attribute
from saliency_sanity.models import build_model

TOL = dict(rtol=1e-7, atol=1e-9)  # float64; only summation order differs


def without_inplace(model):
    """Captum's full backward hooks refuse in-place ReLUs; the peer gets a copy without them."""
    clone = copy.deepcopy(model)
    for m in clone.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return clone


@pytest.fixture(params=["vgg", "resnet"])
def model64(request):
    return build_model(request.param, seed=0).double().eval()


@pytest.fixture
def x64():
    return torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


@pytest.mark.parametrize("ours,peer", [("guided_backprop", GuidedBackprop), ("deconvnet", Deconvolution)])
def test_modified_relu_backprop_equals_captum(model64, x64, ours, peer):
    target = torch.tensor([2, 5, 8])
    theirs = peer(without_inplace(model64)).attribute(x64, target=target)
    torch.testing.assert_close(attribute(model64, x64, target, ours, reduce=None), theirs, **TOL)


def zennit_lrp(model, x, target, layer_rule, first_rule=None):
    layer_map = [(Activation, Pass()), (AvgPool, Norm()), (nn.Conv2d, layer_rule), (nn.Linear, layer_rule)]
    if first_rule is None:
        composite = LayerMapComposite(layer_map=layer_map)
    else:
        composite = NameLayerMapComposite(name_map=[(["features.conv1"], first_rule)], layer_map=layer_map)
    one_hot = torch.eye(10, dtype=x.dtype)[target]
    with Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x, lambda out: one_hot * out)
    return relevance


@pytest.mark.parametrize("ours,options,rule", [
    ("lrp_epsilon", {"epsilon": 1e-6}, Epsilon(1e-6)),
    ("lrp_epsilon", {"epsilon": 0.25}, Epsilon(0.25)),
    ("lrp_alpha_beta", {"alpha": 2.0, "beta": 1.0}, AlphaBeta(2.0, 1.0)),
    ("lrp_alpha_beta", {"alpha": 1.0, "beta": 0.0}, AlphaBeta(1.0, 0.0)),
])
def test_lrp_equals_zennit_on_vgg(x64, ours, options, rule):
    model = build_model("vgg", seed=0).double().eval()
    target = torch.tensor([0, 4, 9])
    theirs = zennit_lrp(without_inplace(model), x64, target, rule)
    torch.testing.assert_close(attribute(model, x64, target, ours, reduce=None, **options), theirs, **TOL)


def test_lrp_zplus_equals_zennit_zbox_then_zplus(x64):
    model = build_model("vgg", seed=0).double().eval()
    target = torch.tensor([1, 3, 6])
    theirs = zennit_lrp(without_inplace(model), x64, target, ZPlus(), first_rule=ZBox(0.0, 1.0))
    torch.testing.assert_close(attribute(model, x64, target, "lrp_zplus", reduce=None), theirs, **TOL)


class BiasFree(nn.Module):
    def __init__(self, resnet=False):
        super().__init__()
        self.net = build_model("resnet" if resnet else "vgg", seed=1)
        for m in self.net.modules():
            if getattr(m, "bias", None) is not None and not isinstance(m, nn.BatchNorm2d):
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.BatchNorm2d):
                nn.init.zeros_(m.bias)
                m.running_mean.zero_()
        self.CAM_LAYER = None

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("resnet", [False, True])
@pytest.mark.parametrize("method,options", [("lrp_epsilon", {"epsilon": 1e-9}),
                                            ("lrp_alpha_beta", {"alpha": 1.0, "beta": 0.0})])
def test_lrp_conserves_the_logit_without_biases(resnet, method, options):
    """Without biases (BatchNorm merged with zero shift) relevance is conserved layer by layer: the
    map sums to the explained logit. On the ResNet this also checks the residual split.
    (alpha2-beta1 is not conservative where a neuron has no negative contribution, so alpha1-beta0.)"""
    model = BiasFree(resnet).double().eval()
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.05
    maps = attribute(model, x, "top1", method, **options)
    with torch.no_grad():
        logits = model(x).max(1).values
    # the 1e-6 stabiliser of the pooling and residual Norm rules absorbs ~1e-5 of the relevance
    torch.testing.assert_close(maps.sum((1, 2)), logits, rtol=1e-4, atol=1e-8)


class TinyRelu(nn.Module):
    """One hidden ReLU layer with hand-picked weights: hidden a = relu(W1 x), y = W2 a."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 5, bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(5, 2, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.eye(5, 4) + 0.1)
            self.fc2.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 0.5, 1.0], [0.2, 0.1, -0.3, 0.4, 0.0]]))

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x.flatten(1)))).view(len(x), -1)


def test_rectgrad_keeps_only_units_above_the_percentile():
    net = TinyRelu().double().eval()
    x = torch.tensor([[1.0, 2.0, 0.5, 3.0]], dtype=torch.float64).view(1, 1, 2, 2)
    a = torch.relu(net.fc1.weight @ x.flatten())
    g = net.fc2.weight[0]
    importance = a * g
    tau = torch.quantile(importance, 0.6)
    kept = g * (importance > tau)
    expected = (net.fc1.weight.T @ (kept * (net.fc1.weight @ x.flatten() > 0))).view(1, 1, 2, 2)
    torch.testing.assert_close(attribute(net, x, 0, "rectgrad", reduce=None, percentile=60), expected)
    # percentile 0 keeps every unit whose importance is above the minimum
    assert not torch.allclose(attribute(net, x, 0, "rectgrad", percentile=0), attribute(net, x, 0, "rectgrad", percentile=60))


def test_reused_relu_and_inplace_match_fresh_modules():
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
    theirs = GuidedBackprop(peer).attribute(x, target=1)
    torch.testing.assert_close(attribute(net, x, 1, "guided_backprop", reduce=None), theirs, **TOL)


def test_model_untouched_after_success_and_failure(model64, x64):
    before = {k: v.clone() for k, v in model64.state_dict().items()}
    flags = [p.requires_grad for p in model64.parameters()]
    for method in ("guided_backprop", "rectgrad", "lrp_epsilon", "lrp_zplus"):
        attribute(model64, x64, "top1", method)
    with pytest.raises(ValueError, match="out of range"):
        attribute(model64, x64, 42, "lrp_alpha_beta")
    assert all(torch.equal(v, before[k]) for k, v in model64.state_dict().items())
    assert [p.requires_grad for p in model64.parameters()] == flags
    assert not model64.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model64.modules())


def test_errors_name_the_problem():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    x = torch.rand(1, 1, 28, 28)
    with pytest.raises(ValueError, match="has no nn.ReLU module"):
        attribute(mlp, x, 0, "guided_backprop")
    vgg = build_model("vgg", seed=0).eval()
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        attribute(vgg, x, 0, "lrp_alpha_beta", alpha=2.0, beta=0.5)
    with pytest.raises(ValueError, match="percentile"):
        attribute(vgg, x, 0, "rectgrad", percentile=100)
    odd = nn.Sequential(nn.Conv2d(1, 2, 3), nn.LayerNorm([2, 26, 26]), nn.ReLU(), nn.Flatten(), nn.Linear(1352, 3))
    with pytest.raises(ValueError, match="no rule for layer '1' \\(LayerNorm\\)"):
        attribute(odd, x, 0, "lrp_epsilon")


@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_torchvision_models_at_224(name):
    from saliency_sanity.models import torchvision_model

    model = torchvision_model(name).eval()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for method in ("guided_backprop", "deconvnet", "rectgrad", "lrp_epsilon", "lrp_alpha_beta", "lrp_zplus"):
        maps = attribute(model, x, "top1", method)
        assert maps.shape == (1, 224, 224) and torch.isfinite(maps).all(), method
