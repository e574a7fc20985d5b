"""Figures stay readable: no two text labels overlap, tick labels stay short, text is >= 8 pt."""
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from saliency_sanity.book import plotting  # noqa: E402
from saliency_sanity.checks import PAPER_METHODS, handling  # noqa: E402

MAX_TICK_CHARS = 16


def _undrawn_ticks(fig):
    """Tick labels outside their axis' view: matplotlib keeps them as texts but never draws them."""
    ids = set()
    for ax in fig.axes:
        for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-9 <= tick.get_loc() <= hi + 1e-9:
                    ids |= {id(tick.label1), id(tick.label2)}
    return ids


def _texts(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    undrawn = _undrawn_ticks(fig)
    out = []
    for text in fig.findobj(matplotlib.text.Text):
        if text.get_visible() and text.get_text().strip() and id(text) not in undrawn:
            out.append((text, text.get_window_extent(renderer)))
    return out


def _overlapping(texts):
    pairs = []
    for (a, box_a), (b, box_b) in itertools.combinations(texts, 2):
        if box_a.overlaps(box_b) and box_a.width * box_a.height > 0 and box_b.width * box_b.height > 0:
            inter_w = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            inter_h = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if inter_w > 1 and inter_h > 1:  # touching edges are fine
                pairs.append((a.get_text(), b.get_text(), round(inter_w), round(inter_h)))
    return pairs


def _check(fig, *, x_tick_limit=MAX_TICK_CHARS):
    texts = _texts(fig)
    assert not _overlapping(texts), _overlapping(texts)[:5]
    for ax in fig.axes:
        for label in ax.get_xticklabels():
            assert len(label.get_text()) <= x_tick_limit, label.get_text()
    small = [t.get_text() for t, _ in texts if t.get_fontsize() < 8]
    assert not small, small[:5]
    plt.close(fig)


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
    _check(fig)


def test_randomization_curves_use_short_stage_labels():
    layers = ["original", "fc", "layer4.conv1,layer4.bn1,layer4.conv2,layer4.bn2", "layer3.conv1,layer3.bn1",
              "layer2.conv1,layer2.bn1", "stem.conv,stem.bn"]
    rows = [{"stage": s, "layer": layer, "metric": m, "handling": h, "value": 1 - s / 6 + 0.01 * i}
            for s, layer in enumerate(layers) for m in ("spearman_abs", "spearman", "ssim", "hog")
            for i, h in enumerate(("signed propagation", "positive propagation")) for _ in range(3)]
    grid = plotting.similarity_curves(pd.DataFrame(rows), hue="handling", xticklabels=layers)
    assert len({round(ax.get_position().y0, 3) for ax in grid.axes.flat}) <= 2  # at most two rows of panels
    _check(grid.figure)


def test_scorecard_forest_is_legible():
    from saliency_sanity.book.claims import CLAIMS
    from saliency_sanity.book.verdicts import Part

    card = pd.DataFrame([{"key": c.key, "verdict": "partly",
                          "parts": [Part(m, "q", 0.1, 0.0, 0.2, 10, ">", 0.2) for m in ("vgg", "resnet")]}
                         for c in CLAIMS])
    _check(plotting.claims_forest(card))


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
    _check(fig)


def test_method_interval_columns_refuse_a_third_row():
    frame = pd.DataFrame([{"arch": a, "test": "mprt", "label": "gradient", "handling": "signed propagation",
                           "mean": 0.0, "low": -0.1, "high": 0.1} for a in ("a", "b", "c")])
    with pytest.raises(ValueError, match="at most two rows"):
        plotting.interval_columns(frame, col="test")
