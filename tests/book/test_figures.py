"""Figures stay readable: no two text labels overlap, tick labels stay short, text is >= 8 pt."""
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from saliency_sanity.book import plotting  # noqa: E402
from saliency_sanity.checks import PAPER_METHODS, handling  # noqa: E402

from helpers.figures import check_figure  # noqa: E402


def _summary():
    rng = np.random.default_rng(0)
    rows = []
    for arch in ("vgg", "resnet"):
        for label, *_ in PAPER_METHODS:
            x, y = rng.uniform(-0.1, 0.4, 2)
            rows.append({"arch": arch, "label": label, "handling": handling(label),
                         "randomization_mean": x, "randomization_low": x - 0.05, "randomization_high": x + 0.05,
                         "class_mean": y, "class_low": y - 0.05, "class_high": y + 0.05})
    return pd.DataFrame(rows)


def test_positive_handling_scatter_has_no_overlapping_labels():
    fig = plotting.interval_scatter(_summary(), x="randomization", y="class", xlabel="x", ylabel="y", reference=0.2)
    check_figure(fig)


def test_randomization_curves_use_short_stage_labels():
    layers = ["original", "fc", "layer4.conv1,layer4.bn1,layer4.conv2,layer4.bn2", "layer3.conv1,layer3.bn1",
              "layer2.conv1,layer2.bn1", "stem.conv,stem.bn"]
    rows = [{"stage": s, "layer": layer, "metric": m, "handling": h, "value": 1 - s / 6 + 0.01 * i}
            for s, layer in enumerate(layers) for m in ("spearman_abs", "spearman", "ssim", "hog")
            for i, h in enumerate(("signed propagation", "positive propagation")) for _ in range(3)]
    grid = plotting.similarity_curves(pd.DataFrame(rows), hue="handling", xticklabels=layers)
    assert len({round(ax.get_position().y0, 3) for ax in grid.axes.flat}) <= 2  # at most two rows of panels
    check_figure(grid.figure)


def test_scorecard_forest_is_legible():
    from saliency_sanity.book.claims import CLAIMS
    from saliency_sanity.book.verdicts import Part

    card = pd.DataFrame([{"key": c.key, "verdict": "partly",
                          "parts": [Part(m, "q", 0.1, 0.0, 0.2, 10, ">", 0.2) for m in ("vgg", "resnet")]}
                         for c in CLAIMS])
    check_figure(plotting.claims_forest(card))


@pytest.mark.parametrize("layers, expected", [("fc", "fc"), ("layer3.conv1,layer3.bn1", "layer3"),
                                              ("stem.conv,stem.bn", "stem"), ("a.x,b.y", "a.x +1")])
def test_stage_label(layers, expected):
    assert plotting.stage_label(layers) == expected


def test_method_interval_columns_are_legible():
    from saliency_sanity.checks.readings import MPRT_TEST_NAMES

    rng = np.random.default_rng(1)
    rows = [{"arch": arch, "test": test, "label": label, "handling": handling(label), "mean": m,
             "low": m - 0.1, "high": m + 0.1}
            for arch in ("vgg", "resnet") for test in MPRT_TEST_NAMES for label, *_ in PAPER_METHODS
            for m in [rng.uniform(-1, 1)]]
    fig = plotting.interval_columns(pd.DataFrame(rows), col="test", titles=MPRT_TEST_NAMES)
    assert len({round(ax.get_position().y0, 3) for ax in fig.axes}) == 2
    small = [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip() and t.get_fontsize() < 9]
    assert not small, small[:5]
    check_figure(fig)


def test_method_interval_columns_refuse_a_third_row():
    frame = pd.DataFrame([{"arch": a, "test": "mprt", "label": "gradient", "handling": "signed propagation",
                           "mean": 0.0, "low": -0.1, "high": 0.1} for a in ("a", "b", "c")])
    with pytest.raises(ValueError, match="at most two rows"):
        plotting.interval_columns(frame, col="test")
