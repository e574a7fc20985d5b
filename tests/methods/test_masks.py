"""The sound mask of Gupta et al. (2022): loss, determinism, locality, model left as it was, errors."""
import math

import pytest
import torch
from torch import nn

from saliency_sanity import attribute
from saliency_sanity.data import FASHION_MNIST_MEAN as MEAN
from saliency_sanity.methods.masks import default_lambda_area, sound_masks, squared_tv
from saliency_sanity.models.architectures import build_model

from helpers.model_state import assert_unchanged, state


class RegionScore(nn.Module):
    """Class c's logit is 4 * the mean of the image over region c (two 8x8 quadrants of 16x16), class 2 is 0."""

    def __init__(self):
        super().__init__()
        w = torch.zeros(3, 16, 16)
        w[0, :8, :8] = 4 / 64
        w[1, 8:, 8:] = 4 / 64
        self.weight = nn.Parameter(w.flatten(1))

    def forward(self, x):
        return x.flatten(1) @ self.weight.t()


def tiny_vgg():
    return build_model("vgg", seed=0, width=4, hidden=16)


def images(n=2, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_first_loss_is_the_closed_form():
    # The first loss is evaluated at the initial mask, 0.5 everywhere (TV 0, area H*W/2). With zero
    # weights every class has probability 1/3, so CE = log 3. Tolerance: float32 sums of 256 halves.
    model = RegionScore()
    with torch.no_grad():
        model.weight.zero_()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    _, losses = sound_masks(model, x, torch.tensor([[0, 1], [2, 0]]), steps=3, progress=False,
                            return_losses=True, mean=0.0)
    want = math.log(3) + default_lambda_area(16, 16) * 128
    torch.testing.assert_close(losses[0], torch.full((2, 2), want), atol=1e-5, rtol=0)
    assert default_lambda_area(28, 28) == pytest.approx(2e-5 * 224 ** 2 / 28 ** 2)
    assert default_lambda_area(224, 224) == pytest.approx(2e-5)


def test_squared_tv_by_hand():
    m = torch.tensor([[[0.0, 1.0, 1.0], [0.0, 0.5, 1.0]]])
    # horizontal: 1 + 0 + 0.25 + 0.25, vertical: 0 + 0.25 + 0
    assert squared_tv(m).tolist() == [1.75]


def test_optimisation_lowers_the_loss_and_finds_the_evidence():
    model = RegionScore()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.5
    masks, losses = sound_masks(model, x, torch.tensor([[0, 1], [1, 0]]), steps=150, upsample=2,
                                mean=0.0, lambda_tv=0.001, progress=False, return_losses=True)
    assert masks.shape == (2, 2, 16, 16) and (masks >= 0).all() and (masks <= 1).all()
    assert (losses[-1] < losses[0] - 0.5).all()
    q0 = torch.zeros(16, 16, dtype=torch.bool)
    q0[:8, :8] = True
    q1 = q0.flip(0).flip(1)
    # the label-0 mask keeps quadrant 0 and drops the region the label does not read, and vice versa
    for b, (r0, r1) in enumerate([(0, 1), (1, 0)]):
        assert masks[b, r0][q0].mean() > 0.8 and masks[b, r0][q1].mean() < 0.2
        assert masks[b, r1][q1].mean() > 0.8 and masks[b, r1][q0].mean() < 0.2


def test_deterministic_under_a_seed_with_random_fills():
    model, x = tiny_vgg(), images()
    pool = images(6, seed=3)
    kwargs = dict(steps=5, fill_images=pool, n_fill=2, progress=False)
    labels = torch.tensor([[0, 3], [1, 2]])
    a = sound_masks(model, x, labels, seed=4, **kwargs)
    b = sound_masks(model, x, labels, seed=4, **kwargs)
    c = sound_masks(model, x, labels, seed=5, **kwargs)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_model_left_unchanged():
    model = tiny_vgg().train()
    model.classifier.fc2.bias.requires_grad_(False)
    before = state(model)  # train mode, one frozen bias, no .grad, no hooks
    sound_masks(model, images(), torch.tensor([[0], [1]]), steps=4, progress=False, mean=MEAN)
    assert_unchanged(model, before)


def test_attribute_method_matches_sound_masks():
    model, x = tiny_vgg().eval(), images()
    with torch.no_grad():
        top = model(x).argmax(1)
    got = attribute(model, x, "top1", method="sound_mask", steps=6, mean=MEAN)
    want = sound_masks(model, x, top[:, None], steps=6, progress=False, mean=MEAN)[:, 0]
    assert got.shape == (2, 28, 28)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("upsample,tv", [(1, False), (3, True), (28, True)])
def test_ablation_options(upsample, tv):
    # upsample 3 does not divide 28: a 10x10 mask is upsampled to exactly 28x28; upsample 28 is one cell
    model, x = tiny_vgg(), images()
    masks = sound_masks(model, x, torch.tensor([[0], [1]]), steps=3, upsample=upsample, tv=tv, progress=False,
                        mean=MEAN)
    assert masks.shape == (2, 1, 28, 28)
    if upsample == 28:
        assert torch.allclose(masks, masks[..., :1, :1].expand_as(masks))


def test_bad_parameters():
    model, x = tiny_vgg(), images()
    labels = torch.tensor([[0], [1]])
    for kwargs, match in [({"lambda_area": -1e-3}, "lambda_area"), ({"lambda_tv": -0.1}, "lambda_tv"),
                          ({"lr": 0.0}, "lr"), ({"steps": 0}, "steps"), ({"upsample": 0}, "upsample"),
                          ({"upsample": 29}, "upsample"), ({"fill": "noise"}, "unknown fill"),
                          ({"fill": "random_images"}, "fill_images"),
                          ({"fill": torch.zeros(3, 28, 28)}, "does not broadcast"),
                          ({"softmax_over": [2, 3]}, "softmax_over")]:
        with pytest.raises(ValueError, match=match):
            sound_masks(model, x, labels, progress=False, **{"mean": MEAN, **kwargs})
    with pytest.raises(ValueError, match="per-channel mean of the model's training data"):
        sound_masks(model, x, labels, steps=1, progress=False)  # a mean fill with no mean: no default dataset's
    with pytest.raises(ValueError, match="labels_per_image must have shape"):
        sound_masks(model, x, torch.tensor([0, 1, 2]), progress=False)
    with pytest.raises(TypeError, match="integer class indices"):
        sound_masks(model, x, torch.tensor([[0.0], [1.0]]), progress=False)
    with pytest.raises(ValueError, match="out of range"):
        sound_masks(model, x, torch.tensor([[0], [10]]), steps=1, progress=False, mean=MEAN)


def test_random_image_fill_trains_against_the_training_pool():
    # Gupta et al. fill the masked pixels with random training images during optimisation. The
    # pool decides the mask: with dark fills the label-0 mask must keep quadrant 0 (its evidence);
    # with fills bright in quadrant 0 the fill itself proves label 0, so the mask drops the image.
    model = RegionScore()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.5
    labels = torch.tensor([[0], [0]])
    dark = torch.zeros(5, 1, 16, 16)
    bright = torch.zeros(5, 1, 16, 16)
    bright[..., :8, :8] = 1.0
    kwargs = dict(steps=150, upsample=2, lambda_tv=0.001, n_fill=3, progress=False)
    on_dark = sound_masks(model, x, labels, fill_images=dark, **kwargs)
    on_bright = sound_masks(model, x, labels, fill_images=bright, **kwargs)
    q0 = torch.zeros(16, 16, dtype=torch.bool)
    q0[:8, :8] = True
    assert (on_dark[:, 0][:, q0].mean(1) > 0.8).all()
    assert (on_bright[:, 0].flatten(1).mean(1) < 0.2).all()


def test_random_image_fill_uses_the_pool_it_is_given():
    model, x = tiny_vgg(), images()
    labels = torch.tensor([[0, 3], [1, 2]])
    kwargs = dict(steps=5, n_fill=3, seed=4, progress=False)
    pool_a, pool_b = images(6, seed=3), images(6, seed=7)
    a = sound_masks(model, x, labels, fill_images=pool_a, **kwargs)
    assert torch.equal(a, sound_masks(model, x, labels, fill_images=pool_a.clone(), fill="random_images", **kwargs))
    assert not torch.allclose(a, sound_masks(model, x, labels, fill_images=pool_b, **kwargs))
    # a pool of copies of one image is that image as a fixed fill: n_fill equal probabilities average to it
    one = images(1, seed=9)
    copies = sound_masks(model, x, labels, fill_images=one.expand(4, -1, -1, -1), **kwargs)
    fixed = sound_masks(model, x, labels, fill=one[0], **kwargs)
    torch.testing.assert_close(copies, fixed, atol=1e-5, rtol=0)
