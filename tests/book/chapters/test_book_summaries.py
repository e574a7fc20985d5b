"""The chapters' glued numbers (book/chapters/*.py, book/glue.py) on small hand-made tables.

Constant values make every bootstrap interval a point (low = mean = high), so each glued value is
known by hand; one method per table varies across the bound of 0.2 to be "neither".
"""
import re
import warnings
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from saliency_sanity.book.chapters import class_sensitivity as cs
from saliency_sanity.book.chapters import data_randomization as dr
from saliency_sanity.book.chapters import positive_handling as ph
from saliency_sanity.book.chapters import randomization as rs
from saliency_sanity.book.glue import glue_key
from saliency_sanity.book.glue import glue_all, interval_values, n_changed, n_similar
from saliency_sanity.training.train import TrainConfig, training_labels, training_subset
from saliency_sanity.data.images import ImageSet



def rows(n_images=4, **columns) -> pd.DataFrame:
    """One row per image (seed 0) with ``columns``: a scalar is repeated, a list gives each image's value."""
    frame = pd.DataFrame({"seed": 0, "image": range(n_images)})
    for name, value in columns.items():
        frame[name] = value
    return frame


# ----------------------------------------------------------------------------- glue keys and values

@pytest.mark.parametrize("parts", [("cs", "vgg", "top1 vs bottom1", "gradcam/positive"),
                                   ("nullcal", "noise on the foreground", "spearman_abs", "value"),
                                   ("datarand", "guided_gradcam"), ("rand", "resnet", "n_stages"),
                                   ("contrast", "class", "vgg", "gradcam_pp/signed", "gradcam_pp/absolute")])
def test_glue_key_is_the_notebooks_former_key(parts):
    # the notebooks built keys as f-strings, sanitised (or not, when already clean) by re.sub
    assert glue_key(*parts) == re.sub(r"\W+", "_", "_".join(parts))
    assert re.fullmatch(r"\w+", glue_key(*parts))


def test_glue_key_examples():
    assert glue_key("cs", "vgg", "top1 vs bottom1", "gradcam/positive") == "cs_vgg_top1_vs_bottom1_gradcam_positive"
    assert glue_key("a", 3, "b c") == "a_3_b_c"


def test_interval_values_are_the_four_glued_values():
    values = interval_values("k", np.float64(0.5), 0.25, 0.75)
    assert values == {"k": 0.5, "k_low": 0.25, "k_high": 0.75, "k_text": "+0.50 [+0.25, +0.75]"}
    assert all(type(values[k]) is float for k in ("k", "k_low", "k_high"))  # not numpy: "0.5" when glued
    assert interval_values("k", float("nan"), float("nan"), float("nan"))["k_text"].startswith("undefined")


def test_similar_and_changed_counts_ignore_nan_and_the_bound_itself():
    low = pd.Series([0.21, 0.2, np.nan, 0.5])
    high = pd.Series([0.19, 0.2, np.nan, -1.0])
    assert n_similar(low) == 2 and n_changed(high) == 2
    assert type(n_similar(low)) is int


def test_glue_all_glues_every_value_in_order_without_display(monkeypatch):
    import myst_nb

    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda key, value, display=True: calls.append((key, value, display)))
    glue_all({"b": 1, "a": "x"})
    assert calls == [("b", 1, False), ("a", "x", False)]


# ----------------------------------------------------------------------------- randomization

def readings_table() -> pd.DataFrame:
    """vgg (5 stages) and resnet (4): methods a (excess 0.5), b (-0.1), c (0 and 0.4), two readings and metrics."""
    parts = []
    for arch, n_stages in (("vgg", 5), ("resnet", 4)):
        for reading in ("top", "logit"):
            for metric in ("spearman_abs", "ssim"):
                for label, excess, handling in (("a", 0.5, "positive propagation"), ("b", -0.1, "signed propagation"),
                                                ("c", [0.0, 0.4, 0.0, 0.4], "signed propagation")):
                    parts.append(rows(arch=arch, reading=reading, metric=metric, label=label, handling=handling,
                                      n_stages=n_stages, excess=excess, null=0.3, value=np.add(excess, 0.3)))
    return pd.concat(parts, ignore_index=True)


def test_stage_values_per_architecture():
    assert rs.stage_values(readings_table()) == {"rand_resnet_n_stages": 4, "rand_resnet_top_stage": 2,
                                                 "rand_vgg_n_stages": 5, "rand_vgg_top_stage": 3}


def test_reading_values_intervals_verdicts_and_counts():
    intervals = rs.reading_intervals(readings_table())
    assert set(intervals) == {"excess", "value", "null"}
    values = rs.reading_values(intervals)
    assert values["rand_excess_vgg_spearman_abs_top_a"] == 0.5
    assert values["rand_value_vgg_spearman_abs_top_a_text"] == "+0.80 [+0.80, +0.80]"
    assert values["rand_null_resnet_ssim_logit_b_low"] == pytest.approx(0.3)
    assert values["rand_verdict_vgg_spearman_abs_top_a"] == "similar"
    assert values["rand_verdict_vgg_spearman_abs_top_b"] == "changed"
    assert values["rand_verdict_vgg_spearman_abs_top_c"].startswith("neither")
    assert values["rand_n_methods"] == 3
    for arch in ("vgg", "resnet"):
        for reading in ("top", "logit"):
            assert values[f"rand_nsimilar_{arch}_{reading}"] == 1
            assert values[f"rand_nchanged_{arch}_{reading}"] == 1
    # 3 kinds x 24 rows x 4 values, 24 verdicts, the method count, 2 counts x 4 (arch, reading)
    assert len(values) == 3 * 24 * 4 + 24 + 1 + 8


def test_counts_follow_the_quoted_metric_only():
    table = readings_table()
    table.loc[table.metric == "ssim", "excess"] = 0.9  # every method "similar" on SSIM
    values = rs.reading_values(rs.reading_intervals(table))
    assert values["rand_nsimilar_vgg_top"] == 1
    assert rs.reading_values(rs.reading_intervals(table), metric="ssim")["rand_nsimilar_vgg_top"] == 3


def test_handling_ranking_highest_first_undefined_last():
    table = readings_table()
    nan_rows = rows(arch="vgg", reading="top", metric="spearman_abs", label="d", handling="other", n_stages=5,
                    excess=np.nan, null=np.nan, value=np.nan)
    values = rs.handling_ranking(pd.concat([table, nan_rows], ignore_index=True))
    # signed propagation averages b (-0.1) and c (0 / 0.4) per image: 0.05 on average
    assert values["rand_vgg_handling_ranking"] == ("positive propagation +0.50 [+0.50, +0.50]; signed propagation "
                                                   "+0.05 [-0.05, +0.15]; other undefined (no image gives two "
                                                   "non-constant maps)")
    assert values["rand_resnet_handling_ranking"].startswith("positive propagation +0.50")


def test_reading_tables_shapes():
    intervals = rs.reading_intervals(readings_table())
    means = rs.excess_means(intervals)
    assert means.loc["a", ("vgg", "top")] == 0.5 and means.shape == (3, 4)
    cells = rs.reading_cells(intervals)
    assert cells.shape == (6, 6)  # arch x method rows; metric x (value, null, excess) columns
    assert cells.loc[("vgg", "b"), ("spearman_abs", "excess")] == "-0.10 [-0.10, -0.10]"


def test_null_calibration_values():
    calibration = pd.DataFrame({"comparison": ["noise on the foreground", "noise everywhere"],
                                "metric": "spearman_abs", "value": [0.8, 0.0], "null": [0.79, 0.01],
                                "excess": [0.01, -0.01]})
    values = rs.null_calibration_values(calibration)
    assert values["nullcal_noise_on_the_foreground_spearman_abs_value"] == 0.8
    assert values["nullcal_noise_everywhere_spearman_abs_excess"] == -0.01
    assert len(values) == 6


# ----------------------------------------------------------------------------- data randomization

CLASSES = tuple(f"class{k}" for k in range(10))


class Lookup(nn.Module):
    """Predicts ``answers[i]`` for the image whose pixels are all ``i / 100``."""

    def __init__(self, answers: dict):
        super().__init__()
        self.answers = answers

    def forward(self, x):
        index = (x[:, 0, 0, 0] * 100).round().long().tolist()
        return torch.nn.functional.one_hot(torch.tensor([self.answers[i] for i in index]), 10).float()


def matched_pair(*, wrong: int = 2, **changes):
    """A fake matched pair on 20 images (8 trained on, batch 3, 2 epochs): the true-label model fits
    every label, the permuted one all but ``wrong`` of its 8."""
    train = ImageSet(torch.arange(20).float().div(100).view(20, 1, 1, 1).expand(20, 1, 4, 4).clone(),
                     torch.arange(20) % 10, CLASSES)
    history = pd.DataFrame({"epoch": [1, 2], "train_acc": [0.5, 0.9], "test_acc": [0.3, 0.4]})
    pair = {}
    for kind in ("true", "permuted"):
        config = TrainConfig(arch="vgg", seed=0, epochs=2, n_train=8, batch_size=3, permute_labels=kind == "permuted")
        if kind == "permuted":
            config = replace(config, **changes)
        images = training_subset(config, train)
        labels = training_labels(config, images.labels)
        answers = {int(round(float(x) * 100)): int(y) for x, y in zip(images.images[:, 0, 0, 0], labels)}
        if kind == "permuted":
            for i in list(answers)[:wrong]:
                answers[i] = (answers[i] + 1) % 10
        pair[kind] = SimpleNamespace(config=config, model=Lookup(answers), history=history, fingerprint="same",
                                     test_logits=lambda: torch.zeros(7, 10))
    return pair, train


def test_fit_table_hand_computed():
    pair, train = matched_pair()
    fit = dr.fit_table(pair, train, device="cpu")
    assert list(fit.index) == ["true", "permuted"]
    true, permuted = fit.loc["true"], fit.loc["permuted"]
    assert permuted["training images"] == 8 and permuted["epochs"] == 2 and permuted["batch size"] == 3
    assert permuted["optimisation steps"] == 6  # ceil(8 / 3) batches x 2 epochs
    assert true[dr.FIT_ACCURACY] == 1.0 and permuted[dr.FIT_ACCURACY] == 0.75  # 6 of 8
    assert true["labels that are true"] == 1.0
    assert permuted["training accuracy (last epoch, running)"] == 0.9 and permuted["test accuracy"] == 0.4
    assert permuted["test images"] == 7


def test_fit_table_refuses_a_pair_that_differs_beyond_its_labels():
    pair, train = matched_pair(epochs=3)
    with pytest.raises(ValueError, match="epochs"):
        dr.fit_table(pair, train, device="cpu")
    pair, train = matched_pair()
    pair["permuted"].fingerprint = "other"
    with pytest.raises(ValueError, match="different images"):
        dr.fit_table(pair, train, device="cpu")


def test_fit_values_and_the_verdict():
    pair, train = matched_pair()
    fit = dr.fit_table(pair, train, device="cpu")
    with pytest.warns(UserWarning, match="75.0%"):
        values = dr.fit_values(fit, "smoke")
    assert values["datarand_true_train_acc"] == 1.0 and values["permuted_train_acc"] == 0.75
    assert values["datarand_permuted_test_acc"] == values["permuted_test_acc"] == 0.4
    assert (values["datarand_n_train"], values["datarand_epochs"], values["datarand_steps"],
            values["datarand_test_images"]) == (8, 2, 6, 7)
    assert type(values["datarand_steps"]) is int
    assert values["datarand_fit_verdict"].startswith("stays below") and "'smoke'" in values["datarand_fit_verdict"]
    pair, train = matched_pair(wrong=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        verdict = dr.fit_values(dr.fit_table(pair, train, device="cpu"), "smoke")["datarand_fit_verdict"]
    assert verdict.startswith("reaches the 95 %")


def test_reported_requests_appends_only_the_missing_ones():
    from saliency_sanity.checks import paper_methods

    requests = paper_methods(["guided_backprop", "lrp_zplus"])
    labels = [label for label, _, _ in dr.reported_requests(requests)]
    assert labels == ["guided_backprop", "lrp_zplus", "gradient", "input_x_gradient", "gradcam", "guided_gradcam"]
    options = dr.reported_requests([], integrated_gradients={"steps": 3}, gradcam={"aggregation": "positive"})
    assert dict((label, opts) for label, _, opts in options)["gradcam"]["aggregation"] == "positive"


def test_comparisons_in_words():
    assert dr.compare_means(0.5, 0.2) == "higher than" and dr.compare_means(0.1, 0.2) == "lower than"
    assert dr.compare_means(0.2, 0.2) == "equal to" and dr.compare_means(np.nan, 0.2) == "not comparable with"
    iv = lambda low, high: SimpleNamespace(low=low, high=high)  # noqa: E731
    assert dr.compare_intervals(iv(0.3, 0.5), iv(0.1, 0.2)) == "higher than"
    assert dr.compare_intervals(iv(0.1, 0.2), iv(0.3, 0.5)) == "lower than"
    assert dr.compare_intervals(iv(0.1, 0.35), iv(0.3, 0.5)) == "not distinguishable from"
    assert dr.compare_intervals(iv(np.nan, 0.35), iv(0.3, 0.5)) == "not comparable with"


def data_randomization_table() -> pd.DataFrame:
    parts = []
    for label, excess in (("gradient", 0.5), ("guided_backprop", 0.9), ("gradcam", -0.2), ("guided_gradcam", -0.2),
                          ("input_x_gradient", [0.1, 0.3, 0.1, 0.3])):
        parts.append(rows(label=label, metric="spearman_abs", excess=excess, null=0.1, value=np.add(excess, 0.1)))
        undefined = label == "guided_backprop"  # no defined SSIM for it
        parts.append(rows(label=label, metric="ssim", excess=np.nan if undefined else 0.0,
                          null=np.nan if undefined else 0.0, value=np.nan if undefined else 0.0))
    return pd.concat(parts, ignore_index=True)


def test_similarity_values_hand_computed():
    table = data_randomization_table()
    values = dr.similarity_values(table, dr.excess_intervals(table), ["spearman_abs", "ssim"])
    assert values["datarand_excess_spearman_abs_gradient"] == 0.5
    assert values["datarand_excess_spearman_abs_gradient_text"] == "+0.50 [+0.50, +0.50]"
    assert values["datarand_verdict_spearman_abs_guided_backprop"] == "similar"
    assert values["datarand_verdict_ssim_guided_backprop"] == "undefined"
    assert (values["datarand_n_methods"], values["datarand_nsimilar"], values["datarand_nchanged"]) == (5, 2, 2)
    assert values["datarand_spearman_abs_gradcam"] == values["datarand_gradcam"] == pytest.approx(-0.1)
    assert values["datarand_gradient"] == pytest.approx(0.6) and values["datarand_ssim_gradient"] == 0.0
    assert values["datarand_cmp_guided_backprop_gradient_spearman_abs"] == "higher than"
    assert values["datarand_cmp_guided_gradcam_gradcam_spearman_abs"] == "equal to"
    assert values["datarand_cmp_guided_backprop_gradient_ssim"] == "not comparable with"
    assert values["datarand_cmpx_guided_backprop_gradient_spearman_abs"] == "higher than"
    assert values["datarand_cmpx_guided_gradcam_gradcam_spearman_abs"] == "not distinguishable from"
    assert values["datarand_cmpx_guided_backprop_gradient_ssim"] == "not comparable with"
    cells = dr.excess_cells(dr.excess_intervals(table), ["ssim", "spearman_abs"])
    assert list(cells.columns) == ["ssim", "spearman_abs"] and cells.loc["gradcam", "spearman_abs"] == "-0.20 [-0.20, -0.20]"


# ----------------------------------------------------------------------------- class sensitivity

def class_table() -> pd.DataFrame:
    parts = []
    for pair in ("top1 vs bottom1", "top1 vs random"):
        for metric in ("spearman_abs", "ssim"):
            parts.append(rows(arch="vgg", pair=pair, metric=metric, label="gradcam/positive",
                              value=[0.9, 0.9, 0.9, np.nan], null=[0.1, 0.1, 0.1, np.nan], excess=[0.8, 0.8, 0.8, np.nan]))
            parts.append(rows(arch="vgg", pair=pair, metric=metric, label="gradient", value=0.0, null=0.3, excess=-0.3))
    return pd.concat(parts, ignore_index=True)


def test_class_values_hand_computed():
    values = cs.class_values(cs.class_intervals(class_table()))
    key = "vgg_top1_vs_bottom1_gradcam_positive"
    assert values[f"cs_{key}"] == pytest.approx(0.9) and values[f"csnull_{key}_high"] == pytest.approx(0.1)
    assert values[f"csx_{key}_text"] == "+0.80 [+0.80, +0.80]"
    assert values[f"csv_{key}"] == "similar" and values["csv_vgg_top1_vs_random_gradient"] == "changed"
    assert values[f"csu_{key}"] == 0.25 and values["csu_vgg_top1_vs_bottom1_gradient"] == 0.0
    assert values["csn_vgg_top1_vs_bottom1"] == 1 and values["csc_vgg_top1_vs_random"] == 1
    assert values["cs_n_methods"] == 2 and values["cs_similar"] == 0.2
    # 3 kinds x 4 rows x 4 values, 4 verdicts, 4 undefined shares, 2 x 2 counts, 2 constants
    assert len(values) == 48 + 4 + 4 + 4 + 2


def test_class_tables():
    table = class_table()
    cells = cs.excess_cells(cs.class_intervals(table)["csx"])
    assert cells.loc["gradient", ("vgg", "top1 vs random")] == "-0.30 [-0.30, -0.30]"
    every = cs.metric_cells(table)
    assert every.shape == (2, 4) and every.loc[("vgg", "gradient"), ("top1 vs bottom1", "ssim")].startswith("-0.30")


# ----------------------------------------------------------------------------- positive handling

def thesis_frames() -> dict:
    """Randomization: gradcam (signed) 0.40-0.51 below gradcam/positive per image; class: no difference;
    guided_backprop only in the randomization test."""
    gen = np.random.default_rng(0)
    base = gen.uniform(0.3, 0.5, 12)
    parts = {"randomization": [], "class": []}
    # distinct differences (-0.40, -0.41, ...): no tie, so scipy's exact Wilcoxon p
    for label, shift, handling in (("gradcam", -0.4 - 0.01 * np.arange(12), "signed aggregation"), ("gradcam/positive", 0.0, "positive aggregation"),
                                   ("guided_backprop", 0.3, "positive propagation")):
        parts["randomization"].append(rows(12, arch="vgg", label=label, handling=handling, excess=base + shift))
    jitter = np.where(np.arange(12) % 2, 0.01, -0.01)
    parts["class"].append(rows(12, arch="vgg", label="gradcam", handling="signed aggregation", excess=base + jitter))
    parts["class"].append(rows(12, arch="vgg", label="gradcam/positive", handling="positive aggregation", excess=base))
    return {test: pd.concat(p, ignore_index=True) for test, p in parts.items()}


def test_thesis_tests_pick_the_reading_pair_and_metric():
    readings = pd.DataFrame({"reading": ["top", "top", "logit"], "metric": ["m", "other", "m"]})
    classes = pd.DataFrame({"pair": ["top1 vs bottom1", "top1 vs random"], "metric": ["m", "m"]})
    tests = ph.thesis_tests(readings, classes, "m")
    assert list(tests) == ["randomization", "class"]
    assert len(tests["randomization"]) == 1 and list(tests["class"].pair) == ["top1 vs bottom1"]


def test_both_tests_and_counts_by_handling():
    tests = thesis_frames()
    summary = ph.both_tests(tests)
    assert len(summary) == 3
    assert np.isnan(summary.set_index("label").loc["guided_backprop", "class_mean"])  # not in the class test
    values = ph.summary_values(summary, tests)
    # randomization: guided_backprop ~0.7 similar, gradcam/positive ~0.4 similar, gradcam ~0.0 changed
    assert values["phv_vgg_randomization_gradcam"] == "changed"
    assert values["phv_vgg_class_guided_backprop"] == "undefined"
    assert values["nsimilar_vgg_randomization"] == 2 and values["nchanged_vgg_randomization"] == 1
    assert values["nsimilar_vgg_randomization_positive_handling"] == 2
    assert values["nchanged_vgg_randomization_signed_handling"] == 1
    assert values["nmethods_vgg_positive_handling"] == 2 and values["nmethods_vgg_signed_handling"] == 1
    assert values["nsimilar_vgg_class"] == 2 and values["nchanged_vgg_class"] == 0
    assert values["n_methods"] == 3 and values["ph_similar"] == 0.2
    assert values["ph_vgg_randomization_gradcam_positive"] == pytest.approx(tests["randomization"].excess[12:24].mean())
    table = ph.summary_table(summary)
    assert table.loc[("positive propagation", "guided_backprop"), ("class", "vgg")] == "–"


def test_sign_pairs_need_both_variants():
    assert ph.sign_pairs(["gradcam", "gradcam/positive", "fullgrad", "fullgrad/positive"]) == [
        ("gradcam", "gradcam/positive")]
    assert ph.sign_pairs(["gradcam_pp/signed", "gradcam_pp", "gradcam_pp/absolute"]) == [
        ("gradcam_pp/signed", "gradcam_pp"), ("gradcam_pp/signed", "gradcam_pp/absolute")]
    assert ph.sign_pairs(["gradient"]) == []


def test_sign_contrasts_one_family_and_their_values():
    tests = thesis_frames()
    contrasts = ph.sign_contrasts(tests, ["gradcam", "gradcam/positive", "guided_backprop"])
    assert list(contrasts.test) == ["randomization", "class"]
    # 12 pairs, all negative: exact two-sided Wilcoxon p = 2 / 2**12; Holm over the 2 contrasts doubles it
    assert contrasts.p.iloc[0] == pytest.approx(2 / 4096)
    assert contrasts.p_holm.iloc[0] == pytest.approx(4 / 4096)
    assert contrasts.difference.iloc[0] == pytest.approx(-0.455)
    values = ph.contrast_values(contrasts)
    key = "contrast_randomization_vgg_gradcam_gradcam_positive"
    assert values[key] == pytest.approx(-0.455) and values[key + "_word"] == "lower than"
    assert values[key + "_p"] == pytest.approx(4 / 4096) and values[key + "_text"].endswith("], Holm p = 0.00098")
    assert values["contrast_class_vgg_gradcam_gradcam_positive_word"] == "not distinguishable from"
    assert values["n_contrasts"] == 2 and values["n_contrasts_significant"] == 1
    assert values["n_contrasts_signed_lower"] == 1 and values["n_contrasts_randomization_signed_lower"] == 1
    assert values["n_contrasts_class"] == 1 and values["n_contrasts_class_signed_higher"] == 0
    assert ph.contrast_table(contrasts).data.shape == (2, 9)
    # an undefined test (one pair: no Wilcoxon p) is shown as a dash, never as "nan" on the page
    undefined = contrasts.assign(statistic=float("nan"), p=float("nan"), p_holm=float("nan"))
    html = ph.contrast_table(undefined).to_html()
    assert "nan" not in html and html.count("–") >= 6


def test_no_sign_contrast_without_two_variants():
    contrasts = ph.sign_contrasts(thesis_frames(), ["gradcam", "guided_backprop"])
    assert contrasts.empty and ph.contrast_values(contrasts) == {}


def test_contrast_word():
    assert ph.contrast_word(-0.2, -0.3, -0.1, 0.01) == "lower than"
    assert ph.contrast_word(0.2, 0.1, 0.3, 0.01) == "higher than"
    assert ph.contrast_word(0.2, 0.1, 0.3, 0.2) == "not distinguishable from"
    assert ph.contrast_word(-0.2, -0.3, 0.1, 0.01) == "not distinguishable from"
    assert ph.contrast_word(np.nan, -0.3, 0.1, 0.01).startswith("not comparable")
