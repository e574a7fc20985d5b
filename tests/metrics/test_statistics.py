"""Intervals, paired tests and verdicts: coverage of a known mean, the two-stage bootstrap's
scheme, agreement with scipy's Wilcoxon and a transcription of Holm, and the verdict rule."""
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from saliency_sanity._core.draws import keyed_seed
from saliency_sanity.metrics.statistics import (VERDICTS, _content_key, _replicates, bootstrap_intervals, bootstrap_mean,
                                        bootstrap_statistic, holm, paired_contrasts, verdict)

MU = 0.3


# ----------------------------------------------------------------------------- bootstrap_mean

def coverage(make_units, repeats=200):
    """Share of the intervals over ``repeats`` fixed-seed data sets that contain MU."""
    hits = 0
    for r in range(repeats):
        units = make_units(np.random.default_rng(10_000 + r))
        _, low, high = bootstrap_mean(units, n_boot=1000, seed=r)
        hits += low <= MU <= high
    return hits / repeats


def one_unit(rng):
    return [rng.normal(MU, 1.0, 40)]


def random_effect(rng):
    return [rng.normal(MU + effect, 1.0, 10) for effect in rng.normal(0.0, 1.0, 30)]


def test_covers_a_known_mean_with_one_unit():
    assert 0.90 <= coverage(one_unit) <= 0.98


def test_covers_a_known_mean_with_a_unit_random_effect():
    assert 0.90 <= coverage(random_effect) <= 0.98


def test_one_stage_would_not_cover_with_a_unit_effect():
    """The coverage test above has teeth: pooling the units as if the images were independent fails it."""
    assert coverage(lambda rng: [np.concatenate(random_effect(rng))], repeats=100) < 0.8


def test_two_stage_is_wider_than_one_stage_when_units_differ():
    rng = np.random.default_rng(3)
    units = [rng.normal(effect, 0.5, 50) for effect in (-3.0, -1.0, 0.5, 1.0, 2.5, 4.0)]
    mean2, low2, high2 = bootstrap_mean(units, n_boot=2000, seed=1)
    mean1, low1, high1 = bootstrap_mean([np.concatenate(units)], n_boot=2000, seed=1)
    assert mean2 == pytest.approx(mean1, rel=1e-12)
    assert mean1 == pytest.approx(np.concatenate(units).mean(), rel=1e-12)
    assert high2 - low2 > 3 * (high1 - low1)
    assert low2 < mean2 < high2 and low1 < mean1 < high1


def test_a_unit_drawn_twice_is_resampled_independently():
    """Two identical units [0, 1]: every replicate is the mean of 4 independent coin flips."""
    stats = _replicates([np.array([0.0, 1.0])] * 2, 40_000, np.random.default_rng(0))
    freq = [np.mean(np.isclose(stats, k / 4)) for k in range(5)]
    np.testing.assert_allclose(freq, np.array([1, 4, 6, 4, 1]) / 16, atol=0.01)


def test_the_statistic_is_the_pooled_mean():
    """Units of 1 and 9 values: a replicate drawing both is 9/10 (pooled), not 1/2 (mean of unit means)."""
    stats = _replicates([np.array([0.0]), np.ones(9)], 40_000, np.random.default_rng(0))
    freq = [np.mean(np.isclose(stats, v)) for v in (0.0, 0.9, 1.0)]
    np.testing.assert_allclose(freq, [0.25, 0.5, 0.25], atol=0.01)
    assert np.isclose(sum(freq), 1.0)


def test_bootstrap_mean_edge_cases():
    assert all(math.isnan(v) for v in bootstrap_mean([]))
    assert all(math.isnan(v) for v in bootstrap_mean([np.array([]), []]))
    mean, low, high = bootstrap_mean([[5.0]])
    assert mean == 5.0 and math.isnan(low) and math.isnan(high)
    assert bootstrap_mean([[2.0, 2.0, 2.0], [2.0, 2.0]]) == (2.0, 2.0, 2.0)
    assert bootstrap_mean([[1.0, 2.0], []]) == bootstrap_mean([[1.0, 2.0]])  # empty units left out
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean([[1.0, math.nan]])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean([[1.0, 2.0]], confidence=95)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_mean([[1.0, 2.0]], n_boot=0)


def test_bootstrap_mean_is_seeded():
    units = [np.arange(5.0), np.arange(7.0) ** 2]
    assert bootstrap_mean(units, seed=4) == bootstrap_mean(units, seed=4)
    assert bootstrap_mean(units, seed=4) != bootstrap_mean(units, seed=5)
    _, low90, high90 = bootstrap_mean(units, seed=4, confidence=0.90)
    _, low99, high99 = bootstrap_mean(units, seed=4, confidence=0.99)
    assert low99 < low90 < high90 < high99


# ----------------------------------------------------------------------------- bootstrap_intervals

@pytest.fixture
def table():
    rng = np.random.default_rng(7)
    rows = [(arch, seed, image, rng.normal(0.5 if arch == "vgg" else 0.2, 0.3))
            for arch in ("vgg", "resnet") for seed in range(3) for image in range(10)]
    frame = pd.DataFrame(rows, columns=["arch", "seed", "image", "value"])
    frame.loc[(frame.arch == "vgg") & (frame.seed == 2), "value"] = np.nan  # a seed with nothing defined
    frame.loc[(frame.arch == "resnet") & frame.image.isin([1, 4, 8]) & (frame.seed == 0), "value"] = np.nan
    return frame


def test_intervals_count_values_and_units(table):
    out = bootstrap_intervals(table, ["arch"], n_boot=500).set_index("arch")
    assert list(out.columns) == ["mean", "low", "high", "n", "undefined", "n_units"]
    assert out.loc["vgg", ["n", "undefined", "n_units"]].tolist() == [20, 10, 2]
    assert out.loc["resnet", ["n", "undefined", "n_units"]].tolist() == [27, 3, 3]
    for arch in ("vgg", "resnet"):
        assert out.loc[arch, "mean"] == pytest.approx(table.loc[table.arch == arch, "value"].mean())
        assert out.loc[arch, "low"] < out.loc[arch, "mean"] < out.loc[arch, "high"]


def test_intervals_follow_the_stated_seeding(table):
    out = bootstrap_intervals(table, ["arch"], n_boot=500, seed=3).set_index("arch")
    rows = table[(table.arch == "resnet") & table.value.notna()].sort_values(["seed", "image"])
    units = [g.value.to_numpy() for _, g in rows.groupby("seed")]
    expected = bootstrap_mean(units, n_boot=500, seed=keyed_seed(3, "bootstrap", _content_key(units)))
    assert tuple(out.loc["resnet", ["mean", "low", "high"]]) == expected


def test_the_same_rows_grouped_differently_give_the_same_interval(table):
    by_arch = bootstrap_intervals(table, ["arch"], n_boot=500).set_index("arch")
    tagged = table.assign(metric="spearman_abs", reading="top")
    finer = bootstrap_intervals(tagged, ["arch", "metric", "reading"], n_boot=500).set_index("arch")
    pd.testing.assert_frame_equal(by_arch[["mean", "low", "high"]], finer[["mean", "low", "high"]])


def test_intervals_do_not_depend_on_row_order_or_other_groups(table):
    out = bootstrap_intervals(table, ["arch"], n_boot=500)
    shuffled = bootstrap_intervals(table.sample(frac=1.0, random_state=1), ["arch"], n_boot=500)
    pd.testing.assert_frame_equal(out, shuffled)
    alone = bootstrap_intervals(table[table.arch == "vgg"], ["arch"], n_boot=500)
    pd.testing.assert_frame_equal(alone, out[out.arch == "vgg"].reset_index(drop=True))


def test_intervals_without_a_seed_column_have_one_unit(table):
    one_seed = table[(table.seed == 1)].drop(columns="seed")
    out = bootstrap_intervals(one_seed, ["arch"], n_boot=500).set_index("arch")
    assert out["n_units"].tolist() == [1, 1]
    values = one_seed[one_seed.arch == "vgg"].sort_values("image").value.to_numpy()
    assert tuple(out.loc["vgg", ["mean", "low", "high"]]) == bootstrap_mean(
        [values], n_boot=500, seed=keyed_seed(0, "bootstrap", _content_key([values])))


def test_intervals_without_by_give_one_row(table):
    out = bootstrap_intervals(table[table.arch == "resnet"], [], n_boot=200)
    assert list(out.columns) == ["mean", "low", "high", "n", "undefined", "n_units"]
    assert out.iloc[0][["n", "undefined", "n_units"]].tolist() == [27, 3, 3]


def test_intervals_refuse_duplicated_keys(table):
    doubled = pd.concat([table, table[(table.arch == "vgg") & (table.seed == 1) & (table.image == 3)]])
    with pytest.raises(ValueError, match=r"seed=1, image=3"):
        bootstrap_intervals(doubled, ["arch"], n_boot=100)
    with pytest.raises(ValueError, match="lacks"):
        bootstrap_intervals(table, ["metric"])


# ----------------------------------------------------------------------------- paired_contrasts

@pytest.fixture
def labelled():
    rng = np.random.default_rng(11)
    rows = []
    for arch in ("vgg", "resnet"):
        for seed in range(3):
            for image in range(12):
                base = rng.normal(0.4, 0.2)
                for label, shift in (("top1", 0.1), ("random", 0.0), ("copy", 0.0)):
                    rows.append((arch, seed, image, label, base + shift + rng.normal(0, 0.1)))
    frame = pd.DataFrame(rows, columns=["arch", "seed", "image", "label", "value"])
    copy = frame.label == "copy"
    frame.loc[copy, "value"] = frame.loc[frame.label == "random", "value"].to_numpy()
    frame.loc[(frame.label == "top1") & frame.image.isin([2, 5]) & (frame.seed == 1), "value"] = np.nan
    frame.loc[(frame.label == "random") & (frame.image == 7) & (frame.seed == 0), "value"] = np.nan
    frame = frame.drop(frame[(frame.label == "random") & (frame.image == 11) & (frame.seed == 2)].index)
    return frame.sample(frac=1.0, random_state=5).reset_index(drop=True)


def aligned(frame, arch, a, b):
    """The paired values, aligned by hand on (seed, image)."""
    look = {(r.seed, r.image, r.label): r.value for r in frame[frame.arch == arch].itertuples()}
    xs, ys = [], []
    for seed in range(3):
        for image in range(12):
            x, y = look.get((seed, image, a), math.nan), look.get((seed, image, b), math.nan)
            if not (math.isnan(x) or math.isnan(y)):
                xs.append(x)
                ys.append(y)
    return np.array(xs), np.array(ys)


def test_contrasts_equal_scipy_on_hand_aligned_pairs(labelled):
    out = paired_contrasts(labelled, [("top1", "random")], by=["arch"], n_boot=500)
    assert list(out.columns) == ["arch", "a", "b", "n", "mean_a", "mean_b", "difference", "low", "high",
                                 "statistic", "p", "p_holm", "n_units"]
    for row in out.itertuples():
        x, y = aligned(labelled, row.arch, "top1", "random")
        assert row.n == len(x) == 36 - 2 - 1 - 1 and row.n_units == 3
        expected = scipy.stats.wilcoxon(x, y)
        assert row.statistic == pytest.approx(expected.statistic, rel=1e-12)
        assert row.p == pytest.approx(expected.pvalue, rel=1e-12)
        assert row.mean_a == pytest.approx(x.mean()) and row.mean_b == pytest.approx(y.mean())
        assert row.difference == pytest.approx((x - y).mean())
        assert row.low < row.difference < row.high and row.low > 0  # top1 is shifted up by 0.1
    np.testing.assert_allclose(out.p_holm, holm(out.p))


def test_contrasts_do_not_depend_on_row_order(labelled):
    first = paired_contrasts(labelled, [("top1", "random"), ("top1", "copy")], by=["arch"], n_boot=300)
    again = paired_contrasts(labelled.sample(frac=1.0, random_state=9), [("top1", "random"), ("top1", "copy")],
                             by=["arch"], n_boot=300)
    pd.testing.assert_frame_equal(first, again)


def test_contrasts_without_a_defined_test(labelled):
    out = paired_contrasts(labelled, [("random", "copy")], by=["arch"], n_boot=200)
    assert out.difference.tolist() == [0.0, 0.0]
    assert out.p.isna().all() and out.statistic.isna().all() and out.p_holm.isna().all()
    few = labelled[(labelled.arch == "vgg") & (labelled.seed == 0) & (labelled.image == 0)]
    out = paired_contrasts(few, [("top1", "random")], n_boot=200)
    assert out.loc[0, "n"] == 1 and math.isnan(out.loc[0, "p"]) and math.isnan(out.loc[0, "low"])


def test_contrasts_refuse_unknown_values_and_ambiguous_pairs(labelled):
    with pytest.raises(ValueError, match="gradcam"):
        paired_contrasts(labelled, [("top1", "gradcam")])
    with pytest.raises(ValueError, match="duplicated"):
        paired_contrasts(labelled, [("top1", "random")])  # without by, each (seed, image) appears per arch


# ----------------------------------------------------------------------------- holm

def holm_by_definition(p):
    """Holm (1979) as written: the i-th smallest of m gets max_{j <= i} p_(j) (m - j + 1), at most 1."""
    idx = [i for i, v in enumerate(p) if not math.isnan(v)]
    order = sorted(idx, key=lambda i: p[i])
    m = len(order)
    out = [math.nan] * len(p)
    for i in range(1, m + 1):
        out[order[i - 1]] = min(1.0, max(p[order[j - 1]] * (m - j + 1) for j in range(1, i + 1)))
    return out


def test_holm_textbook_example():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


def test_holm_equals_the_definition_with_ties_and_nan():
    rng = np.random.default_rng(2)
    for _ in range(300):
        p = np.round(rng.uniform(0.0, 0.3, rng.integers(1, 13)), 2)  # rounding makes ties
        p[rng.random(p.size) < 0.2] = np.nan
        np.testing.assert_allclose(holm(p), holm_by_definition(list(p)), rtol=1e-12, equal_nan=True)
    assert holm([]).shape == (0,)
    assert np.isnan(holm([np.nan, np.nan])).all()
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]


# ----------------------------------------------------------------------------- verdict

@pytest.mark.parametrize("low, high, claim, expected", [
    (0.2, 0.4, ">", "reproduced"),
    (0.1, 0.4, ">", "partly"),     # low at the bound: the interval contains it
    (-0.2, 0.3, ">", "partly"),
    (-0.2, 0.1, ">", "not reproduced"),  # high at the bound
    (-0.3, -0.2, ">", "not reproduced"),
    (-0.3, 0.0, "<", "reproduced"),
    (-0.3, 0.1, "<", "partly"),    # high at the bound
    (0.1, 0.4, "<", "not reproduced"),   # low at the bound
    (0.2, 0.4, "<", "not reproduced"),
    (math.nan, 0.4, ">", "not testable here"),
    (0.2, math.nan, "<", "not testable here"),
])
def test_verdict(low, high, claim, expected):
    assert verdict(low, high, claim=claim, bound=0.1) == expected
    assert expected in VERDICTS


def test_verdict_refuses_other_claims():
    with pytest.raises(ValueError, match="claim"):
        verdict(0.1, 0.2, claim=">=", bound=0.0)
    with pytest.raises(ValueError, match="exceed"):
        verdict(0.3, 0.2, claim=">", bound=0.0)


# ----------------------------------------------------------------------------- bootstrap_statistic

def mean_of(values):
    values = np.asarray(values, dtype=float)
    return lambda i: values[i].mean()


def test_bootstrap_statistic_two_rows_by_hand():
    # replicate means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4:
    # the 2.5 % and 97.5 % quantiles are 0 and 1
    assert bootstrap_statistic(mean_of([0.0, 1.0]), 2, n_boot=4000) == (0.5, 0.0, 1.0)


def test_bootstrap_statistic_invariants():
    diff = np.random.default_rng(3).normal(size=30)
    mean, low, high = bootstrap_statistic(mean_of(diff), 30)
    assert mean == pytest.approx(diff.mean()) and low < mean < high
    assert bootstrap_statistic(mean_of(diff + 2.0), 30) == pytest.approx((mean + 2.0, low + 2.0, high + 2.0))
    assert bootstrap_statistic(mean_of(np.full(5, 0.25)), 5) == pytest.approx((0.25, 0.25, 0.25))
    narrow = bootstrap_statistic(mean_of(diff), 30, confidence=0.5)
    assert low < narrow[1] < narrow[2] < high
    assert bootstrap_statistic(mean_of(diff), 30, seed=1) != (mean, low, high)
    one = bootstrap_statistic(mean_of([1.0]), 1)
    assert one[0] == 1.0 and math.isnan(one[1]) and math.isnan(one[2])
    assert all(math.isnan(v) for v in bootstrap_statistic(mean_of([]), 0))


def test_bootstrap_statistic_leaves_out_undefined_replicates():
    # the statistic is undefined when a replicate draws only the first row (probability 1/2**n per
    # replicate): those replicates are dropped, the interval is taken over the others
    values = np.array([0.0, 1.0, 2.0])
    statistic = lambda i: np.nan if (i == 0).all() else values[i].mean()
    estimate, low, high = bootstrap_statistic(statistic, 3, n_boot=2000)
    assert estimate == 1.0 and not math.isnan(low) and not math.isnan(high) and 0.0 < low <= high <= 2.0
    assert math.isnan(bootstrap_statistic(lambda i: np.nan, 3)[1])

