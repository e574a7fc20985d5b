"""Similarity metrics against scipy / scikit-image, invariants, calibration and errors.

Tolerances: Spearman and SSIM in float64 agree with scipy / skimage to 1e-12 (same formulas,
rounding only); float32 SSIM to 5e-6 (skimage filters in float32 too, with other summation
orders); HOG vectors to 5e-7 (skimage sums each cell in float32); HOG similarity to 1e-6.
"""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import rankdata as scipy_rankdata
from scipy.stats import spearmanr
from skimage.feature import hog as skimage_hog
from skimage.metrics import structural_similarity

from saliency_sanity.metrics import similarity as sim_module
from saliency_sanity.metrics.ranks import rankdata, row_quantile, spearman
from saliency_sanity.metrics.hog import default_pixels_per_cell, hog
from saliency_sanity.metrics.normalize import NORMALIZATIONS, normalize_abs
from saliency_sanity.metrics.similarity import SIMILARITY_METRICS, random_map_calibration, similarity, similarity_table
from saliency_sanity.metrics.ssim import ssim


pytestmark = pytest.mark.usefixtures("one_thread")


def maps(n, size, seed, channels=None, signed=False):
    shape = (n, size, size) if channels is None else (n, channels, size, size)
    m = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return m - 0.5 if signed else m


def smooth_maps(n, size, seed, channels=None):
    """Spatially correlated signed maps, like gradients: a random field blurred by a box filter."""
    m = maps(n, size + 4, seed, channels, signed=True)
    return m.unfold(-2, 5, 1).unfold(-2, 5, 1).mean((-1, -2))


# ----------------------------------------------------------------------------- numpy references

def ref_abs(m):
    """PAIR saliency's VisualizeImageGrayscale (Adebayo et al.'s code), channels first."""
    e = np.abs(m).sum(0) if m.ndim == 3 else np.abs(m)
    vmax, vmin = np.percentile(e, 99), e.min()
    return np.clip((e - vmin) / (vmax - vmin), 0, 1)


def ref_signed(m):
    e = m.sum(0) if m.ndim == 3 else m
    return np.clip(e / np.percentile(np.abs(e), 99), -1, 1)


def ref_sum(m, absolute=False):
    m = np.abs(m) if absolute else m
    return m.sum(0) if m.ndim == 3 else m


def ref_view(m, kind, normalize):
    if normalize == "default":
        if kind == "unit":
            return ref_sum(m) / np.abs(ref_sum(m)).max()
        return ref_signed(m) if kind == "signed" else ref_abs(m)
    absolute = kind == "abs" or (kind == "intensity" and normalize == "max_abs")
    e = ref_sum(m, absolute)
    if normalize == "max_abs":
        return e / np.abs(e).max()
    if normalize == "minmax":
        return (e - e.min()) / (e.max() - e.min())
    return e


KIND = {"spearman_abs": "abs", "spearman": "signed", "ssim": "intensity", "hog": "intensity",
        "ssim_signflip": "unit", "cosine": "unit"}


def reference(a, b, metric, normalize, data_range=None, ppc=(2, 2)):
    """One pair with scipy / skimage on the maps normalised in numpy."""
    x, y = ref_view(a, KIND[metric], normalize), ref_view(b, KIND[metric], normalize)
    ssim_kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    if metric in ("spearman_abs", "spearman"):
        return spearmanr(x.ravel(), y.ravel())[0]
    if metric == "ssim":
        return structural_similarity(x, y, data_range=data_range or 1.0, **ssim_kw)
    if metric == "ssim_signflip":
        return max(structural_similarity(x, y, data_range=data_range or 2.0, **ssim_kw),
                   structural_similarity(x, -y, data_range=data_range or 2.0, **ssim_kw))
    if metric == "hog":
        return spearmanr(skimage_hog(x, pixels_per_cell=ppc), skimage_hog(y, pixels_per_cell=ppc))[0]
    return float(x.ravel() @ y.ravel() / np.linalg.norm(x) / np.linalg.norm(y))


# ----------------------------------------------------------------------------- ranks

def tied_pairs():
    a, b = maps(5, 28, 0), maps(5, 28, 1)
    a[0] = (a[0] * 4).floor()  # quantised: 4 values
    b[1] = torch.relu(b[1] - 0.7)  # ReLU'd: ~70 % zeros
    a[2] = normalize_abs(a[2:3])[0]  # clipped at the 99th percentile: top 1 % tied
    a[3] = (a[3] > 0.5).double()  # two values
    b[4] = torch.relu(b[4] - 0.9).round(decimals=2)  # zeros and a few repeated values
    return a, b


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_spearman_equals_scipy_with_ties(dtype):
    a, b = (m.to(dtype) for m in tied_pairs())
    expected = [spearmanr(a[i].double().flatten(), b[i].double().flatten())[0] for i in range(5)]
    np.testing.assert_allclose(spearman(a, b).numpy(), expected, rtol=0, atol=1e-12)


def test_rankdata_and_quantile_equal_scipy_and_numpy():
    a, _ = tied_pairs()
    flat = a.flatten(1)
    np.testing.assert_array_equal(rankdata(flat).numpy(), scipy_rankdata(flat.numpy(), axis=1))
    for q in (0.0, 0.123, 0.5, 0.99, 1.0):
        np.testing.assert_allclose(row_quantile(flat, q)[:, 0].numpy(), np.percentile(flat.numpy(), 100 * q, axis=1),
                                   rtol=1e-15, atol=1e-15)


# ----------------------------------------------------------------------------- SSIM and HOG

@pytest.mark.parametrize("size", [7, 28, 64])
@pytest.mark.parametrize("kw", [dict(gaussian_weights=True), dict(gaussian_weights=True, win_size=7),
                                dict(gaussian_weights=False, win_size=7),
                                dict(gaussian_weights=False, win_size=5, use_sample_covariance=True),
                                dict(gaussian_weights=True, sigma=1.0, win_size=5, use_sample_covariance=True)],
                         ids=["gauss", "gauss-win7", "uniform7", "uniform5-sample", "gauss1-win5-sample"])
def test_ssim_equals_skimage(size, kw):
    a, b = maps(2, size, 2), maps(2, size, 3)
    b = 0.6 * a + 0.4 * b  # correlated pairs, SSIM far from 0
    ref_kw = {"use_sample_covariance": False, "sigma": 1.5, **kw}
    if size == 7 and kw == dict(gaussian_weights=True):  # the default window (11) does not fit: both refuse
        with pytest.raises(ValueError, match="exceeds image extent"):
            structural_similarity(a[0].numpy(), b[0].numpy(), data_range=1.0, **ref_kw)
        with pytest.raises(ValueError, match=r"smaller than the SSIM window \(11\)"):
            ssim(a, b, data_range=1.0, **kw)
        return
    expected = [structural_similarity(a[i].numpy(), b[i].numpy(), data_range=1.0, **ref_kw) for i in range(2)]
    np.testing.assert_allclose(ssim(a, b, data_range=1.0, **kw).numpy(), expected, rtol=0, atol=1e-12)
    expected32 = [structural_similarity(a[i].float().numpy(), b[i].float().numpy(), data_range=1.0, **ref_kw)
                  for i in range(2)]
    ours32 = ssim(a.float(), b.float(), data_range=1.0, **kw)
    assert ours32.dtype == torch.float32
    np.testing.assert_allclose(ours32.numpy(), expected32, rtol=0, atol=5e-6)


@pytest.mark.parametrize("shape,ppc,cpb,norm,orientations", [
    ((28, 28), 2, 3, "L2-Hys", 9), ((28, 28), 3, 3, "L2-Hys", 9), ((28, 28), 4, 2, "L1", 9),
    ((64, 64), 4, 3, "L2-Hys", 9), ((64, 64), 8, 3, "L2-Hys", 9), ((64, 64), 5, 3, "L1-sqrt", 7),
    ((30, 41), (3, 5), (2, 3), "L2", 4)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hog_equals_skimage(shape, ppc, cpb, norm, orientations, dtype):
    a = torch.rand(3, *shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a[1] = torch.relu(a[1] - 0.6)  # flat regions: zero gradients
    a[2] = (a[2] * 3).floor() / 3  # quantised: axis-aligned and diagonal gradients
    a = a.to(dtype)
    pair = ppc if isinstance(ppc, tuple) else (ppc, ppc)
    blocks = cpb if isinstance(cpb, tuple) else (cpb, cpb)
    expected = np.stack([skimage_hog(a[i].numpy(), orientations=orientations, pixels_per_cell=pair,
                                     cells_per_block=blocks, block_norm=norm) for i in range(3)])
    ours = hog(a, orientations=orientations, pixels_per_cell=ppc, cells_per_block=cpb, block_norm=norm)
    assert ours.dtype == dtype and ours.shape == expected.shape
    np.testing.assert_allclose(ours.double().numpy(), expected, rtol=0, atol=5e-7)


def test_hog_drops_angles_that_round_to_180_like_skimage():
    # a tiny negative row gradient next to a unit column gradient: the angle rounds up to 180 degrees,
    # which falls in no bin of skimage's histogram
    m = torch.zeros(1, 28, 28, dtype=torch.float64)
    m[0, :, 10] = 1.0
    m[0, :, 9] = torch.arange(28, 0, -1, dtype=torch.float64) * 1e-20
    assert np.rad2deg(np.arctan2(-2e-20, 1.0)) % 180 == 180.0
    np.testing.assert_allclose(hog(m, pixels_per_cell=4)[0].numpy(), skimage_hog(m[0].numpy(), pixels_per_cell=(4, 4)),
                               rtol=0, atol=5e-7)


def test_adebayo_size_224_defaults():
    """Adebayo et al.'s HOG cells (16x16 on 224x224) are the default; one pair at full size."""
    assert default_pixels_per_cell((224, 224)) == (16, 16)
    assert default_pixels_per_cell((28, 28)) == (2, 2) and default_pixels_per_cell((64, 64)) == (4, 4)
    a, b = smooth_maps(1, 224, 5), smooth_maps(1, 224, 6)
    b = a + 0.5 * b
    for metric in ("hog", "ssim", "spearman_abs"):
        expected = reference(a[0].numpy(), b[0].numpy(), metric, "default", ppc=(16, 16))
        np.testing.assert_allclose(similarity(a, b, metric).item(), expected, rtol=0,
                                   atol=1e-6 if metric == "hog" else 1e-12)


# ----------------------------------------------------------------------------- whole pipeline

@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("metric", SIMILARITY_METRICS)
def test_similarity_equals_references_on_normalised_maps(metric, normalize):
    """similarity() on 3-channel maps equals scipy / skimage applied to the maps normalised in numpy."""
    a, b = smooth_maps(3, 28, 7, channels=3), smooth_maps(3, 28, 8, channels=3)
    if normalize == "minmax" and metric in ("ssim_signflip", "cosine"):  # min-max maps have no sign
        with pytest.raises(ValueError, match="compares signed maps"):
            similarity(a, b, metric, normalize=normalize)
        return
    b = a + b  # related pairs: values far from 0
    a[2, :, :3] = 0  # a flat border region: ties after the abs
    kw = {"data_range": 3.0} if normalize == "none" and metric.startswith("ssim") else {}
    expected = [reference(a[i].numpy(), b[i].numpy(), metric, normalize, kw.get("data_range")) for i in range(3)]
    np.testing.assert_allclose(similarity(a, b, metric, normalize=normalize, **kw).numpy(), expected, rtol=0,
                               atol=1e-6 if metric == "hog" else 1e-12)


def test_percentile_option_moves_the_clipping():
    a, b = smooth_maps(2, 28, 9), smooth_maps(2, 28, 10)
    b = a + b

    def clipped(m, p):
        e = np.abs(m)
        return np.minimum(e, np.percentile(e, p)).ravel()

    for p in (90, 100):
        expected = [spearmanr(clipped(a[i].numpy(), p), clipped(b[i].numpy(), p))[0] for i in range(2)]
        np.testing.assert_allclose(similarity(a, b, "spearman_abs", percentile=p).numpy(), expected, atol=1e-12)


# ----------------------------------------------------------------------------- invariants

@pytest.mark.parametrize("metric", SIMILARITY_METRICS)
def test_identity_symmetry_batching_and_scale(metric):
    a, b = smooth_maps(3, 28, 11), smooth_maps(3, 28, 12)
    one = torch.ones(3, dtype=torch.float64)
    torch.testing.assert_close(similarity(a, a, metric), one, rtol=0, atol=1e-12)
    kw = {"data_range": 2.0} if metric.startswith("ssim") else {}
    for normalize in ("max_abs", "none"):
        torch.testing.assert_close(similarity(a, a, metric, normalize=normalize, **kw), one, rtol=0, atol=1e-12)
    ab = similarity(a, b, metric)
    torch.testing.assert_close(ab, similarity(b, a, metric), rtol=0, atol=1e-12)
    single = torch.cat([similarity(a[i], b[i], metric) for i in range(3)])
    torch.testing.assert_close(ab, single, rtol=0, atol=1e-12)
    # every default normalisation divides out a positive scale
    torch.testing.assert_close(similarity(7.5 * a, b, metric), ab, rtol=0, atol=1e-9)
    assert not torch.allclose(ab, one, atol=0.05)  # unrelated maps are not called similar


def test_signs():
    a = smooth_maps(2, 28, 13)
    ones = torch.ones(2, dtype=torch.float64)
    for metric, value in [("spearman", -1), ("cosine", -1), ("spearman_abs", 1), ("ssim_signflip", 1), ("ssim", 1),
                          ("hog", 1)]:
        torch.testing.assert_close(similarity(a, -a, metric), value * ones, rtol=0, atol=1e-12, msg=metric)
    assert (similarity(a, -a, "ssim_signflip", normalize="max_abs") > similarity(a, -a, "ssim", normalize="none",
                                                                                  data_range=2.0)).all()


def test_channels_rank_two_and_dtypes():
    a, b = smooth_maps(2, 28, 14, channels=3), smooth_maps(2, 28, 15, channels=3)
    table = similarity_table(a, b, SIMILARITY_METRICS)
    # [B, 1, H, W] equals [B, H, W]; channels are reduced as the normalisation says
    torch.testing.assert_close(similarity(a[:, :1], b[:, :1], "spearman"), similarity(a[:, 0], b[:, 0], "spearman"))
    torch.testing.assert_close(table["spearman_abs"], similarity(a.abs().sum(1), b.abs().sum(1), "spearman_abs"))
    torch.testing.assert_close(table["spearman"], similarity(a.sum(1), b.sum(1), "spearman"))
    # one [H, W] map is a batch of one
    single = similarity(a[0, 0], b[0, 0], "ssim")
    assert single.shape == (1,)
    torch.testing.assert_close(single, similarity(a[:1, 0], b[:1, 0], "ssim"))
    # float32 in, float32 out, close to float64; integers are accepted
    for metric, values in similarity_table(a.float(), b.float(), SIMILARITY_METRICS).items():
        assert values.dtype == torch.float32, metric
        torch.testing.assert_close(values.double(), table[metric], rtol=0, atol=1e-5 if metric != "hog" else 1e-4)
    q, r = (a[:, 0] * 10).round().long(), (b[:, 0] * 10).round().long()
    torch.testing.assert_close(similarity(q, r, "spearman"), similarity(q.double(), r.double(), "spearman"))


# ----------------------------------------------------------------------------- undefined values

def test_constant_maps_give_nan_and_one_warning():
    a, b = smooth_maps(3, 28, 16), smooth_maps(3, 28, 17)
    a[1] = 0.25
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = similarity_table(a, b, ["spearman_abs", "spearman", "hog", "ssim", "cosine"])
    assert len(caught) == 1 and caught[0].category is RuntimeWarning
    message = str(caught[0].message)
    assert "1 of 3 pair(s)" in message and "constant" in message and "spearman_abs: 1" in message
    assert caught[0].filename == __file__  # points at the caller
    for metric in ("spearman_abs", "spearman", "hog"):
        assert torch.isnan(table[metric][1]) and torch.isfinite(table[metric][[0, 2]]).all(), metric
    assert torch.isfinite(table["ssim"]).all() and torch.isfinite(table["cosine"]).all()  # both defined
    a[1] = 0.0
    with pytest.warns(RuntimeWarning, match="cosine: 1"):
        assert torch.isnan(similarity(a, b, "cosine")[1])


def test_maps_with_one_hot_spot_are_undefined_after_clipping():
    """Clipping at the 99th percentile makes a map with < 1 % non-zero pixels constant: NaN, not 1."""
    a, b = torch.zeros(2, 28, 28, dtype=torch.float64), smooth_maps(2, 28, 18)
    a[:, 3:5, 3:5] = 1.0  # 4 of 784 pixels
    with pytest.warns(RuntimeWarning, match="2 of 2"):
        assert torch.isnan(similarity(a, b, "spearman_abs")).all()
    assert torch.isfinite(similarity(a, b, "spearman_abs", normalize="max_abs")).all()


# ----------------------------------------------------------------------------- errors

def test_errors_name_the_problem():
    a = maps(2, 28, 19)
    with pytest.raises(ValueError, match=r"same shape, got a \(2, 28, 28\) and b \(2, 14, 14\)"):
        similarity(a, maps(2, 14, 14))
    with pytest.raises(ValueError, match=r"unknown metric 'pearson'; choose one of \['spearman_abs', 'spearman'"):
        similarity(a, a, "pearson")
    bad = a.clone()
    bad[1, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="b contains NaN"):
        similarity(a, bad)
    with pytest.raises(ValueError, match=r"rank 2-4\), got rank 1"):
        similarity(a.view(-1), a.view(-1))
    with pytest.raises(ValueError, match="got rank 5"):
        similarity(a.view(1, 1, 2, 28, 28), a.view(1, 1, 2, 28, 28))
    with pytest.raises(TypeError, match="a must be a torch.Tensor"):
        similarity(a.numpy(), a)
    with pytest.raises(ValueError, match=r"unknown normalize 'zscore'; choose one of \['default'"):
        similarity(a, a, normalize="zscore")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['winsize'\].*valid options: .*'win_size'"):
        similarity(a, a, "ssim", winsize=5)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['pixels_per_cell'\]"):
        similarity(a, a, "ssim", pixels_per_cell=4)
    with pytest.raises(ValueError, match="needs an explicit data_range"):
        similarity(a, a, "ssim", normalize="none")
    with pytest.raises(ValueError, match="'cosine' compares signed maps"):
        similarity(a, a, "cosine", normalize="minmax")
    with pytest.raises(ValueError, match="win_size must be an odd"):
        similarity(a, a, "ssim", win_size=4)
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        similarity(maps(1, 8, 0), maps(1, 8, 1), "ssim")
    with pytest.raises(ValueError, match=r"too small for HOG with 4x4-pixel cells and 3x3-cell blocks \(need at least "
                                         r"12x12\)"):
        similarity(maps(1, 8, 0), maps(1, 8, 1), "hog", pixels_per_cell=4)
    with pytest.raises(ValueError, match="percentile must be in"):
        similarity(a, a, percentile=0)
    with pytest.raises(ValueError, match="empty"):
        similarity(a[:0], a[:0])
    with pytest.raises(TypeError, match="use similarity_table"):
        similarity(a, a, ["ssim", "hog"])


# ----------------------------------------------------------------------------- table

def test_table_equals_single_metrics_and_normalises_once(monkeypatch):
    a, b = smooth_maps(2, 28, 20), smooth_maps(2, 28, 21)
    calls = []

    def counting(m, percentile):
        calls.append(m.shape)
        return normalize_abs(m, percentile)

    for kind in ("abs", "intensity"):
        monkeypatch.setitem(sim_module._VIEWS["default"], kind, ("abs_p", counting))
    table = similarity_table(a, b, ["spearman_abs", "ssim", "hog"])
    assert len(calls) == 2  # a and b once, shared by the three metrics
    monkeypatch.undo()
    for metric, values in table.items():
        torch.testing.assert_close(values, similarity(a, b, metric), rtol=0, atol=0)
    assert list(similarity_table(a, b, "ssim")) == ["ssim"]


# ----------------------------------------------------------------------------- calibration

def test_random_maps_are_unrelated_adebayo_calibration():
    """Adebayo et al. App. B: unrelated maps score about 0 (theirs: |mean| < 0.01; HOG of two uniform
    masks 0.078). Bounds from the sample: a Spearman correlation with an i.i.d. map has mean 0 and
    standard deviation 1/sqrt(N - 1) (N pixels), so the mean of n pairs lies within 5/sqrt(n (N - 1));
    SSIM within 4 standard errors plus its floor C2 / (2 var + C2) < 0.02; HOG shares the zero
    gradient at the border (positive, < 0.1); cosine is not centred: E[u]^2 / E[u^2] = 0.75."""
    n, size = 64, 28
    structured = smooth_maps(n, size, 22, channels=2)
    frame = random_map_calibration(structured, [*SIMILARITY_METRICS], seed=0)
    assert list(frame.columns) == ["comparison", "metric", "mean", "std", "n"]
    assert set(frame.comparison) == {"maps vs uniform masks", "maps vs Gaussian noise", "uniform mask vs uniform mask"}
    assert (frame.n == n).all() and len(frame) == 3 * len(SIMILARITY_METRICS)
    sd_spearman = 1 / np.sqrt(size * size - 1)
    for row in frame.itertuples():
        if row.metric.startswith("spearman"):
            assert abs(row.mean) < 5 * sd_spearman / np.sqrt(n), row
            assert 0.6 < row.std / sd_spearman < 1.4, row
        elif row.metric in ("ssim", "ssim_signflip"):
            assert abs(row.mean) < 4 * row.std / np.sqrt(n) + 0.02 or abs(row.mean) < 0.035, row
        elif row.metric == "hog":
            assert 0 < row.mean < 0.1, row
        elif row.comparison == "uniform mask vs uniform mask":
            assert abs(row.mean - 0.75) < 0.01, row
        elif row.comparison == "maps vs Gaussian noise":
            assert abs(row.mean) < 5 / np.sqrt(n * size * size), row
    again = random_map_calibration(structured, ["spearman", "ssim"], seed=0)  # seeded: same draws
    pd.testing.assert_frame_equal(again, frame[frame.metric.isin(["spearman", "ssim"])].reset_index(drop=True))
    other = random_map_calibration(structured, ["spearman", "ssim"], seed=1)
    assert not np.allclose(again["mean"], other["mean"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu():
    a, b = smooth_maps(4, 64, 23, channels=3), smooth_maps(4, 64, 24, channels=3)
    b = a + b
    cpu = similarity_table(a, b, SIMILARITY_METRICS)
    gpu = similarity_table(a.cuda(), b.cuda(), SIMILARITY_METRICS)
    for metric in SIMILARITY_METRICS:
        assert gpu[metric].device.type == "cuda"
        torch.testing.assert_close(gpu[metric].cpu(), cpu[metric], rtol=0, atol=1e-9, msg=metric)
    frame = random_map_calibration(a.cuda(), ["spearman", "hog"], seed=0)
    torch.testing.assert_close(torch.tensor(frame["mean"].values),
                               torch.tensor(random_map_calibration(a, ["spearman", "hog"], seed=0)["mean"].values),
                               rtol=0, atol=1e-9)
