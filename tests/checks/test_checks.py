"""The sanity checks as tidy tables: structure, invariants and restoration of the model."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from saliency_sanity.checks import (PAPER_METHODS, class_sensitivity, data_randomization_test, method_requests,
                                    paper_methods, randomization_test)
from saliency_sanity.methods.many import attribute_many
from saliency_sanity.models.architectures import build_model
from saliency_sanity.checks.randomize import randomized
from saliency_sanity.metrics.similarity import similarity

from helpers.model_state import assert_unchanged, weights

FAST = ["gradient", "guided_backprop", "gradcam", "gradcam/positive"]


@pytest.fixture(scope="module")
def vgg():
    return build_model("vgg", seed=0).eval()


@pytest.fixture(scope="module")
def x():
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def test_method_requests_parse_every_form():
    reqs = method_requests(["gradient", "gradcam/positive", ("lrp_ab", "lrp_alpha_beta", {"alpha": 1.0, "beta": 0.0}),
                            ("fullgrad", {"aggregation": "signed"})])
    assert reqs[1] == ("gradcam/positive", "gradcam", {"aggregation": "positive"})
    assert reqs[2][0] == "lrp_ab" and reqs[3] == ("fullgrad/signed", "fullgrad", {"aggregation": "signed"})
    with pytest.raises(ValueError, match="unknown method 'gradiant'"):
        method_requests(["gradiant"])
    with pytest.raises(ValueError, match="unique"):
        method_requests(["gradient", "gradient"])
    with pytest.raises(TypeError, match="cannot read method request"):
        method_requests([3])


def test_paper_methods_cover_the_registry_families():
    labels = [r[0] for r in paper_methods()]
    assert len(labels) == len(PAPER_METHODS) == len(set(labels))
    assert paper_methods(["integrated_gradients"], integrated_gradients={"steps": 4})[0][2] == {"steps": 4}
    with pytest.raises(ValueError, match="unknown method label"):
        paper_methods(["gradcam/sideways"])


def test_cascading_randomization_table(vgg, x):
    before = weights(vgg)
    frame = randomization_test(vgg, x, FAST, metrics=["spearman_abs", "ssim"], progress=False)
    assert set(["method", "variant", "stage", "layer", "image", "target", "metric", "value"]) <= set(frame.columns)
    n_stages = frame.stage.nunique()
    assert n_stages == 6  # original + conv1..3, fc1, fc2
    assert len(frame) == n_stages * len(FAST) * len(x) * 2
    first = frame[frame.stage == 0]
    assert first.value.dropna().sub(1).abs().max() < 1e-5  # a map is identical to itself
    # the top layer is randomized first (top-down), and every parameter layer appears once
    layers = frame.drop_duplicates("stage").sort_values("stage").layer.tolist()
    assert layers[1].endswith("fc2") and layers[-1].endswith("conv1")
    # gradient maps change once every layer is random
    last = frame[(frame.stage == n_stages - 1) & (frame.method == "gradient") & (frame.metric == "spearman_abs")]
    assert last.value.mean() < 0.9
    assert_unchanged(vgg, before)


def test_randomization_values_equal_direct_similarity_calls(vgg, x):
    """The runner stacks the labels' maps into one similarity batch and moves the values to the
    host once; every value must still equal similarity() of that label's own maps at that stage."""
    frame = randomization_test(vgg, x, FAST, metrics=["spearman_abs", "ssim"], batch_size=2, progress=False)
    requests = method_requests(FAST)
    chunks = [x[:2], x[2:]]  # the runner's batches: same batch shapes, same floating-point sums
    with randomized(vgg, mode="cascading", order="top_down", init="truncated_normal", std=0.01, seed=0) as stages:
        for stage in stages:
            maps = [attribute_many(vgg, xb, "top1", requests, reduce=None, seed=0) for xb in chunks]
            if stage.index == 0:
                reference = maps
            for label, *_ in requests:
                for metric in ("spearman_abs", "ssim"):
                    expected = torch.cat([similarity(r[label], m[label], metric) for r, m in zip(reference, maps)])
                    got = frame[(frame.stage == stage.index) & (frame.label == label) & (frame.metric == metric)]
                    assert got.image.tolist() == list(range(len(x)))
                    assert got.target.tolist() == torch.cat([m["target"] for m in maps]).tolist()
                    np.testing.assert_allclose(got.value.to_numpy(), expected.double().numpy(), rtol=1e-6,
                                               atol=1e-7, equal_nan=True)


def test_selected_stages_and_fixed_target(vgg, x):
    frame = randomization_test(vgg, x, ["gradient"], metrics=["spearman"], stages=[0, -1],
                               explain="original_top1", progress=False)
    assert sorted(frame.stage.unique()) == [0, 5]
    with torch.no_grad():
        top1 = vgg(x).argmax(1)
    assert (frame.groupby("stage").target.apply(lambda t: list(t)).apply(lambda t: t == top1.tolist())).all()
    with pytest.raises(ValueError, match="needs labels"):
        randomization_test(vgg, x, ["gradient"], explain="label", progress=False)


def test_model_restored_when_a_method_fails_midway(vgg, x, monkeypatch):
    import saliency_sanity.checks.mprt as checks

    before = weights(vgg)
    calls = {"n": 0}
    real = checks.attribute_many

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(checks, "attribute_many", flaky)
    vgg.train()
    with pytest.raises(RuntimeError, match="injected failure"):
        randomization_test(vgg, x, ["gradient"], metrics=["spearman"], progress=False)
    assert vgg.training
    vgg.eval()
    assert_unchanged(vgg, before)


def test_class_sensitivity_table(vgg, x):
    frame = class_sensitivity(vgg, x, FAST, pairs=[("top1", "bottom1"), ("top1", "top1")], metrics=["spearman_abs"],
                              progress=False)
    same = frame[frame.pair == "top1 vs top1"]
    assert (same.target_a == same.target_b).all() and same.value.sub(1).abs().max() < 1e-5
    diff = frame[frame.pair == "top1 vs bottom1"]
    assert (diff.target_a != diff.target_b).all()
    with pytest.raises(ValueError, match="at least one pair"):
        class_sensitivity(vgg, x, FAST, pairs=[], progress=False)


def test_unknown_metric_is_rejected(vgg, x):
    with pytest.raises(ValueError, match="unknown metric 'pearson'"):
        randomization_test(vgg, x, ["gradient"], metrics=["pearson"], progress=False)


def test_data_randomization_compares_two_models(vgg, x):
    same = data_randomization_test(vgg, vgg, x, ["gradient", "gradcam"], metrics=["spearman_abs"], progress=False)
    assert len(same) == 2 * len(x) and same.value.sub(1).abs().max() < 1e-6
    other = build_model("vgg", seed=5).eval()
    diff = data_randomization_test(vgg, other, x, ["gradient"], metrics=["spearman"], progress=False)
    assert diff.value.abs().mean() < 0.9
    assert set(diff.columns) >= {"method", "variant", "image", "target_a", "target_b", "metric", "value"}


def test_cli_summary_counts_undefined_pairs_instead_of_hiding_them():
    from saliency_sanity.cli.check import summary

    nan = float("nan")
    frame = pd.DataFrame({"test": ["randomization"] * 4 + ["class_sensitivity"] * 2,
                          "stage": [0, 2, 2, 2, 0, 0], "pair": [None] * 4 + ["top1 vs bottom1"] * 2,
                          "label": ["gradcam"] * 6, "metric": "spearman_abs",
                          "value": [1.0, 0.3, nan, 0.1, nan, nan]})
    table = summary(frame)
    assert math.isclose(table.loc[("randomization", "all layers randomized", "gradcam"), "spearman_abs"], 0.2)
    assert table["undefined pairs"].to_dict() == {("class_sensitivity", "top1 vs bottom1", "gradcam"): 2,
                                                   ("randomization", "all layers randomized", "gradcam"): 1}
    assert math.isnan(table.loc[("class_sensitivity", "top1 vs bottom1", "gradcam"), "spearman_abs"])
