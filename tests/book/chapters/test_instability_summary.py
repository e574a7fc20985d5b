"""The instability chapter's summaries (book/chapters/instability.py) on small inputs with
hand-computed answers: map agreement across runs, its gaps, the tension table and the mitigations."""
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn
import torch.nn.functional as F

from saliency_sanity import METHODS
from saliency_sanity.book.chapters.instability import (EDGE_CONTROL, MITIGATION_NAMES, TOP1, TRUE_LABEL,
                                                      agreement_by_method, agreement_gaps, agreement_values,
                                                      map_agreement_table, mitigation_summary, mitigation_values,
                                                      mitigation_verdicts, tension_table, tension_values)
from saliency_sanity.metrics.stability import edge_map


def linear_model(seed, n_classes=3, side=8):
    """logits = W x + b on one-channel images: the gradient map of class c is W[c], whatever the image."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(side * side, n_classes)).eval()


X = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
INSTABILITY = pd.DataFrame({"sample": [10, 11, 12], "label_entropy": [0.0, 0.7, 0.0], "true_class_prob_std": 0.1})


# ----------------------------------------------------------------------------- map agreement

def test_map_agreement_table_identical_runs_agree_fully():
    model = linear_model(0)
    table = map_agreement_table([model, model], X, ["gradient"], {TOP1: "top1", TRUE_LABEL: torch.tensor([0, 1, 2])},
                                samples=[10, 11, 12], instability=INSTABILITY, controls={EDGE_CONTROL: edge_map(X)})
    assert len(table) == 2 * 2 * 3  # targets x (method, control) x images
    assert set(table.method) == {"gradient", EDGE_CONTROL} and set(table.target) == {TOP1, TRUE_LABEL}
    np.testing.assert_allclose(table.map_stability, 1.0, atol=1e-6)
    assert table.set_index("sample").unstable.groupby(level=0).unique().map(list).to_dict() == \
        {10: [False], 11: [True], 12: [False]}
    assert (table.true_class_prob_std == 0.1).all()  # the instability columns are merged in


def test_map_agreement_table_two_models_is_the_rank_correlation_of_their_weights():
    a, b = linear_model(0), linear_model(1)
    classes = torch.tensor([2, 0, 1])
    table = map_agreement_table([a, b], X, ["gradient"], {TRUE_LABEL: classes}, samples=[10, 11, 12],
                                instability=INSTABILITY)
    wa, wb = a[1].weight.detach(), b[1].weight.detach()
    expected = [spearmanr(wa[c].abs(), wb[c].abs()).statistic for c in classes.tolist()]
    np.testing.assert_allclose(table.sort_values("sample").map_stability, expected, atol=1e-6)


def agreement_frame():
    # (target, method, sample, map_stability, unstable)
    rows = [(TOP1, "g", 0, 0.9, False), (TOP1, "g", 1, 0.7, False), (TOP1, "g", 2, 0.2, True),
            (TOP1, "h", 0, 0.5, False), (TOP1, "h", 2, 0.6, True),
            (TOP1, EDGE_CONTROL, 0, 1.0, False), (TOP1, EDGE_CONTROL, 2, 1.0, True),
            (TRUE_LABEL, "g", 0, 0.9, False), (TRUE_LABEL, "g", 2, 0.8, True),
            (TRUE_LABEL, "h", 0, 0.4, False), (TRUE_LABEL, "h", 2, 0.5, True),
            (TRUE_LABEL, EDGE_CONTROL, 0, 1.0, False), (TRUE_LABEL, EDGE_CONTROL, 2, 1.0, True)]
    return pd.DataFrame(rows, columns=["target", "method", "sample", "map_stability", "unstable"])


def test_agreement_by_method_means():
    by_method = agreement_by_method(agreement_frame())
    assert list(by_method.columns) == ["stable predictions", "unstable predictions"]
    assert by_method.loc[(TOP1, "g")].tolist() == pytest.approx([0.8, 0.2])
    assert by_method.loc[(TRUE_LABEL, "h")].tolist() == pytest.approx([0.4, 0.5])
    only_stable = agreement_by_method(agreement_frame().query("not unstable"))
    assert only_stable["unstable predictions"].isna().all()  # the column is kept, empty


def test_agreement_values_keys():
    values = agreement_values(agreement_by_method(agreement_frame()))
    assert values["mapstab_g_stable"] == pytest.approx(0.8) and values["mapstab_g_unstable"] == pytest.approx(0.2)
    assert values["mapstab_true_h_unstable"] == pytest.approx(0.5)
    assert values["mapstab_control_edge_detector_stable"] == 1.0
    assert values["mapstab_true_control_edge_detector_unstable"] == 1.0
    assert len(values) == 2 * 3 * 2 and all(type(v) is float for v in values.values())


def test_agreement_gaps_by_hand():
    values = agreement_gaps(agreement_by_method(agreement_frame()))
    # top-1 gaps: g 0.8 - 0.2 = 0.6, h 0.5 - 0.6 = -0.1; true label: g 0.1, h -0.1; the control left out
    assert values["n_methods"] == 2
    assert (values["n_less_unstable_top1"], values["n_less_unstable_true"]) == (1, 1)
    assert values["gap_top1"] == pytest.approx(0.25) and values["gap_true"] == pytest.approx(0.0)
    assert values["gap_change"] == "narrows"
    assert values["unstable_top1_mean"] == pytest.approx(0.4) and values["unstable_true_mean"] == pytest.approx(0.65)
    assert values["unstable_true_vs_top1"] == "higher"
    assert all(type(v) in (int, float, str) for v in values.values())


def test_tension_table_reads_the_last_stage_and_top1_agreement():
    randomization = pd.DataFrame({"label": ["g", "g", "h", "h", "g", "h"], "stage": [0, 0, 0, 0, 3, 3],
                                  "value": [1.0, 1.0, 1.0, 1.0, 0.3, 0.7]})
    table = tension_table(randomization, agreement_frame())
    assert table.method.tolist() == ["g", "h", EDGE_CONTROL]
    assert table.randomization_similarity.tolist() == pytest.approx([0.3, 0.7, 1.0])
    assert table.stability.tolist() == pytest.approx([0.6, 0.55, 1.0])  # means over the top-1 rows only
    values = tension_values(table)
    assert list(values) == ["tension_g_randomization", "tension_g_stability", "tension_h_randomization",
                            "tension_h_stability", "tension_control_edge_detector_randomization",
                            "tension_control_edge_detector_stability"]
    assert values["tension_h_stability"] == pytest.approx(0.55)


# ----------------------------------------------------------------------------- mitigations

def fake_result(predictions, seconds, models, distilled=math.nan):
    """A MitigationResult's interface: probabilities [R, N, K] from predictions, runs with models, costs."""
    probabilities = F.one_hot(torch.tensor(predictions), 3).double() * 0.7 + 0.1
    return SimpleNamespace(test_probabilities=lambda: probabilities, runs=[SimpleNamespace(model=m) for m in models],
                           costs=pd.DataFrame({"seconds": seconds, "epochs": [2.0, 2.0]}), distilled_share=distilled)


def test_mitigation_summary_by_hand():
    same, a, b = linear_model(0), linear_model(0), linear_model(1)
    labels = torch.tensor([0, 1, 2, 0])
    results = {"none": fake_result([[0, 1, 2, 0], [0, 1, 1, 1]], [1.0, 3.0], [a, b]),
               "smooth": fake_result([[0, 1, 2, 0], [0, 1, 2, 1]], [2.0, 2.0], [a, b], distilled=0.25),
               "ensemble": fake_result([[0, 1, 2, 0], [0, 1, 2, 0]], [8.0, 8.0], [same, a])}
    table, per_image = mitigation_summary(results, labels, X, torch.tensor([0, 1, 2]))
    table = table.set_index("mitigation")
    assert table.unstable.tolist() == [0.5, 0.25, 0.0]
    assert table.accuracy.tolist() == [0.75, 0.875, 1.0]
    assert table.mean_churn.tolist() == [0.5, 0.25, 0.0]
    assert table.share_of_ensemble_reduction.tolist() == [0.0, 0.5, 1.0]
    assert table.seconds_vs_ensemble.tolist() == [0.25, 0.25, 1.0]
    assert table.loc["ensemble", "gradient_map_stability"] == pytest.approx(1.0, abs=1e-6)  # identical models
    assert table.loc["ensemble", "gradient_map_stability_true_label"] == pytest.approx(1.0, abs=1e-6)
    assert table.loc["none", "gradient_map_stability_true_label"] < 0.9  # two different models
    assert table.loc["smooth", "distilled"] == 0.25 and math.isnan(table.loc["none", "distilled"])
    assert len(per_image) == 3 * 4
    assert per_image[per_image.mitigation == "none"].unstable.tolist() == [False, False, True, True]


def mitigation_frame(localized_share=0.5, label_smoothing_share=0.8):
    return pd.DataFrame({
        "mitigation": ["none", "label_smoothing", "localized_distillation", "ensemble"],
        "unstable": [0.4, 0.2, 0.3, 0.0],
        "share_of_ensemble_reduction": [0.0, label_smoothing_share, localized_share, 1.0],
        "seconds": [2.0, 2.5, 4.0, 8.0], "epochs": [3.0, 3.0, 6.0, 12.0],
        "seconds_vs_ensemble": [0.25, 0.3125, 0.5, 1.0], "epochs_vs_ensemble": [0.25, 0.25, 0.5, 1.0],
        "gradient_map_stability": [0.5, 0.6, 0.4, 0.7],
        "gradient_map_stability_true_label": [0.6, 0.5, 0.7, 0.9],
        "distilled": [math.nan, math.nan, 0.3, math.nan]})


def test_mitigation_values():
    values = mitigation_values(mitigation_frame())
    assert len(values) == 4 * 8 + 3 * 2 and all(key.startswith("mit_") for key in values)
    assert "mit_none_mapstab_change" not in values  # the baseline has no change against itself
    assert values["mit_label_smoothing_unstable"] == 0.2 and values["mit_ensemble_cost"] == 1.0
    assert values["mit_localized_distillation_epochs"] == 6
    assert type(values["mit_localized_distillation_epochs"]) is int
    assert values["mit_localized_distillation_cost_epochs"] == 0.5 and values["mit_none_share"] == 0.0
    assert values["mit_label_smoothing_mapstab_change"] == "raises"
    assert values["mit_label_smoothing_mapstab_true_change"] == "lowers"
    assert values["mit_localized_distillation_mapstab_change"] == "lowers"
    assert values["mit_ensemble_mapstab_true_change"] == "raises"


@pytest.mark.parametrize("localized, smoothing, best, vs_paper, vs_smoothing", [
    (0.5, 0.8, "label smoothing", "falls short of", "less"),
    (0.95, 0.8, "localized distillation", "matches", "more"),
    (math.nan, math.nan, "none of them (no ensemble gain to share)", "cannot be compared with",
     "neither more nor less (no ensemble gain to share)"),
])
def test_mitigation_verdicts(localized, smoothing, best, vs_paper, vs_smoothing):
    values = mitigation_verdicts(mitigation_frame(localized, smoothing))
    assert values == {"best_single": best, "localized_distilled_share": 0.3, "localized_vs_paper": vs_paper,
                      "localized_vs_label_smoothing": vs_smoothing}  # confidence_penalty was not run: no key


def test_mitigation_verdicts_without_the_localized_mitigation():
    frame = mitigation_frame().query("mitigation != 'localized_distillation'")
    assert mitigation_verdicts(frame) == {"best_single": MITIGATION_NAMES["label_smoothing"]}


def test_values_keep_the_chapters_keys():
    """The chapter's former key chain, name.replace(":", "").replace(" ", "_"), and the keys of
    agreement_values and tension_values (glue_key) agree on every name it glues."""
    names = [*METHODS, EDGE_CONTROL]
    old = [name.replace(":", "").replace(" ", "_") for name in names]
    index = pd.MultiIndex.from_product([[TOP1, TRUE_LABEL], names], names=["target", "method"])
    by_method = pd.DataFrame({"stable predictions": 0.5, "unstable predictions": 0.4}, index=index)
    assert list(agreement_values(by_method)) == [f"{prefix}_{key}_{kind}" for prefix in ("mapstab", "mapstab_true")
                                                 for key in old for kind in ("stable", "unstable")]
    tension = pd.DataFrame({"method": names, "randomization_similarity": 0.5, "stability": 0.5})
    assert list(tension_values(tension)) == [f"tension_{key}_{kind}" for key in old
                                             for kind in ("randomization", "stability")]
