"""Gradient-family methods against Captum (same model, float64, tolerance 1e-10 relative)."""
import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

from saliency_sanity import attribute
from saliency_sanity.methods.gradients import ig_nodes
from saliency_sanity.models.architectures import build_model

from helpers.peers import RGB_SHAPE, rgb_images, rgb_model

TOL = dict(rtol=1e-8, atol=1e-10)  # float64: only summation order differs


@pytest.fixture(params=["vgg", "resnet"])
def model64(request):
    return build_model(request.param, seed=0).double().eval()


@pytest.fixture
def x64():
    return torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def test_gradient_equals_captum_saliency(model64, x64):
    target = torch.tensor([0, 3, 9])
    ours = attribute(model64, x64, target, "gradient", reduce=None)
    theirs = Saliency(model64).attribute(x64, target=target, abs=False)
    torch.testing.assert_close(ours, theirs, **TOL)


def test_input_x_gradient_equals_captum(model64, x64):
    ours = attribute(model64, x64, 2, "input_x_gradient", reduce=None)
    theirs = InputXGradient(model64).attribute(x64, target=2)
    torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left", "riemann_middle", "riemann_right",
                                  "riemann_trapezoid"])
def test_integrated_gradients_equals_captum(model64, x64, rule):
    """Captum builds Riemann nodes with float32 linspace (relative error ~1e-7); Gauss-Legendre in
    float64. Our trapezoid rule is the textbook one (weights sum to 1), Captum's halves the end
    weights of 1/n (they sum to (n-1)/n): ours = Captum's * n / (n - 1)."""
    target = torch.tensor([1, 4, 7])
    ours = attribute(model64, x64, target, "integrated_gradients", reduce=None, steps=12, rule=rule,
                     internal_batch_size=7)
    theirs = IntegratedGradients(model64).attribute(x64, target=target, n_steps=12, method=rule)
    if rule == "riemann_trapezoid":
        theirs = theirs * 12 / 11
    tol = TOL if rule == "gausslegendre" else dict(rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(ours, theirs, **tol)


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_integrated_gradients_equals_captum_on_rgb_non_square_images(arch):
    """3-channel 22x30 images and a per-channel baseline [3, 1, 1] (broadcast by us, expanded for Captum).
    Captum casts the quadrature weights to float32 (``torch.tensor(step_sizes).float()`` in
    IntegratedGradients._attribute): relative 1e-6 of the map's size."""
    model, x = rgb_model(arch, torch.float64), rgb_images(torch.float64)
    baseline = torch.tensor([0.5, 0.4, 0.3], dtype=torch.float64).view(3, 1, 1)
    target = torch.tensor([2, 6])
    ours = attribute(model, x, target, "integrated_gradients", reduce=None, steps=12, baseline=baseline)
    theirs = IntegratedGradients(model).attribute(x, baselines=baseline.expand(1, *x.shape[1:]), target=target,
                                                  n_steps=12, method="gausslegendre")
    assert ours.shape == RGB_SHAPE
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6 * theirs.abs().max().item())


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_completeness(model64, x64, rule):
    """Completeness, sum of the map = y_c(x) - y_c(x'), checked where it holds exactly: without biases
    (and with fresh BatchNorm statistics, mean 0) the project models are positively homogeneous, so
    the gradient is the same at every point t x, t > 0. With the baseline x' = 0.3 x on that ray the
    integrand is constant: IG = (x - x') * grad y_c(x) for every rule, summing to y_c(x) - y_c(0.3 x)
    = 0.7 y_c(x). Tolerances are relative (these logits are ~1e-2, so an absolute 1e-3 could not
    fail), float64: a map 1% off, without the (x - x') factor or with x in its place fails."""
    with torch.no_grad():
        for m in model64.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    baseline = 0.3 * x64
    maps = attribute(model64, x64, "top1", "integrated_gradients", reduce=None, steps=5, rule=rule,
                     baseline=baseline)
    xg = x64.clone().requires_grad_(True)
    logits = model64(xg)
    c = logits.argmax(1)[:, None]
    (grad,) = torch.autograd.grad(logits.gather(1, c).sum(), xg)
    logits = logits.detach()
    with torch.no_grad():
        delta = (logits - model64(baseline)).gather(1, c).squeeze(1)
    torch.testing.assert_close(delta, 0.7 * logits.gather(1, c).squeeze(1), rtol=1e-12, atol=0)  # homogeneous
    expected = (x64 - baseline) * grad
    torch.testing.assert_close(maps, expected, rtol=1e-9, atol=1e-12 * expected.abs().max().item())
    torch.testing.assert_close(maps.sum((1, 2, 3)), delta, rtol=1e-9, atol=0)


def test_smoothgrad_is_the_mean_gradient_over_the_same_noise(model64, x64):
    """Captum's NoiseTunnel draws its own noise; we compare with the average of Captum Saliency over
    exactly the noise our generator draws (same seed, same sigma)."""
    n, frac, seed = 5, 0.2, 11
    ours = attribute(model64, x64, "top1", "smoothgrad", reduce=None, n_samples=n, noise=frac, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn((n, *x64.shape), generator=gen, dtype=x64.dtype)
    sigma = frac * (x64.flatten(1).amax(1) - x64.flatten(1).amin(1)).view(-1, 1, 1, 1)
    with torch.no_grad():
        target = model64(x64).argmax(1)
    sal = Saliency(model64)
    expected = torch.stack([sal.attribute(x64 + sigma * eps[i], target=target, abs=False) for i in range(n)]).mean(0)
    torch.testing.assert_close(ours, expected, **TOL)


def test_smoothgrad_equals_captum_noise_tunnel_with_the_same_noise(model64, monkeypatch):
    """NoiseTunnel(Saliency) fed our noise: Captum draws torch.normal(0, sigma) for the inputs
    repeated image-major ([B * n]); we hand it our draws [n, B] in that layout. Images span exactly
    [0, 1], so our sigma = noise * range equals Captum's absolute stdev (0.25, exact in float32)."""
    n, frac, seed = 4, 0.25, 3
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = 0.0, 1.0
    eps = torch.randn((n, *x.shape), generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    captum_layout = eps.transpose(0, 1).reshape(-1, *x.shape[1:])
    drawn = []

    def fake_normal(mean, std, *args, **kwargs):
        assert std.shape == captum_layout.shape
        drawn.append(1)
        return std.to(captum_layout.dtype) * captum_layout

    ours = attribute(model64, x, "top1", "smoothgrad", reduce=None, n_samples=n, noise=frac, seed=seed)
    with torch.no_grad():
        target = model64(x).argmax(1)
    monkeypatch.setattr(torch, "normal", fake_normal)
    theirs = NoiseTunnel(Saliency(model64)).attribute(x, nt_type="smoothgrad", nt_samples=n, stdevs=frac,
                                                      target=target, abs=False)
    assert drawn == [1]
    torch.testing.assert_close(ours, theirs, **TOL)


def test_smoothgrad_is_seeded():
    model = build_model("vgg", seed=0).eval()
    x = torch.rand(2, 1, 28, 28)
    a = attribute(model, x, "top1", "smoothgrad", n_samples=3, seed=1)
    assert torch.equal(a, attribute(model, x, "top1", "smoothgrad", n_samples=3, seed=1))
    assert not torch.equal(a, attribute(model, x, "top1", "smoothgrad", n_samples=3, seed=2))


def test_quadrature_weights_integrate_exactly():
    for rule in ("gausslegendre", "riemann_trapezoid", "riemann_middle"):
        alphas, weights = ig_nodes(9, rule)
        assert abs(sum(weights) - 1) < 1e-12
        assert abs(sum(w * a for a, w in zip(alphas, weights)) - 0.5) < 1e-12  # integral of alpha on [0, 1]


def test_reductions_and_bad_options():
    model = build_model("vgg", seed=0).eval()
    x = torch.rand(2, 3, 16, 16)
    model.features.conv1 = torch.nn.Conv2d(3, 32, 3, padding=1)
    model.classifier.fc1 = torch.nn.Linear(64 * 4 * 4, 128)
    full = attribute(model, x, 0, "gradient", reduce=None)
    assert full.shape == (2, 3, 16, 16)
    torch.testing.assert_close(attribute(model, x, 0, "gradient"), full.sum(1))
    torch.testing.assert_close(attribute(model, x, 0, "gradient", reduce="abs_sum"), full.abs().sum(1))
    with pytest.raises(ValueError, match="unknown reduce"):
        attribute(model, x, 0, "gradient", reduce="max")
    with pytest.raises(ValueError, match="unknown integration rule"):
        attribute(model, x, 0, "integrated_gradients", rule="simpson")
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        attribute(model, x, 0, "smoothgrad", n_samples=0)
    with pytest.raises(ValueError, match="does not broadcast"):
        attribute(model, x, 0, "integrated_gradients", baseline=torch.zeros(5, 5))
