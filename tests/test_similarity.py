"""Similarity metrics against scipy / scikit-image, invariants, calibration and errors."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.feature import hog as skimage_hog
from skimage.metrics import structural_similarity

from saliency_sanity.similarity import (SIMILARITY_METRICS, hog, normalize_abs, random_map_calibration, similarity,
                                        similarity_table, spearman, ssim)


def maps(n, size, seed):
    return torch.rand(n, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_spearman_equals_scipy_with_ties():
    a, b = maps(4, 28, 0), maps(4, 28, 1)
    a[0] = (a[0] * 4).floor()  # quantised: many ties
    b[1] = torch.relu(b[1] - 0.7)  # ReLU'd: many zeros
    a[2] = normalize_abs(a[2:3])[0]  # clipped at the 99th percentile: ties at the top
    expected = [spearmanr(a[i].flatten(), b[i].flatten())[0] for i in range(4)]
    np.testing.assert_allclose(spearman(a, b).numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("gaussian", [True, False])
def test_ssim_equals_skimage(size, gaussian):
    a, b = maps(2, size, 2), maps(2, size, 3)
    b = 0.6 * a + 0.4 * b  # correlated pairs, SSIM far from 0
    kw = dict(gaussian_weights=True, sigma=1.5) if gaussian else dict(win_size=7)
    expected = [structural_similarity(a[i].numpy(), b[i].numpy(), data_range=1.0, use_sample_covariance=False, **kw)
                for i in range(2)]
    ours = ssim(a, b, data_range=1.0, gaussian_weights=gaussian, win_size=7)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size,ppc", [(28, 2), (28, 4), (64, 4), (64, 8)])
def test_hog_equals_skimage(size, ppc):
    a = maps(2, size, 4)
    expected = np.stack([skimage_hog(a[i].numpy(), pixels_per_cell=(ppc, ppc)) for i in range(2)])
    np.testing.assert_allclose(hog(a, pixels_per_cell=ppc).numpy(), expected, rtol=0, atol=1e-7)


def test_hog_similarity_equals_skimage_then_scipy():
    a, b = maps(3, 28, 5), maps(3, 28, 6)
    b = 0.5 * a + 0.5 * b
    na, nb = normalize_abs(a), normalize_abs(b)
    expected = [spearmanr(skimage_hog(na[i].numpy(), pixels_per_cell=(2, 2)),
                          skimage_hog(nb[i].numpy(), pixels_per_cell=(2, 2)))[0] for i in range(3)]
    np.testing.assert_allclose(similarity(a, b, "hog").numpy(), expected, atol=1e-6)


def test_default_normalisations_follow_adebayo():
    a = maps(1, 28, 7) - 0.5
    abs_map = normalize_abs(a)
    assert abs_map.min() == 0 and abs_map.max() == 1
    assert (abs_map == 1).sum() >= int(0.01 * 784)  # clipped at the 99th percentile
    b = maps(1, 28, 8)

    def clipped(m):
        return torch.clamp(m.abs(), max=torch.quantile(m.abs().flatten(), 0.99)).flatten()

    expected = spearmanr(clipped(a), clipped(b))[0]
    assert abs(similarity(a, b, "spearman_abs").item() - expected) < 1e-12


@pytest.mark.parametrize("metric", SIMILARITY_METRICS)
def test_identity_and_symmetry(metric):
    a, b = maps(3, 28, 9) - 0.3, maps(3, 28, 10) - 0.3
    torch.testing.assert_close(similarity(a, a, metric), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(similarity(a, b, metric), similarity(b, a, metric))
    batch = similarity(a, b, metric)
    single = torch.cat([similarity(a[i], b[i], metric) for i in range(3)])
    torch.testing.assert_close(batch, single)


def test_signed_metrics_see_the_sign():
    a = maps(2, 28, 11) - 0.5
    torch.testing.assert_close(similarity(a, -a, "spearman"), -torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(similarity(a, -a, "ssim_signflip"), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(similarity(a, -a, "spearman_abs"), torch.ones(2, dtype=torch.float64))


def test_channels_are_reduced_like_adebayo():
    a = maps(2, 28, 12).view(2, 1, 28, 28).repeat(1, 3, 1, 1) - 0.5
    b = maps(2, 28, 13) - 0.5
    torch.testing.assert_close(similarity(a, b.unsqueeze(1).repeat(1, 3, 1, 1), "spearman_abs"),
                               similarity(a.abs().sum(1), b.abs() * 3, "spearman_abs"))


def test_constant_maps_give_nan_and_one_warning():
    a, b = maps(3, 28, 14), maps(3, 28, 15)
    a[1] = 0.5
    with pytest.warns(RuntimeWarning, match="constant maps"):
        out = similarity(a, b, "spearman_abs")
    assert torch.isnan(out[1]) and torch.isfinite(out[[0, 2]]).all()


def test_errors_name_the_problem():
    a = maps(2, 28, 16)
    with pytest.raises(ValueError, match=r"same shape, got a \(2, 28, 28\) and b \(2, 14, 14\)"):
        similarity(a, maps(2, 14, 14))
    with pytest.raises(ValueError, match="unknown metric 'pearson'"):
        similarity(a, a, "pearson")
    with pytest.raises(ValueError, match="NaN or Inf"):
        similarity(a, torch.full_like(a, float("nan")))
    with pytest.raises(ValueError, match="shape"):
        similarity(a.view(-1), a.view(-1))
    with pytest.raises(ValueError, match="unknown normalize"):
        similarity(a, a, normalize="zscore")
    with pytest.raises(ValueError, match="too small for HOG"):
        similarity(maps(1, 8, 0), maps(1, 8, 1), "hog", pixels_per_cell=4)


def test_table_equals_single_metrics():
    a, b = maps(2, 28, 17), maps(2, 28, 18)
    table = similarity_table(a, b, ["spearman_abs", "ssim", "hog"])
    for metric, values in table.items():
        torch.testing.assert_close(values, similarity(a, b, metric))


def test_random_maps_are_unrelated_adebayo_calibration():
    """Adebayo et al. App. B: unrelated maps score ~0 on every metric (theirs: |value| < 0.01, HOG of
    two uniform masks 0.078). Our bound is 4 standard errors of the mean over 64 pairs."""
    structured = maps(64, 28, 19).cumsum(-1).cumsum(-2)  # smooth maps, like saliency
    frame = random_map_calibration(structured, seed=0)
    for row in frame.itertuples():
        bound = 4 * row.std / np.sqrt(row.n) + 0.02
        assert abs(row.mean) < max(bound, 0.1 if row.metric == "hog" else 0.05), row
    assert set(frame.comparison) == {"maps vs uniform masks", "maps vs Gaussian noise", "uniform mask vs uniform mask"}
