"""The chapters' figure loops (book/chapters/figures.py): one figure per architecture and mode under its
stable name, the data each one draws, and the maps of one image per stage and per explained class."""
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import pandas as pd
import pytest
import torch

from saliency_sanity.book.chapters import figures
from saliency_sanity.book.plotting import stage_label
from saliency_sanity.checks import paper_methods
from saliency_sanity.methods.many import attribute_many
from saliency_sanity.models.architectures import build_model

from helpers.model_state import assert_unchanged, weights


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def recording_chapter(archs=("vgg", "resnet")):
    """A stand-in for :class:`Chapter`: its architectures and every (name, figure) it is asked to save."""
    saved = []
    return SimpleNamespace(models=dict.fromkeys(archs), saved=saved, save=lambda fig, name: saved.append((name, fig)))


def curves_table(mode_shift: float) -> pd.DataFrame:
    parts = []
    for arch, layers in (("vgg", ["original", "fc", "conv2", "conv1"]), ("resnet", ["original", "fc", "layer4"])):
        for stage, layer in enumerate(layers):
            for label, handling in (("gradient", "signed propagation"), ("guided_backprop", "positive propagation")):
                parts.append(pd.DataFrame({"arch": arch, "stage": stage, "layer": layer, "label": label,
                                           "handling": handling, "metric": "spearman_abs", "image": range(3),
                                           "value": 1.0 - stage * 0.2 + mode_shift}))
    # rows in reverse stage order: the stage labels must still follow the stages
    return pd.concat(parts[::-1], ignore_index=True)


def test_randomization_curves_one_figure_per_architecture_and_mode():
    ch = recording_chapter()
    figures.save_randomization_curves(ch, {"cascading": curves_table(0.0), "independent": curves_table(0.1)})
    assert [name for name, _ in ch.saved] == ["randomization_cascading_vgg", "randomization_independent_vgg",
                                              "randomization_cascading_resnet", "randomization_independent_resnet"]
    grids = dict(ch.saved)
    grid = grids["randomization_independent_resnet"]
    assert grid.figure._suptitle.get_text() == "resnet: independent randomization"
    assert set(grid.data.arch) == {"resnet"} and grid.data.value.max() == pytest.approx(1.1)
    ticks = [t.get_text() for t in grids["randomization_cascading_vgg"].axes.flat[0].get_xticklabels()]
    assert ticks == [stage_label(layer) for layer in ["original", "fc", "conv2", "conv1"]]


def test_class_sensitivity_boxes_draw_the_excess_per_architecture():
    results = pd.DataFrame({"arch": ["vgg"] * 4 + ["resnet"] * 4, "label": ["gradient", "gradcam"] * 4,
                            "pair": ["top1 vs bottom1"] * 8, "metric": "spearman_abs",
                            "value": 0.9, "null": 0.5, "excess": np.arange(8) / 10})
    ch = recording_chapter()
    figures.save_class_sensitivity_boxes(ch, results)
    assert [name for name, _ in ch.saved] == ["class_sensitivity_vgg", "class_sensitivity_resnet"]
    grid = dict(ch.saved)["class_sensitivity_resnet"]
    assert list(grid.data.value) == pytest.approx([0.4, 0.5, 0.6, 0.7])  # the excess, not the value
    assert grid.axes.flat[0].get_ylabel() == "excess over the null"
    assert grid.figure._suptitle.get_text().startswith("resnet: similarity of maps for two different classes")


def test_matched_pair_training_draws_both_runs_and_the_bound():
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_acc": [0.2, 0.6, 0.97], "test_acc": [0.1, 0.1, 0.12]})
    pair = {"true": SimpleNamespace(history=history), "permuted": SimpleNamespace(history=history)}
    ax = figures.matched_pair_training(pair, bound=0.95).axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:4] == ["true labels: training (own labels)", "true labels: test",
                          "permuted labels: training (own labels)", "permuted labels: test"]
    assert list(ax.get_lines()[4].get_ydata()) == [0.95, 0.95]
    assert ax.get_ylim() == (0, 1.02)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model("vgg", seed=0).eval()
    image = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    return model, image, paper_methods(["gradient", "gradcam"])


def test_maps_by_stage_start_at_the_trained_model_and_restore_it(tiny, one_thread):
    model, image, requests = tiny
    before = weights(model)
    per_stage = figures.maps_by_stage(model, image, requests, init="truncated_normal", std=0.01)
    names = list(per_stage)
    assert names[0] == "original" and len(names) > 2
    assert all(set(maps) == {"gradient", "gradcam"} for maps in per_stage.values())
    trained = attribute_many(model, image, "top1", requests)
    assert torch.equal(per_stage["original"]["gradient"], trained["gradient"][0])
    assert not torch.allclose(per_stage[names[-1]]["gradient"], trained["gradient"][0])
    assert_unchanged(model, before)


def test_maps_by_target_name_each_column_by_its_class(tiny, one_thread):
    model, image, requests = tiny
    classes = [f"class{k}" for k in range(10)]
    columns = figures.maps_by_target(model, image, requests, classes, targets=("top1", "bottom1"))
    logits = model(image)[0]
    assert list(columns) == [f"top1: class{int(logits.argmax())}", f"bottom1: class{int(logits.argmin())}"]
    first, second = columns.values()
    assert set(first) == {"gradient", "gradcam"} and first["gradient"].shape == (28, 28)
    assert not torch.allclose(first["gradient"], second["gradient"])
