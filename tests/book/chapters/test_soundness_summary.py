"""The soundness chapter's summaries (book/chapters/soundness.py), the per-label maps and the paired
bootstrap behind them, on small inputs with hand-computed answers."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from saliency_sanity import METHODS, attribute
from saliency_sanity.book.chapters.soundness import (ABLATION_SETTINGS, ablation_summary, fill_effect,
                                                    fill_effect_values, insertion_deletion_table, loss_convergence,
                                                    mask_against_registry, method_table, method_values,
                                                    scores_per_image, tv_upsampling_ablation, versus)
from saliency_sanity.methods.many import maps_for_every_label
from saliency_sanity.methods.masks import sound_masks
from saliency_sanity.metrics.soundness import completeness_soundness, summarize_completeness_soundness


def linear_model(n_classes=3, side=8, seed=0):
    """logits = W x + b on one-channel side x side images: the gradient map of class c is W[c]."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(side * side, n_classes)).eval()


def images(n=2, side=8, seed=1):
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- maps for every label

def test_maps_for_every_label_holds_each_labels_gradient_in_order():
    model, x = linear_model(), images()
    maps, seconds = maps_for_every_label(model, x, "gradient", [2, 0])
    weight = model[1].weight.detach().reshape(3, 8, 8)
    assert maps.shape == (2, 2, 8, 8)
    for image in range(2):  # the gradient of a linear logit is its weight row, whatever the image
        torch.testing.assert_close(maps[image, 0], weight[2])
        torch.testing.assert_close(maps[image, 1], weight[0])
    assert seconds > 0 and math.isfinite(seconds)


def test_maps_for_every_label_passes_options_and_counts_labels():
    model, x = linear_model(), images()
    maps, _ = maps_for_every_label(model, x, "smoothgrad", 3, {"n_samples": 2})
    for c in range(3):
        torch.testing.assert_close(maps[:, c], attribute(model, x, torch.full((2,), c), "smoothgrad", n_samples=2))
    with pytest.raises(ValueError, match="at least one"):
        maps_for_every_label(model, x, "gradient", [])


# ----------------------------------------------------------------------------- tables and words

def per_image_frame():
    return pd.DataFrame({"method": ["a", "a", "b", "b", "c", "c"], "image": [0, 1] * 3,
                         "completeness": [0.2, 0.4, 0.9, 0.7, 0.3, 0.4],
                         "soundness": [0.5, 0.7, 0.1, 0.3, 0.6, 0.6]})


def test_method_table_means_ranks_with_ties_and_order():
    table = method_table(per_image_frame(), {"a": 0.5, "b": 2.0})
    # soundness 0.6, 0.6, 0.2 (ranks 1, 1, 3); the tie broken by completeness 0.35 (rank 2) over 0.3 (rank 3)
    assert list(table.index) == ["c", "a", "b"]
    assert table.loc["a"].completeness == pytest.approx(0.3) and table.loc["b"].soundness == pytest.approx(0.2)
    assert table.rank_soundness.to_dict() == {"c": 1, "a": 1, "b": 3}  # ties share the lowest rank
    assert table.rank_completeness.to_dict() == {"c": 2, "a": 3, "b": 1}
    assert table.seconds_per_map.loc["b"] == 2.0 and np.isnan(table.seconds_per_map.loc["c"])


def test_method_values_keys_and_floats():
    table = method_table(per_image_frame().replace({"method": {"c": "control: gradient, class-agnostic"}}))
    values = method_values(table)
    assert list(values) == ["cs_control_gradient_class_agnostic_completeness",
                            "cs_control_gradient_class_agnostic_soundness", "cs_a_completeness", "cs_a_soundness",
                            "cs_b_completeness", "cs_b_soundness"]
    assert values["cs_b_completeness"] == pytest.approx(0.8) and type(values["cs_b_completeness"]) is float


def test_versus_in_words():
    assert (versus(2, 1), versus(1, 1), versus(0, 1)) == ("higher than", "equal to", "lower than")


def registry_table(mask_completeness, mask_soundness):
    return pd.DataFrame({"completeness": [0.1, 0.5, 0.9, 0.0, mask_completeness],
                         "soundness": [0.2, 0.4, 0.8, 1.0, mask_soundness]},
                        index=["a", "b", "c", "control: x", "sound_mask"])


@pytest.mark.parametrize("completeness, soundness, paper_like, unlike_paper", [
    (0.6, 0.3, "is not", "still holds"),   # complete, not sound: the earlier finding
    (0.6, 0.9, "is", "no longer holds"),   # both
    (0.2, 0.9, "is not", "holds only in part"),
])
def test_mask_against_registry(completeness, soundness, paper_like, unlike_paper):
    values = mask_against_registry(registry_table(completeness, soundness), ["a", "b", "c", "sound_mask"])
    assert all(key.startswith("mask_") for key in values) and len(values) == 9
    out = {key.removeprefix("mask_"): value for key, value in values.items()}
    # the control is not in the registry: medians and ranks are over a, b, c and the mask
    assert out["median_completeness"] == 0.5 and out["median_soundness"] == 0.4
    assert out["n_ranked"] == 4
    assert out["completeness_rank"] == 1 + sum(v > completeness for v in (0.1, 0.5, 0.9))
    assert out["soundness_rank"] == 1 + sum(v > soundness for v in (0.2, 0.4, 0.8))
    assert out["paper_like"] == paper_like and out["unlike_paper"] == unlike_paper
    assert out["completeness_vs_median"] == versus(completeness, 0.5)
    assert all(type(v) in (int, float, str) for v in out.values())


def test_mask_against_registry_equal_to_median():
    out = mask_against_registry(registry_table(0.5, 0.4), ["a", "b", "c"])
    assert out["mask_completeness_vs_median"] == out["mask_soundness_vs_median"] == "equal to"
    assert out["mask_paper_like"] == "is" and out["mask_completeness_rank"] == 2  # ties with b: the lower rank


def test_fill_effect_directions_and_pairing():
    per_image = pd.DataFrame({
        "method": ["m"] * 4 + ["o"] * 3, "image": [0, 1, 2, 3, 0, 1, 2],
        "completeness": [0.5, 0.6, 0.7, 0.0, 0.4, 0.5, 0.6],  # m = o + 0.1 on the paired images
        "soundness": [0.2, 0.3, 0.4, 1.0, 0.5, 0.6, 0.7],     # m = o - 0.3
    })
    table = fill_effect(per_image, "m", "o", labels=("mine", "other")).set_index("metric")
    assert list(table.columns) == ["mine", "other", "difference", "95% CI low", "95% CI high", "effect"]
    # the unpaired image 3 counts in the means, not in the differences
    assert table.loc["completeness", "mine"] == pytest.approx(0.45)
    assert table.loc["completeness", ["difference", "95% CI low", "95% CI high"]].tolist() == pytest.approx([0.1] * 3)
    assert table.loc["completeness", "effect"] == "raises"
    assert table.loc["soundness", "difference"] == pytest.approx(-0.3)
    assert table.loc["soundness", "effect"] == "lowers"
    mixed = per_image.assign(completeness=[0.5, 0.4, 0.7, 0.0, 0.4, 0.5, 0.6])  # +0.1, -0.1, +0.1
    assert fill_effect(mixed, "m", "o").set_index("metric").loc["completeness", "effect"] == \
        "does not measurably change"
    values = fill_effect_values(table.reset_index())
    assert list(values) == [f"mask_fill_{s}_{part}" for s in ("completeness", "soundness")
                            for part in ("diff", "diff_lo", "diff_hi", "effect")]
    assert values["mask_fill_soundness_diff_hi"] == pytest.approx(-0.3)
    assert values["mask_fill_soundness_effect"] == "lowers"
    assert fill_effect_values(pd.DataFrame()) == {}  # no comparison run: nothing to glue


# ----------------------------------------------------------------------------- convergence

def test_loss_convergence_by_hand():
    steps = torch.arange(8, 0, -1, dtype=torch.float64)  # mean loss 8, 7, ..., 1
    offsets = torch.tensor([[-1.0, 0.0, 1.0], [0.5, -0.5, 0.0]], dtype=torch.float64)  # mean 0 over masks
    losses = steps[:, None, None] + offsets
    out = loss_convergence(losses)
    # kernel min(25, 8 // 4) = 2: smoothed 7.5, ..., 1.5; window min(100, 6) = 6: |1.5 - 7.5| / 7.5
    assert out == {"mask_loss_window": 6, "mask_loss_last_change": pytest.approx(0.8), "mask_loss_tolerance": 0.01,
                   "mask_loss_converged": "has not"}
    # the tolerance decides: a change of 80 % is within a tolerance of 90 %
    assert loss_convergence(losses, tolerance=0.9)["mask_loss_converged"] == "has"
    # 50 steps: kernel 50 // 4 = 12, 39 smoothed steps, window 38; a flat loss does not change
    flat = loss_convergence(torch.full((50, 2, 3), 2.0))
    assert flat == {"mask_loss_window": 38, "mask_loss_last_change": 0.0, "mask_loss_tolerance": 0.01,
                    "mask_loss_converged": "has"}
    short = loss_convergence(torch.ones(1, 2, 3))
    assert short["mask_loss_window"] == 0 and math.isnan(short["mask_loss_last_change"])
    assert short["mask_loss_converged"] == "has not"


# ----------------------------------------------------------------------------- scores, curves, ablation

def test_scores_per_image_one_row_per_method_and_image():
    model, x = linear_model(), images(3)
    maps = {"gradient": maps_for_every_label(model, x, "gradient", 3)[0], "random": torch.rand(3, 3, 8, 8)}
    predicted = model(x).argmax(1)
    frame = scores_per_image(model, x, maps, predicted=predicted, steps=4, mean=0.2)
    assert sorted(frame.columns) == ["completeness", "image", "method", "soundness"] and len(frame) == 6
    alone = summarize_completeness_soundness(completeness_soundness(model, x, maps["random"], predicted=predicted,
                                                                    steps=4, mean=0.2))
    got = frame[frame.method == "random"].set_index("image")[["completeness", "soundness"]]
    pd.testing.assert_frame_equal(got, alone.set_index("image")[["completeness", "soundness"]])


def test_insertion_deletion_table_ends_at_the_full_image():
    model, x = linear_model(), images(3)
    maps = {"gradient": maps_for_every_label(model, x, "gradient", 3)[0]}
    predicted = model(x).argmax(1)
    curves = insertion_deletion_table(model, x, maps, predicted, steps=4, mean=0.2)
    assert len(curves) == 2 * 5 and set(curves.curve) == {"insertion", "deletion"}
    p_x = model(x).softmax(1)[torch.arange(3), predicted].mean().item()
    ins = curves[curves.curve == "insertion"].set_index("fraction").probability
    dele = curves[curves.curve == "deletion"].set_index("fraction").probability
    # every pixel kept (insertion at 1) and none removed (deletion at 0) are the image itself
    assert ins.loc[1.0] == pytest.approx(p_x, abs=1e-6) and dele.loc[0.0] == pytest.approx(p_x, abs=1e-6)
    assert ins.loc[0.0] == pytest.approx(dele.loc[1.0], abs=1e-6)  # both the fill alone


def test_tv_upsampling_ablation_reuses_the_given_masks():
    model, x = linear_model(), images(2)
    labels, predicted = torch.arange(3), model(x).argmax(1)
    given = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    options = {"steps": 2, "fill": "mean", "mean": 0.2}
    frame = tv_upsampling_ablation(model, x, given, predicted=predicted, labels=labels, steps=4, mean=0.2,
                                   mask_options=options)
    assert list(dict.fromkeys(zip(frame.tv, frame.upsampling))) == list(ABLATION_SETTINGS) and len(frame) == 8

    def scores(m):
        return summarize_completeness_soundness(completeness_soundness(model, x, m, predicted=predicted, steps=4,
                                                                       mean=0.2))

    first = frame[(frame.tv == True) & (frame.upsampling == 4)]  # noqa: E712
    np.testing.assert_allclose(first.soundness, scores(given).soundness)
    free = sound_masks(model, x, labels.repeat(2, 1), tv=False, upsample=1, progress=False, **options)
    last = frame[(frame.tv == False) & (frame.upsampling == 1)]  # noqa: E712
    np.testing.assert_allclose(last.soundness, scores(free).soundness)


def test_ablation_summary_means_order_and_words():
    soundness = {(True, 4): [0.9, 0.7], (True, 1): [0.6, 0.6], (False, 4): [0.1, 0.1], (False, 1): [0.2, 0.4]}
    per_image = pd.concat([pd.DataFrame({"image": [0, 1], "completeness": [0.5, 0.5], "soundness": v,
                                         "tv": tv, "upsampling": up}) for (tv, up), v in soundness.items()])
    table, values = ablation_summary(per_image)
    assert list(table.columns) == ["TV penalty", "upsampling", "completeness", "soundness"]
    assert list(zip(table["TV penalty"], table.upsampling)) == list(soundness)
    assert values["ablation_direction"] == "shows"  # 0.8 >= 0.6 >= 0.3
    assert values["ablation_n_images"] == 2
    assert values["ablation_tv1_up4_soundness"] == pytest.approx(0.8)
    assert values["ablation_tv0_up1_soundness"] == pytest.approx(0.3)
    assert values["ablation_tv0_up4_completeness"] == pytest.approx(0.5)
    assert len(values) == 2 + 2 * 4 and all(type(v) in (int, float, str) for v in values.values())
    per_image.loc[(per_image.tv == False) & (per_image.upsampling == 1), "soundness"] = 0.9  # noqa: E712
    assert ablation_summary(per_image)[1]["ablation_direction"] == "does not show"


def test_method_values_keep_the_chapters_keys():
    """The chapter's former key chain, name.replace(":", "").replace(",", "").replace("-", "_").replace(" ", "_"),
    and the keys of method_values (glue_key) agree on every name the chapter glues."""
    names = [*METHODS, "sound_mask, mean-fill training", "control: gradient, class-agnostic"]
    table = pd.DataFrame({"completeness": 0.5, "soundness": 0.5}, index=names)
    old = [name.replace(":", "").replace(",", "").replace("-", "_").replace(" ", "_") for name in names]
    assert list(method_values(table)) == [f"cs_{key}_{score}" for key in old for score in ("completeness", "soundness")]
