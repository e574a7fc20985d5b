"""Instability metrics (Datta et al. 2023) on hand-made predictions, and map stability against
calling the similarity functions directly."""
import math

import numpy as np
import pytest
import torch

from saliency_sanity.methods.many import attribute_many
from saliency_sanity.models.architectures import build_model
from saliency_sanity.metrics.similarity import similarity
from saliency_sanity.metrics.stability import (churn, instability_table, label_entropy, map_stability, map_stability_table,
                                       max_label_entropy, pairwise_churn, pixel_dispersion, run_maps,
                                       temporal_label_entropy, true_class_probability_std)

from helpers.model_state import assert_unchanged, weights


def test_label_entropy_limits_and_a_mixed_case():
    agree = torch.tensor([[3, 1], [3, 1], [3, 1], [3, 1]])
    assert torch.equal(label_entropy(agree), torch.zeros(2, dtype=torch.float64))
    all_differ = torch.tensor([[0], [1], [2], [3], [4]])  # N = 5 runs, 5 different classes
    assert label_entropy(all_differ).item() == pytest.approx(math.log(5))
    mixed = np.array([[0], [0], [1], [2]])  # p = (1/2, 1/4, 1/4)
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    out = label_entropy(mixed)
    assert isinstance(out, np.ndarray) and out[0] == pytest.approx(expected)
    assert max_label_entropy(5, 10) == pytest.approx(math.log(5))


def test_temporal_entropy_skips_early_epochs():
    epochs = torch.tensor([[5], [5], [2], [2]])  # [epochs, samples]
    assert temporal_label_entropy(epochs).item() == pytest.approx(math.log(2))
    assert temporal_label_entropy(epochs, from_epoch=3).item() == 0.0
    with pytest.raises(ValueError, match="from_epoch"):
        temporal_label_entropy(epochs, from_epoch=5)


def test_churn_value_and_symmetry():
    a, b = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 2, 2, 1])
    assert churn(a, b) == churn(b, a) == 0.5
    assert churn(a, a) == 0.0
    table = pairwise_churn(torch.stack([a, b, a]))
    assert table.churn.tolist() == [0.5, 0.0, 0.5] and table.run_a.tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="same non-zero length"):
        churn(a, b[:3])


def test_true_class_probability_std_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 6, 3))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = np.array([0, 1, 2, 0, 1, 2])
    p_true = probs[:, np.arange(6), labels]
    np.testing.assert_allclose(true_class_probability_std(probs, labels), p_true.std(0), rtol=1e-12)
    np.testing.assert_allclose(true_class_probability_std(probs, labels, ddof=1), p_true.std(0, ddof=1), rtol=1e-12)
    with pytest.raises(ValueError, match="look like logits"):
        true_class_probability_std(logits, labels)


def test_instability_table_columns_and_values():
    probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.4], [0.7, 0.3]]], dtype=torch.float64)
    table = instability_table(probs, torch.tensor([0, 1]), classes=["a", "b"],
                              per_epoch_predictions=torch.tensor([[0, 0], [0, 1]]))
    assert table.label_entropy.tolist() == pytest.approx([0.0, math.log(2)])
    assert table.temporal_label_entropy.tolist() == pytest.approx([0.0, math.log(2)])
    assert table.accuracy.tolist() == [1.0, 0.5] and table.agreement.tolist() == [1.0, 0.5]
    assert table.true_class_prob_mean.tolist() == pytest.approx([0.75, 0.55])
    assert table.class_name.tolist() == ["a", "b"]


def test_map_stability_equals_mean_pairwise_similarity():
    maps = torch.rand(3, 4, 12, 12, generator=torch.Generator().manual_seed(0))
    for metric in ("spearman_abs", "ssim"):
        expected = (similarity(maps[0], maps[1], metric) + similarity(maps[0], maps[2], metric)
                    + similarity(maps[1], maps[2], metric)) / 3
        torch.testing.assert_close(map_stability(maps, metric), expected)
    same = maps[:1].repeat(3, 1, 1, 1)
    torch.testing.assert_close(map_stability(same, "spearman_abs"), torch.ones(4), rtol=0, atol=1e-6)
    table = map_stability_table(maps)
    assert set(table.metric) == {"spearman_abs", "ssim", "pixel_dispersion"} and len(table) == 12
    assert "target" not in table.columns and table["sample"].tolist()[:4] == [0, 1, 2, 3]
    tagged = map_stability_table(maps, ["spearman_abs"], samples=[7, 3, 9, 1], target="true label")
    assert tagged.columns[0] == "target" and set(tagged.target) == {"true label"}
    assert tagged["sample"].tolist()[:4] == [7, 3, 9, 1]
    torch.testing.assert_close(torch.as_tensor(tagged.value[:4].to_numpy().copy()), map_stability(maps).double())
    with pytest.raises(ValueError, match="samples names"):
        map_stability_table(maps, samples=[0, 1])


def test_run_maps_top1_or_a_fixed_class():
    models = [build_model("vgg", seed=s).eval() for s in (0, 1)]
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([4, 0, 9])
    fixed = run_maps(models, x, ["gradient", ("cam", "gradcam", {})], labels)
    top1 = run_maps(models, x, ["gradient"])
    assert set(fixed) == {"gradient", "cam"} and fixed["gradient"].shape == (2, 3, 28, 28)
    for r, model in enumerate(models):
        by_label = attribute_many(model, x, labels, ["gradient"])["gradient"]
        torch.testing.assert_close(fixed["gradient"][r], by_label)
        own = attribute_many(model, x, model(x).argmax(-1), ["gradient"])["gradient"]
        torch.testing.assert_close(top1["gradient"][r], own)
    # one fixed class per image, the same for every run: explaining the class one model predicts
    top_of_0 = models[0](x).argmax(-1)
    torch.testing.assert_close(run_maps(models, x, ["gradient"], top_of_0)["gradient"][0], top1["gradient"][0])
    with pytest.raises(ValueError, match="top1"):
        run_maps(models, x, ["gradient"], "bottom1")
    with pytest.raises(ValueError, match="at least two runs"):
        run_maps(models[:1], x, ["gradient"])


def test_pixel_dispersion_by_hand():
    a = torch.zeros(1, 2, 2)
    a[0, 0, 0] = 2.0  # normalised: one pixel at 1
    b = torch.zeros(1, 2, 2)
    b[0, 1, 1] = -4.0  # normalised: another pixel at -1
    # per pixel std over the two runs: 0.5, 0, 0, 0.5 -> mean 0.25
    assert pixel_dispersion(torch.stack([a, b])).item() == pytest.approx(0.25)
    assert pixel_dispersion(torch.stack([a, a])).item() == 0.0
    with pytest.raises(ValueError, match="N_runs >= 2"):
        pixel_dispersion(a.unsqueeze(0))


def test_run_maps_leaves_the_callers_models_as_they_were():
    """Models in train mode stay in train mode with their weights: run_maps evaluates, never sets."""
    models = [build_model("vgg", seed=s).train() for s in (0, 1)]
    before = [weights(m) for m in models]
    run_maps(models, torch.rand(2, 1, 28, 28), ["gradient"], torch.tensor([1, 2]))
    for model, state in zip(models, before):
        assert all(m.training for m in model.modules())
        assert_unchanged(model, state)
