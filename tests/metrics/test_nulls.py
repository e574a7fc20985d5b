"""The support-preserving null: shared background inflates Spearman, the null absorbs it; the
permutation is keyed per image; the checks report ``null`` and ``excess`` for any batch size."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import saliency_sanity.checks.data_randomization as checks
from saliency_sanity.checks import class_sensitivity, data_randomization_test, method_requests, randomization_test
from saliency_sanity._core.draws import image_seeds, keyed_seed
from saliency_sanity.methods.many import attribute_many
from saliency_sanity.metrics.nulls import (foreground_mask, null_calibration, null_seeds, permutation_index,
                                   permute_maps, similarity_and_null)
from saliency_sanity.metrics.similarity import SIMILARITY_METRICS, similarity, similarity_table

from helpers.tiny_factory import tiny, unseeded

N, SIDE = 64, 28
CLOSE = dict(check_exact=False, rtol=0, atol=1e-6)


def images_with_zeros(fraction, n=N, channels=1, seed=0):
    """Images whose pixels are exactly 0 on ``fraction`` of the pixels (all channels), else in (0.1, 1.1)."""
    gen = torch.Generator().manual_seed(seed)
    keep = torch.rand(n, SIDE * SIDE, generator=gen).argsort(1) >= int(fraction * SIDE * SIDE)
    x = torch.rand(n, channels, SIDE * SIDE, generator=gen) + 0.1
    return (x * keep.unsqueeze(1)).view(n, channels, SIDE, SIDE)


def noise_maps(x, seed):
    """Independent uniform noise, zero where the input is zero (as Input x Gradient's maps are)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(len(x), SIDE, SIDE, generator=gen) * foreground_mask(x)


@pytest.mark.parametrize("fraction", [0.5, 0.6])
def test_shared_zeros_inflate_spearman_abs_and_the_null_absorbs_it(fraction):
    x = images_with_zeros(fraction)
    a, b = noise_maps(x, 1), noise_maps(x, 2)
    value = similarity(a, b, "spearman_abs")
    null = similarity(a, permute_maps(b, permutation_index(foreground_mask(x), null_seeds(0, range(N)))),
                      "spearman_abs")
    assert value.mean() > 0.8  # unrelated maps look alike: they share their zeros
    assert abs(float(null.mean() - value.mean())) <= 0.05
    assert abs(float((value - null).mean())) <= 0.05
    # the plain null (every pixel permuted) does not know the support: it calls the shared zeros a signal
    plain = similarity(a, permute_maps(b, permutation_index(foreground_mask(x, None), null_seeds(0, range(N)))),
                       "spearman_abs")
    assert abs(float(plain.mean())) <= 0.05 and float((value - plain).mean()) > 0.75


def test_without_background_the_null_of_independent_maps_is_about_zero():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(N, 1, SIDE, SIDE, generator=gen) + 0.1  # no pixel is background
    a, b = torch.rand(N, SIDE, SIDE, generator=gen), torch.rand(N, SIDE, SIDE, generator=gen)
    assert foreground_mask(x).all()
    null = similarity(a, permute_maps(b, permutation_index(foreground_mask(x), null_seeds(0, range(N)))),
                      "spearman_abs")
    assert abs(float(null.mean())) <= 0.05


def test_foreground_mask_reads_every_channel_and_gives_blank_images_every_pixel():
    x = torch.zeros(3, 2, 4, 4)
    x[0, 1, 0, 0] = 0.5  # one foreground pixel, in the second channel only
    x[1] = 0.7  # no background
    x[1, :, 2, 2] = 0.0  # ... but one pixel that is background in every channel
    mask = foreground_mask(x)
    assert mask.shape == (3, 4, 4) and mask.dtype == torch.bool
    assert mask[0].sum() == 1 and mask[0, 0, 0]
    assert mask[1].sum() == 15 and not mask[1, 2, 2]
    assert mask[2].all()  # blank: nothing to permute among, so the plain null
    assert foreground_mask(x, background=0.7)[1].sum() == 1
    assert foreground_mask(x, background=None).all()


def test_permutation_index_permutes_the_foreground_only_and_is_keyed_per_image():
    x = images_with_zeros(0.5, n=6)
    mask = foreground_mask(x)
    seeds = null_seeds(7, [10, 11, 12, 13, 14, 15])
    assert seeds[2] == keyed_seed(7, "null", 12) and len(set(seeds)) == 6
    index = permutation_index(mask, seeds)
    assert index.shape == (6, SIDE * SIDE) and index.dtype == torch.int64
    identity = torch.arange(SIDE * SIDE)
    for row, fg in zip(index, mask.flatten(1)):
        assert torch.equal(row[~fg], identity[~fg])  # background stays
        assert torch.equal(row[fg].sort().values, identity[fg])  # foreground: a permutation of itself
        assert (row[fg] != identity[fg]).float().mean() > 0.9  # ... that moves nearly every pixel
    assert torch.equal(permutation_index(mask, seeds), index)  # reproducible
    assert not torch.equal(permutation_index(mask, null_seeds(8, range(10, 16))), index)
    # an image's permutation does not depend on its batch mates
    for i in range(6):
        assert torch.equal(permutation_index(mask[i:i + 1], seeds[i:i + 1])[0], index[i])
    assert torch.equal(permutation_index(mask[[4, 1]], [seeds[4], seeds[1]]), index[[4, 1]])
    with pytest.raises(ValueError, match="one int seed per image"):
        permutation_index(mask, seeds[:3])


def test_permute_maps_moves_every_channel_alike_and_keeps_the_values():
    x = images_with_zeros(0.5, n=4)
    index = permutation_index(foreground_mask(x), null_seeds(0, range(4)))
    maps = torch.randn(4, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = permute_maps(maps, index)
    assert out.shape == maps.shape and out.dtype == maps.dtype
    for c in range(3):
        assert torch.equal(out[:, c], permute_maps(maps[:, c], index))
    assert torch.equal(out.flatten(2).sort(-1).values, maps.flatten(2).sort(-1).values)
    flat, moved = maps.flatten(2), out.flatten(2)
    assert torch.equal(moved, flat.gather(2, index.unsqueeze(1).expand_as(flat)))
    background = ~foreground_mask(x).flatten(1)
    assert torch.equal(moved[:, 0][background], flat[:, 0][background])
    # k stacked batches of the same images (several methods' maps): each copy gets its image's index
    other = maps[:, 0] * 2
    assert torch.equal(permute_maps(torch.cat([maps[:, 0], other]), index),
                       torch.cat([permute_maps(maps[:, 0], index), permute_maps(other, index)]))
    with pytest.raises(ValueError, match=r"spatial size \(14, 14\) differ from the input's \(28, 28\)"):
        permute_maps(maps[..., ::2, ::2], index, size=(SIDE, SIDE))
    with pytest.raises(ValueError, match="does not fit"):
        permute_maps(maps[..., ::2, ::2], index)
    with pytest.raises(ValueError, match="whole number of batches"):
        permute_maps(maps[:3], index)


@pytest.mark.parametrize("normalize", ["default", "max_abs", "none", "minmax"])
def test_similarity_and_null_equal_two_similarity_tables(normalize):
    """The null reuses b's normalised views and ranks, permuted: the same numbers as the metric on the
    permuted map, for every metric and normalisation, on [B, C, H, W] maps stacked twice over the index."""
    x = images_with_zeros(0.5, n=3)
    index = permutation_index(foreground_mask(x), null_seeds(0, range(3)))
    gen = torch.Generator().manual_seed(5)
    a, b = (torch.randn(6, 2, SIDE, SIDE, generator=gen, dtype=torch.float64) * foreground_mask(x).repeat(2, 1, 1)
            .unsqueeze(1) for _ in range(2))
    b[1] = 0.0  # a constant map: NaN for the rank metrics, warned once
    metrics = [m for m in SIMILARITY_METRICS if normalize != "minmax" or m not in ("ssim_signflip", "cosine")]
    options = {"data_range": 2.0} if normalize == "none" else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values, nulls = similarity_and_null(a, b, index, metrics, size=(SIDE, SIDE), normalize=normalize, **options)
    assert sum("similarity undefined" in str(w.message) for w in caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want_values = similarity_table(a, b, metrics, normalize=normalize, **options)
        want_nulls = similarity_table(a, permute_maps(b, index), metrics, normalize=normalize, **options)
    for metric in metrics:
        torch.testing.assert_close(values[metric], want_values[metric], rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(nulls[metric], want_nulls[metric], rtol=0, atol=1e-12, equal_nan=True)
    assert torch.isnan(values["spearman_abs"][1]) and torch.isnan(nulls["spearman_abs"][1])
    with pytest.raises(ValueError, match="differ from the input's"):
        similarity_and_null(a[..., :20], b[..., :20], index, metrics, size=(SIDE, SIDE), normalize=normalize,
                            **options)


def test_null_calibration_on_images_with_background():
    x = images_with_zeros(0.5, n=40)
    table = null_calibration(x, ["spearman_abs", "ssim"], seed=0).set_index(["comparison", "metric"])
    assert list(table.columns) == ["value", "null", "excess", "n"] and (table.n == 40).all()
    fg = table.loc["noise on the foreground"]
    assert fg.loc["spearman_abs", "value"] > 0.8 and (fg.excess.abs() <= 0.05).all()
    everywhere = table.loc["noise everywhere"]
    assert (everywhere[["value", "null", "excess"]].abs() <= 0.05).all(axis=None)
    pd.testing.assert_frame_equal(null_calibration(x, ["spearman_abs", "ssim"], seed=0, batch_size=7),
                                  table.reset_index())  # the same table for any batch size


# ----------------------------------------------------------------------------- the checks

METHODS = ["gradient", "input_x_gradient", "gradcam"]


@pytest.fixture(scope="module")
def net():
    """The tiny 3-channel CNN, in float64: float32 sums would depend on the batch's shape."""
    return tiny().double().eval()


@pytest.fixture(scope="module")
def other():
    torch.manual_seed(1)
    return unseeded().double().eval()


@pytest.fixture(scope="module")
def x():
    return images_with_zeros(0.5, n=5, channels=3, seed=4).double()


def run(check, net, other, x, **options):
    common = dict(metrics=["spearman_abs", "ssim"], progress=False, **options)
    if check == "randomization":
        return randomization_test(net, x, METHODS, stages=[0, 1, -1], **common)
    if check == "class_sensitivity":
        return class_sensitivity(net, x, METHODS, **common)
    return data_randomization_test(net, other, x, METHODS, **common)


@pytest.mark.parametrize("check", ["randomization", "class_sensitivity", "data_randomization"])
def test_checks_report_null_and_excess_for_any_batch_size(check, net, other, x):
    whole = run(check, net, other, x, batch_size=16)
    columns = list(whole.columns)
    assert columns[columns.index("value"):columns.index("value") + 3] == ["value", "null", "excess"]
    assert (whole["null"].isna() == whole.value.isna()).all()  # NaN only with a constant map (a Grad-CAM)
    np.testing.assert_array_equal(whole.excess.to_numpy(), (whole.value - whole.null).to_numpy())
    single = run(check, net, other, x, batch_size=1)
    pd.testing.assert_frame_equal(single, whole, **CLOSE)
    # a shard with its global image indices gets the very same nulls
    shard = run(check, net, other, x[2:4], batch_size=2, image_ids=[2, 3])
    pd.testing.assert_frame_equal(shard, whole[whole.image.isin([2, 3])].reset_index(drop=True), **CLOSE)
    # another seed, another permutation: the null moves, the value does not (no random draw here; the
    # randomization test's re-initialisation and the "random" class are keyed by the seed too)
    if check == "data_randomization":
        reseeded = run(check, net, other, x, batch_size=16, seed=1)
        pd.testing.assert_series_equal(reseeded.value, whole.value, **CLOSE)
        assert not np.allclose(reseeded.null, whole.null)


def test_randomization_null_is_the_metric_against_the_permuted_map(net, x):
    """At stage 0 both maps are the original model's: the null is the metric between a map and
    the same map permuted among the foreground pixels (background=None: among all pixels)."""
    ids = [3, 9, 4, 0, 7]
    maps = attribute_many(net, x, "top1", method_requests(METHODS), reduce=None, seed=image_seeds(0, ids))
    nulls = {}
    for background in (0.0, None):
        frame = randomization_test(net, x, METHODS, stages=[0], metrics=["spearman_abs"], image_ids=ids,
                                   batch_size=2, background=background, progress=False)
        index = permutation_index(foreground_mask(x, background), null_seeds(0, ids))
        for label in METHODS:
            expected = similarity(maps[label], permute_maps(maps[label], index), "spearman_abs")
            got = frame[frame.label == label].set_index("image").loc[ids, "null"]
            np.testing.assert_allclose(got.to_numpy(), expected.numpy(), rtol=0, atol=1e-7)
        nulls[background] = frame[frame.label == "input_x_gradient"].null.to_numpy()
    # Input x Gradient is 0 wherever the input is: the null keeps those shared zeros (background 0),
    # the plain null (None) shuffles them away
    assert np.abs(nulls[None]).max() < 0.2 and (nulls[0.0] - nulls[None] > 0.1).all()


def test_maps_at_another_resolution_are_refused(net, x, monkeypatch):
    real = checks.attribute_many

    def coarse(*args, **kwargs):
        maps = real(*args, **kwargs)
        return {k: v if k == "target" else v[..., ::2, ::2] for k, v in maps.items()}

    monkeypatch.setattr(checks, "attribute_many", coarse)
    with pytest.raises(ValueError, match="differ from the input's"):
        data_randomization_test(net, net, x, ["gradient"], metrics=["spearman_abs"], progress=False)


def test_a_constant_map_warns_once_not_twice(net, x):
    """A constant map has no similarity and no null: one warning for the pair, not a second for the null."""
    dead = tiny().double().eval()
    with torch.no_grad():
        dead[0].weight.zero_()  # the output no longer depends on the input: all-zero gradients
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = data_randomization_test(net, dead, x, ["gradient"], metrics=["spearman_abs"], progress=False)
    undefined = [w for w in caught if "similarity undefined" in str(w.message)]
    assert len(undefined) == 1
    assert frame.value.isna().all() and frame.null.isna().all() and frame.excess.isna().all()


def test_cli_summary_shows_value_and_excess_per_metric():
    from saliency_sanity.cli.check import summary

    nan = float("nan")
    frame = pd.DataFrame({"test": ["randomization"] * 3 + ["class_sensitivity"] * 2, "stage": [0, 2, 2, 0, 0],
                          "pair": [None] * 3 + ["top1 vs bottom1"] * 2, "label": "gradient", "metric": "spearman_abs",
                          "value": [1.0, 0.9, 0.7, 0.8, nan], "null": [0.9, 0.85, 0.65, 0.5, nan]})
    frame["excess"] = frame.value - frame.null
    table = summary(frame)
    assert list(table.columns[:2]) == ["spearman_abs", "spearman_abs excess"]
    row = table.loc[("randomization", "all layers randomized", "gradient")]
    assert math.isclose(row["spearman_abs"], 0.8) and math.isclose(row["spearman_abs excess"], 0.05)
    assert math.isclose(table.loc[("class_sensitivity", "top1 vs bottom1", "gradient"), "spearman_abs excess"], 0.3)
