"""Figures stay readable (issue #17): every public figure function of ``book/plotting.py`` is drawn on a
small fixed synthetic table shaped like the one its notebook passes (the same columns, the book's method
labels, stage names, class names and long legend entries), and :func:`helpers.figures.check_figure`
fails on overlapping text labels, x tick labels over the limit, text under the minimum at the size the
book shows it, and more than two rows of panels. The chapter figure loops
(``book/chapters/figures.py``) are drawn through their own code, with the suptitle they add."""
import inspect
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from saliency_sanity.book import plotting  # noqa: E402
from saliency_sanity.checks import PAPER_METHODS, handling  # noqa: E402
from saliency_sanity.data import FASHION_MNIST_CLASSES  # noqa: E402

from helpers.figures import MAX_TICK_CHARS, check_figure, panel_rows, texts  # noqa: E402

LABELS = [label for label, *_ in PAPER_METHODS]  # 22 labels, up to "integrated_gradients" / "gradcam_pp/absolute"
# the x axis of a box per method names the methods as the whole book does; their longest label is the limit there
METHOD_TICK_CHARS = max(len(label) for label in LABELS)
ARCHS = ("vgg", "resnet")
METRICS = ("spearman_abs", "spearman", "ssim", "hog")
# the stages of the book's randomization runs (checks.stages.randomization_stages: VGG by layer, ResNet by block)
STAGES = {"vgg": ["original", "classifier.fc2", "classifier.fc1", "features.conv3", "features.conv2",
                  "features.conv1"],
          "resnet": ["original", "fc",
                     "layer3.conv1,layer3.bn1,layer3.conv2,layer3.bn2,layer3.shortcut.conv,layer3.shortcut.bn",
                     "layer2.conv1,layer2.bn1,layer2.conv2,layer2.bn2,layer2.shortcut.conv,layer2.shortcut.bn",
                     "layer1.conv1,layer1.bn1,layer1.conv2,layer1.bn2", "stem.conv,stem.bn"]}
# notebook 05: every registered method but the mask, the mask trained with two fills, the class-agnostic control;
# (completeness, soundness) means of the smoke build, which put several labels on top of each other
SOUNDNESS = {"smoothgrad": (0.404, 0.981), "gradient": (0.422, 0.976), "deconvnet": (0.497, 0.962),
             "gradcam_pp": (0.750, 0.957), "lrp_zplus": (0.723, 0.951), "guided_backprop": (0.445, 0.938),
             "rectgrad": (0.505, 0.933), "lrp_alpha_beta": (0.651, 0.931), "gradcam": (0.663, 0.924),
             "fullgrad": (0.810, 0.920), "guided_gradcam": (0.448, 0.915),
             "control: gradient, class-agnostic": (0.422, 0.914), "input_x_gradient": (0.658, 0.887),
             "lrp_epsilon": (0.638, 0.871), "integrated_gradients": (0.664, 0.862), "sound_mask": (0.815, 0.806),
             "lrp_composite": (0.865, 0.710), "sound_mask, mean-fill training": (0.838, 0.681)}
# notebook 06's methods, and each one's (similarity after randomizing every layer, map agreement across seeds)
INSTABILITY_METHODS = ["gradient", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam", "gradcam_pp",
                       "fullgrad", "lrp_epsilon"]
TENSION = {"gradient": (0.42, 0.46), "smoothgrad": (0.45, 0.52), "integrated_gradients": (0.44, 0.47),
           "guided_backprop": (0.81, 0.83), "gradcam": (0.62, 0.58), "gradcam_pp": (0.64, 0.61),
           "fullgrad": (0.66, 0.60), "lrp_epsilon": (0.43, 0.45), "control: edge detector": (1.0, 1.0)}
MITIGATION = {"none": (41.0, 0.080), "label_smoothing": (43.5, 0.071), "confidence_penalty": (44.2, 0.074),
              "localized_distillation": (58.0, 0.049), "ensemble": (205.0, 0.030)}


def _rng(seed):
    return np.random.default_rng(seed)


def _chapter(**attributes):
    """A stand-in for the notebooks' Chapter: ``ch.models`` and a ``ch.save`` that keeps the figures."""
    saved = {}
    return SimpleNamespace(models=dict.fromkeys(ARCHS), save=lambda fig, name: saved.__setitem__(name, fig),
                           saved=saved, **attributes)


# ------------------------------------------------------------------ the notebooks' calls on synthetic tables


def training_curves():  # notebook 00: every run's history
    rng = _rng(0)
    history = pd.DataFrame([{"arch": arch, "epoch": e, "train_loss": 0.9 / e + rng.uniform(0, 0.05),
                             "train_acc": 0.8 + 0.01 * e, "test_acc": 0.8 + 0.01 * e + rng.uniform(-0.01, 0.01),
                             "seconds": 30.0} for arch in ARCHS for e in range(1, 11)])
    return [plotting.training_curves(history)]


def map_grid():  # notebook 01: one test image per class, every method's map
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(10, 1, 28, 28, generator=gen)
    maps = {label: torch.randn(10, 28, 28, generator=gen) if i % 2 else torch.rand(10, 28, 28, generator=gen)
            for i, label in enumerate(LABELS)}
    return [plotting.map_grid(images, maps, row_labels=list(FASHION_MNIST_CLASSES))]


def _randomization_frame(mode):
    rng = _rng(1 if mode == "cascading" else 2)
    rows = [{"arch": arch, "stage": s, "layer": layer, "metric": m, "label": label, "handling": handling(label),
             "image": i, "value": 1 - s / 6 + rng.normal(0, 0.1)}
            for arch in ARCHS for s, layer in enumerate(STAGES[arch]) for m in METRICS for label in LABELS[::3]
            for i in range(2)]
    return pd.DataFrame(rows)


def similarity_curves():  # notebook 02 through chapters.figures.save_randomization_curves (the longer title)
    from saliency_sanity.book.chapters.figures import save_randomization_curves

    ch = _chapter()
    save_randomization_curves(ch, {"independent": _randomization_frame("independent")})
    return list(ch.saved.values())


def similarity_boxes():  # notebook 03 through save_class_sensitivity_boxes; notebook 02's data randomization
    from saliency_sanity.book.chapters.figures import save_class_sensitivity_boxes

    rng = _rng(3)
    results = pd.DataFrame([{"arch": arch, "label": label, "pair": pair, "metric": m, "image": i,
                             "excess": rng.normal(0.2, 0.2)}
                            for arch in ARCHS for label in LABELS for pair in ("top1 vs bottom1", "top1 vs random")
                            for m in METRICS for i in range(4)])
    ch = _chapter()
    ch.models = {"resnet": None}  # the VGG's figure is the same but for its shorter title
    save_class_sensitivity_boxes(ch, results)
    data_rand = pd.DataFrame([{"label": label, "handling": handling(label), "metric": m, "image": i,
                               "value": rng.uniform(0, 1)} for label in LABELS for m in METRICS for i in range(4)])
    grid = plotting.similarity_boxes(data_rand, x="label", hue="handling", dodge=False)
    grid.figure.suptitle("vgg: maps of the true-label vs the permuted-label model (same images, same steps)", y=1.02)
    return [*ch.saved.values(), grid]


def methods_by_column():  # notebooks 02 (stages) and 05 (predicted and wrong labels; 03's titles are shorter)
    gen = torch.Generator().manual_seed(4)
    image = torch.rand(1, 28, 28, generator=gen)

    def maps(names):
        return {name: torch.randn(28, 28, generator=gen) for name in names}

    soundness = [name for name in SOUNDNESS if not name.startswith("control")]
    c = FASHION_MNIST_CLASSES
    return [plotting.methods_by_column(image, {stage: maps(LABELS) for stage in STAGES["vgg"]}),
            plotting.methods_by_column(image, {title: maps(soundness) for title in
                                               (f"predicted: {c[9]}", f"wrong: {c[0]}", f"wrong: {c[1]}")})]


def _interval_summary(seed=0):
    rng = _rng(seed)
    rows = []
    for arch in ARCHS:
        for label in LABELS:
            x, y = rng.uniform(-0.1, 0.4, 2)
            rows.append({"arch": arch, "label": label, "handling": handling(label),
                         "randomization_mean": x, "randomization_low": x - 0.05, "randomization_high": x + 0.05,
                         "class_mean": y, "class_low": y - 0.05, "class_high": y + 0.05})
    return pd.DataFrame(rows)


def interval_scatter():  # notebook 04
    return [plotting.interval_scatter(_interval_summary(), x="randomization", y="class", reference=0.2,
                                      xlabel="excess over null after top-half randomization",
                                      ylabel="excess over null, top-1 vs least likely class")]


def claims_forest():  # notebook 08: every claim, parts per model or per quantity, every verdict
    from saliency_sanity.book.claims import CLAIMS
    from saliency_sanity.book.verdicts import Part

    rng = _rng(5)

    def part(model, quantity):
        mean = rng.uniform(-0.2, 0.6)
        return Part(model, quantity, mean, mean - 0.1, mean + 0.1, 50, ">", 0.2)

    rows = []
    for i, c in enumerate(CLAIMS):
        if i % 5 == 3:  # one model, two quantities
            parts = [part("vgg", "completeness: mean"), part("vgg", "soundness: mean")]
        elif i % 7 == 0:
            parts = [part("vgg", "excess")]
        else:
            parts = [part(arch, "excess") for arch in ARCHS]
        rows.append({"key": c.key, "verdict": "partly", "parts": parts})
    return [plotting.claims_forest(pd.DataFrame(rows))]


def completeness_soundness_scatter():  # notebook 05: method_table(...).reset_index()
    table = pd.DataFrame([{"method": m, "completeness": c, "soundness": s, "seconds_per_map": 0.01}
                          for m, (c, s) in SOUNDNESS.items()])
    return [plotting.completeness_soundness_scatter(table)]


def insertion_deletion_curves():  # notebook 05: every method but the control
    fraction = np.linspace(0, 1, 17)
    rows = [pd.DataFrame({"method": m, "curve": curve, "fraction": fraction,
                          "probability": fraction ** (1 + i / 10) if curve == "insertion" else 1 - fraction ** 0.5})
            for i, m in enumerate(name for name in SOUNDNESS if not name.startswith("control"))
            for curve in ("insertion", "deletion")]
    return [plotting.insertion_deletion_curves(pd.concat(rows, ignore_index=True))]


def labelled_scatter():  # notebook 06: the tension table and the mitigation table
    tension = pd.DataFrame([{"method": m, "randomization_similarity": x, "stability": y}
                            for m, (x, y) in TENSION.items()])
    mitigation = pd.DataFrame([{"mitigation": m, "seconds": x, "unstable": y} for m, (x, y) in MITIGATION.items()])
    return [plotting.labelled_scatter(tension, "randomization_similarity", "stability", "method",
                                      xlabel="similarity after randomizing every layer (low: sensitive to the model)",
                                      ylabel="map agreement across seeds (high: stable)"),
            plotting.labelled_scatter(mitigation, "seconds", "unstable", "mitigation",
                                      xlabel="training seconds per predictor (teacher included)",
                                      ylabel="fraction of unstable test images")]


def per_sample_scatter():  # notebook 06: per test image, and per image and method (a panel per method)
    rng = _rng(6)
    table = pd.DataFrame({"temporal_label_entropy": rng.choice([0, 0.69, 1.1], 500) * rng.uniform(0.5, 1, 500),
                          "label_entropy": rng.choice([0, 0.5, 0.67, 1.05], 500)})
    agreement = pd.DataFrame([{"method": m, "sample": s, "true_class_prob_std": rng.uniform(0, 0.4),
                               "map_stability": rng.uniform(0, 1)} for m in INSTABILITY_METHODS for s in range(12)])
    return [plotting.per_sample_scatter(table, "temporal_label_entropy", "label_entropy",
                                        xlabel="label entropy across the epochs of run 0",
                                        ylabel="label entropy across seeds"),
            plotting.per_sample_scatter(agreement, "true_class_prob_std", "map_stability", hue="method",
                                        xlabel="std of the true-class probability",
                                        ylabel="map agreement across seeds (top-1 class)")]


def bars():  # notebook 06: the unstable share per true class
    per_class = pd.DataFrame({"class_name": list(FASHION_MNIST_CLASSES), "unstable": _rng(7).uniform(0, 0.2, 10)})
    return [plotting.bars(per_class, "class_name", "unstable", xlabel="true class",
                          ylabel="fraction of unstable test images")]


def interval_columns():  # notebook 07: the repaired randomization tests
    from saliency_sanity.checks.readings import MPRT_TEST_NAMES

    rng = _rng(8)
    rows = [{"arch": arch, "test": test, "label": label, "handling": handling(label), "mean": m,
             "low": m - 0.1, "high": m + 0.1}
            for arch in ARCHS for test in MPRT_TEST_NAMES for label in LABELS for m in [rng.uniform(-1, 1)]]
    return [plotting.interval_columns(pd.DataFrame(rows), col="test", titles=MPRT_TEST_NAMES)]


def convergence_curves():  # notebook 07: the propagating methods, VGG 5 and ResNet 10 layers deep
    from saliency_sanity.checks.convergence import PROPAGATION_METHODS

    rng = _rng(9)
    labels = [label for label, name, *_ in PAPER_METHODS if name in PROPAGATION_METHODS]
    rows = [{"arch": arch, "label": label, "handling": handling(label), "depth": d, "image": i,
             "value": min(1.0, abs(rng.normal(0.1 * d, 0.1)))}
            for arch, depth in (("vgg", 5), ("resnet", 10)) for label in labels for d in range(depth) for i in range(3)]
    return [plotting.convergence_curves(pd.DataFrame(rows))]


# name -> (the notebooks' calls, the x tick limit)
CASES = {f.__name__: (f, MAX_TICK_CHARS) for f in
         (training_curves, map_grid, similarity_curves, methods_by_column, interval_scatter, claims_forest,
          completeness_soundness_scatter, insertion_deletion_curves, labelled_scatter, per_sample_scatter, bars,
          interval_columns, convergence_curves)}
CASES["similarity_boxes"] = (similarity_boxes, METHOD_TICK_CHARS)
# what plotting.py defines besides figures
HELPERS = {"stage_label"}  # a label helper; the style and saving helpers live in book/figure_style.py


@pytest.mark.parametrize("name", sorted(CASES))
def test_figure_is_readable(name):
    draw, x_tick_limit = CASES[name]
    figures = draw()
    assert figures
    try:
        for fig in figures:
            check_figure(fig, x_tick_limit=x_tick_limit)
    finally:
        plt.close("all")


def test_every_public_figure_function_is_checked():
    public = {name for name, f in inspect.getmembers(plotting, inspect.isfunction)
              if f.__module__ == plotting.__name__ and not name.startswith("_")}
    assert public - HELPERS == set(CASES), f"figure functions without a case, or cases without one: " \
                                           f"{sorted((public - HELPERS) ^ set(CASES))}"
    assert HELPERS <= public


def test_randomization_curves_use_short_stage_labels():
    frame = _randomization_frame("cascading")
    frame = frame[(frame.arch == "resnet") & (frame.label == "gradient")]
    grid = plotting.similarity_curves(frame, hue="handling", xticklabels=STAGES["resnet"])
    ticks = [t.get_text() for t in grid.axes.flat[-1].get_xticklabels()]
    assert ticks == ["original", "fc", "layer3", "layer2", "layer1", "stem"]
    plt.close(grid.figure)


def test_method_interval_columns_have_a_row_per_model_and_9_pt_text():
    fig, = interval_columns()
    assert panel_rows(fig) == 2
    small = [t.get_text() for t, _ in texts(fig) if t.get_fontsize() < 9]
    assert not small, small[:5]
    plt.close(fig)


@pytest.mark.parametrize("layers, expected", [("fc", "fc"), ("layer3.conv1,layer3.bn1", "layer3"),
                                              ("stem.conv,stem.bn", "stem"), ("a.x,b.y", "a.x +1")])
def test_stage_label(layers, expected):
    assert plotting.stage_label(layers) == expected


def test_method_interval_columns_refuse_a_third_row():
    frame = pd.DataFrame([{"arch": a, "test": "mprt", "label": "gradient", "handling": "signed propagation",
                           "mean": 0.0, "low": -0.1, "high": 0.1} for a in ("a", "b", "c")])
    with pytest.raises(ValueError, match="at most two rows"):
        plotting.interval_columns(frame, col="test")
