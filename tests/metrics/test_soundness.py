"""Insertion/deletion curves, completeness and soundness (Gupta et al. 2022) against closed forms.

The reference model is linear on a 4x4 image: logit_0 = w . x, logit_1 = 0, so after keeping the
pixel set S and filling the rest with f, p_0 = sigmoid(sum_{j in S} w_j x_j + sum_{j not in S} w_j f_j).
The tests compute S by hand (a Python sort on the map, ties to the earlier pixel) and compare in
float64 with a tolerance of 1e-12 (both sides are a handful of float64 operations).
"""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from saliency_sanity import attribute
from saliency_sanity.models.architectures import build_model
from saliency_sanity.metrics.soundness import (class_agnostic, completeness_soundness, curve_auc, deletion_curve,
                                       draw_fill_indices, gaussian_blur, insertion_curve, insertion_deletion_auc,
                                       make_fills, pixel_ranks, step_counts, summarize_completeness_soundness)

SIDE, PIXELS = 4, 16
TOL = 1e-12


class LinearScore(nn.Module):
    """logit_0 = w . x, logit_1 = 0 (and optionally logit_2 = c) on one-channel 4x4 images."""

    def __init__(self, weight: torch.Tensor, extra: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(weight.double().flatten())
        self.extra = extra

    def forward(self, x):
        score = x.flatten(1) @ self.weight
        cols = [score, torch.zeros_like(score)]
        if self.extra is not None:
            cols.append(torch.full_like(score, self.extra))
        return torch.stack(cols, dim=1)


def setup(seed=0):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(PIXELS, generator=gen, dtype=torch.float64)
    x = torch.rand(2, 1, SIDE, SIDE, generator=gen, dtype=torch.float64)
    maps = torch.randn(2, SIDE, SIDE, generator=gen, dtype=torch.float64)
    maps[1] = maps[1].round()  # many ties: broken by row-major order
    return LinearScore(weight), x, maps


def kept_sets(map_2d, steps, deletion=False):
    """The pixels kept at each step, by hand: sort by score (ties: earlier pixel), keep or drop the top k."""
    flat = map_2d.flatten().tolist()
    order = sorted(range(PIXELS), key=lambda j: (-flat[j], j))
    out = []
    for i in range(steps + 1):
        k = math.floor(i * PIXELS / steps + 0.5)
        top = set(order[:k])
        out.append(set(range(PIXELS)) - top if deletion else top)
    return out


def expected_p0(model, x_img, fill_img, kept):
    w, xv, fv = model.weight.detach().tolist(), x_img.flatten().tolist(), fill_img.flatten().tolist()
    logit = sum(w[j] * (xv[j] if j in kept else fv[j]) for j in range(PIXELS))
    return 1.0 / (1.0 + math.exp(-logit))


def expected_curve(model, x, maps, fills, steps, deletion):
    """fills: [B, C, H, W] per image."""
    return torch.tensor([[expected_p0(model, x[b], fills[b], s) for s in kept_sets(maps[b], steps, deletion)]
                         for b in range(len(x))], dtype=torch.float64)


def test_step_counts_round_halves_up():
    # round(i/K * n): K=4, n=6 gives 0, 1.5, 3, 4.5, 6 -> 0, 2, 3, 5, 6
    assert step_counts(4, 6).tolist() == [0, 2, 3, 5, 6]
    assert step_counts(28, 784).tolist() == [28 * i for i in range(29)]


def test_pixel_ranks_break_ties_by_row_major_order():
    maps = torch.tensor([[[1.0, 3.0], [3.0, 1.0]]])
    assert pixel_ranks(maps).tolist() == [[2, 0, 1, 3]]


@pytest.mark.parametrize("fill", ["zeros", "mean", "tensor", "blur"])
@pytest.mark.parametrize("deletion", [False, True])
def test_curves_match_closed_form(fill, deletion):
    model, x, maps = setup()
    steps = 5
    if fill == "zeros":
        fills, kwargs = torch.zeros_like(x), {"fill": "zeros"}
    elif fill == "mean":
        fills, kwargs = torch.full_like(x, 0.3), {"fill": "mean", "mean": 0.3}
    elif fill == "tensor":
        per_image = torch.rand(2, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        fills, kwargs = per_image, {"fill": per_image}
    else:
        # reference blur: scipy's Gaussian with mirror padding truncated at 3 sigma (radius 3 here)
        blurred = np.stack([gaussian_filter(img[0].numpy(), sigma=1.0, mode="mirror", truncate=3.0) for img in x])
        fills, kwargs = torch.from_numpy(blurred)[:, None], {"fill": "blur", "sigma": 1.0}
    curve_fn = deletion_curve if deletion else insertion_curve
    got = curve_fn(model, x, maps, torch.tensor([0, 0]), steps=steps, **kwargs)
    want = expected_curve(model, x, maps, fills, steps, deletion)
    assert got.shape == (2, steps + 1)
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)


def test_random_image_fill_averages_seeded_draws():
    model, x, maps = setup()
    pool = torch.rand(5, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    steps, n_fill, seed = 4, 3, 11
    got = insertion_curve(model, x, maps, 0, steps=steps, fill="random_images", fill_images=pool,
                          n_fill=n_fill, seed=seed)
    draws = draw_fill_indices(len(pool), len(x), n_fill, seed)
    want = torch.stack([expected_curve(model, x, maps, pool[draws[:, f]], steps, False)
                        for f in range(n_fill)]).mean(0)
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)
    other = insertion_curve(model, x, maps, 0, steps=steps, fill="random_images", fill_images=pool,
                            n_fill=n_fill, seed=seed + 1)
    assert not torch.allclose(other, got)  # another seed draws other fills
    again = insertion_curve(model, x, maps, 0, steps=steps, fill="random_images", fill_images=pool,
                            n_fill=n_fill, seed=seed)
    assert torch.equal(again, got)


def test_softmax_over_a_label_subset():
    _, x, maps = setup()
    base = setup()[0]
    # class 2 has a large logit, but the softmax over {0, 1} ignores it: p_0 is the two-class sigmoid
    model = LinearScore(base.weight.detach().view(SIDE, SIDE), extra=7.0)
    got = insertion_curve(model, x, maps, 0, steps=4, fill="zeros", softmax_over=[0, 1])
    want = insertion_curve(base, x, maps, 0, steps=4, fill="zeros")
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)
    full = insertion_curve(model, x, maps, 0, steps=4, fill="zeros")
    assert (full < got).all()
    with pytest.raises(ValueError, match="not in softmax_over"):
        insertion_curve(model, x, maps, 2, steps=4, fill="zeros", softmax_over=[0, 1])


def test_several_labels_chunked_equal_one_label_at_a_time():
    model, x, maps = setup()
    gen = torch.Generator().manual_seed(3)
    maps3 = torch.randn(2, 3, SIDE, SIDE, generator=gen, dtype=torch.float64)
    labels = torch.tensor([[0, 1, 0], [1, 1, 0]])
    got = deletion_curve(model, x, maps3, labels, steps=6, fill="zeros", batch_size=5)
    assert got.shape == (2, 3, 7)
    for j in range(3):
        one = deletion_curve(model, x, maps3[:, j], labels[:, j], steps=6, fill="zeros", batch_size=1000)
        torch.testing.assert_close(got[:, j], one, atol=TOL, rtol=0)
    # p_1 = 1 - p_0 for this two-class model
    torch.testing.assert_close(got[:, 1], 1 - deletion_curve(model, x, maps3[:, 1], 0, steps=6, fill="zeros"),
                               atol=TOL, rtol=0)


def test_curve_endpoints_on_a_real_model_and_model_left_as_is():
    model = build_model("vgg", seed=0, width=8).double().train()
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    maps = attribute(model, x, "top1", method="gradient")
    with torch.no_grad():
        p_x = model.eval()(x).softmax(1)
        p_fill = model(torch.full_like(x, 0.2)).softmax(1)
    model.train()
    label = p_x.argmax(1)
    ins = insertion_curve(model, x, maps, "top1", steps=7, fill="mean", mean=0.2)
    dele = deletion_curve(model, x, maps, label, steps=7, fill="mean", mean=0.2)
    rows = torch.arange(2)
    # tolerance: the same model on the same inputs, only evaluated in a different batch composition
    torch.testing.assert_close(ins[:, -1], p_x[rows, label], atol=1e-12, rtol=0)
    torch.testing.assert_close(ins[:, 0], p_fill[rows, label], atol=1e-12, rtol=0)
    torch.testing.assert_close(dele[:, 0], p_x[rows, label], atol=1e-12, rtol=0)
    torch.testing.assert_close(dele[:, -1], p_fill[rows, label], atol=1e-12, rtol=0)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_gaussian_blur_matches_scipy_and_keeps_constants():
    x = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = gaussian_blur(x, 1.0)
    want = gaussian_filter(x.numpy(), sigma=(0, 0, 1.0, 1.0), mode="mirror", truncate=3.0)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)  # same sums of float64 products
    const = torch.full((1, 1, 5, 5), 0.7, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(const, 10.0), const, atol=1e-12, rtol=0)


def test_auc_rules():
    curves = torch.tensor([[0.0, 0.5, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(curve_auc(curves), torch.tensor([0.5, 0.75], dtype=torch.float64))
    torch.testing.assert_close(curve_auc(curves, "mean"), torch.tensor([0.5, 2 / 3], dtype=torch.float64))
    model, x, maps = setup()
    frame = insertion_deletion_auc(model, x, maps, torch.tensor([0, 1]), steps=4, fill="zeros")
    ins = insertion_curve(model, x, maps, torch.tensor([0, 1]), steps=4, fill="zeros")
    np.testing.assert_allclose(frame.insertion, np.trapezoid(ins.numpy(), dx=0.25, axis=1), atol=1e-12)
    assert frame.label.tolist() == [0, 1] and frame.image.tolist() == [0, 1]


def direct_scores(model, x, maps, labels, steps, eps, beta, fill_kwargs):
    """Completeness/soundness computed directly from the curves and p(x), one label at a time."""
    with torch.no_grad():
        p = model(x).softmax(1)
    pred = p.argmax(1)
    out = {}
    for j, lab in enumerate(labels):
        auc = insertion_curve(model, x, maps[:, j], lab, steps=steps, **fill_kwargs).mean(1)
        for b in range(len(x)):
            if lab == pred[b]:
                out[(b, lab)] = min(max(eps, auc[b].item()) / p[b, lab].item(), 1.0)
            else:
                out[(b, lab)] = min(max(beta, p[b, lab].item()) / auc[b].item(), 1.0)
    return out, pred


@pytest.mark.parametrize("eps,beta", [(0.1, 0.1), (0.0, 0.0), (0.9, 0.9)])
def test_completeness_soundness_formulas(eps, beta):
    model = build_model("vgg", seed=1, width=8, num_classes=4).double()
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3, 1, 28, 28, generator=gen, dtype=torch.float64)
    maps = torch.randn(3, 4, 28, 28, generator=gen, dtype=torch.float64)
    kwargs = {"fill": "mean", "mean": 0.1}
    frame = completeness_soundness(model, x, maps, steps=6, epsilon=eps, beta=beta, **kwargs)
    want, pred = direct_scores(model, x, maps, [0, 1, 2, 3], 6, eps, beta, kwargs)
    assert len(frame) == 12 and set(frame.metric) == {"completeness", "soundness"}
    for row in frame.itertuples():
        assert row.value == pytest.approx(want[(row.image, row.label)], abs=1e-12)
        assert row.is_predicted == (row.label == pred[row.image].item())
        assert (row.metric == "completeness") == row.is_predicted
        assert 0 < row.value <= 1
    summary = summarize_completeness_soundness(frame)
    assert list(summary.columns) == ["image", "completeness", "soundness"]
    for b in range(3):
        others = [want[(b, lab)] for lab in range(4) if lab != pred[b]]
        assert summary.soundness[b] == pytest.approx(np.mean(others), abs=1e-12)
        assert summary.completeness[b] == pytest.approx(want[(b, pred[b].item())], abs=1e-12)


def test_summary_keeps_extra_columns():
    model = build_model("vgg", seed=1, width=8, num_classes=3).double()
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    maps = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = completeness_soundness(model, x, maps, steps=3, mean=0.2).assign(method="a")
    b = completeness_soundness(model, x, -maps, steps=3, mean=0.2).assign(method="b")
    summary = summarize_completeness_soundness(pd.concat([a, b]))
    assert list(summary.columns) == ["method", "image", "completeness", "soundness"] and len(summary) == 4


def test_class_agnostic_control():
    model = build_model("vgg", seed=1, width=8, num_classes=3).double()
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 1, 28, 28, generator=gen, dtype=torch.float64)
    maps = torch.randn(2, 3, 28, 28, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        pred = model(x).argmax(1)
    agnostic = class_agnostic(maps, predicted=pred)
    assert agnostic.shape == maps.shape
    for b in range(2):
        for j in range(3):
            assert torch.equal(agnostic[b, j], maps[b, pred[b]])
    assert torch.equal(class_agnostic(maps[torch.arange(2), pred], 3), agnostic)
    per_label = completeness_soundness(model, x, maps, steps=4, mean=0.2)
    control = completeness_soundness(model, x, agnostic, steps=4, mean=0.2)
    # the predicted label keeps its own map, so completeness is unchanged
    pd.testing.assert_frame_equal(per_label[per_label.is_predicted].reset_index(drop=True),
                                  control[control.is_predicted].reset_index(drop=True))
    # every label's curve now follows the predicted label's pixel order
    ranks = pixel_ranks(agnostic)
    assert (ranks == ranks[:, :1]).all()


def test_predicted_label_must_have_a_map():
    model = build_model("vgg", seed=1, width=8, num_classes=3)
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    maps = torch.rand(2, 2, 28, 28)
    with torch.no_grad():
        pred = model(x).argmax(1)
    others = [[c for c in range(3) if c != p][:2] for p in pred.tolist()]
    with pytest.raises(ValueError, match="predicted label"):
        completeness_soundness(model, x, maps, labels=torch.tensor(others), steps=2, mean=0.2)


@pytest.mark.parametrize("steps", [0, -1, 2.5, True])
def test_bad_steps(steps):
    model, x, maps = setup()
    with pytest.raises(ValueError, match="steps"):
        insertion_curve(model, x, maps, 0, steps=steps)
    with pytest.raises(ValueError, match="steps"):
        completeness_soundness(model, x, maps[:, None].expand(-1, 2, -1, -1), steps=steps)


def test_bad_parameters():
    model, x, maps = setup()
    with pytest.raises(ValueError, match="does not broadcast"):
        insertion_curve(model, x, maps, 0, fill=torch.zeros(3, 1, SIDE, SIDE, dtype=torch.float64))
    with pytest.raises(ValueError, match="does not broadcast"):
        deletion_curve(model, x, maps, 0, fill=torch.zeros(1, 5, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown fill"):
        insertion_curve(model, x, maps, 0, fill="noise")
    with pytest.raises(TypeError, match="fill must be"):
        insertion_curve(model, x, maps, 0, fill=0.5)
    with pytest.raises(ValueError, match="fill_images"):
        insertion_curve(model, x, maps, 0, fill="random_images")
    with pytest.raises(ValueError, match="fill_images must have images of shape"):
        insertion_curve(model, x, maps, 0, fill="random_images", fill_images=torch.rand(3, 1, 5, 5))
    with pytest.raises(ValueError, match="n_fill"):
        insertion_curve(model, x, maps, 0, fill="random_images", fill_images=torch.rand(3, 1, 4, 4), n_fill=0)
    with pytest.raises(ValueError, match="mean must be one number or one per channel"):
        insertion_curve(model, x, maps, 0, mean=[0.1, 0.2])
    with pytest.raises(ValueError, match="per-channel mean of the model's training data"):
        insertion_curve(model, x, maps, 0)  # the default fill is the mean, and there is no default mean
    with pytest.raises(ValueError, match="sigma"):
        insertion_curve(model, x, maps, 0, fill="blur", sigma=0)
    with pytest.raises(ValueError, match="maps must have shape"):
        insertion_curve(model, x, maps[:, :3], 0, mean=0.2)
    with pytest.raises(ValueError, match="NaN"):
        insertion_curve(model, x, torch.full_like(maps, float("nan")), 0, mean=0.2)
    with pytest.raises(ValueError, match="out of range"):
        insertion_curve(model, x, maps, 5, mean=0.2)
    with pytest.raises(ValueError, match="batch_size"):
        insertion_curve(model, x, maps, 0, batch_size=0, mean=0.2)
    with pytest.raises(ValueError, match="labels must have shape"):
        insertion_curve(model, x, maps, torch.tensor([0, 1, 0]), mean=0.2)
    many = maps[:, None].expand(-1, 2, -1, -1)
    for name in ("epsilon", "beta"):
        with pytest.raises(ValueError, match=name):
            completeness_soundness(model, x, many, mean=0.2, **{name: -0.1})
    with pytest.raises(ValueError, match="maps_per_label"):
        completeness_soundness(model, x, maps, mean=0.2)
    with pytest.raises(ValueError, match="predicted"):
        class_agnostic(many)


def test_make_fills_shapes():
    x = torch.rand(3, 2, 5, 5)
    assert make_fills(x, "mean", mean=[0.1, 0.9]).shape == (3, 1, 2, 5, 5)
    assert torch.equal(make_fills(x, "mean", mean=[0.1, 0.9])[:, 0, 1], torch.full((3, 5, 5), 0.9))
    assert make_fills(x, torch.zeros(2, 1, 1)).shape == (3, 1, 2, 5, 5)
    assert make_fills(x, "random_images", fill_images=torch.rand(4, 2, 5, 5), n_fill=6).shape == (3, 6, 2, 5, 5)
