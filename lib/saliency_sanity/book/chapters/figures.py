"""The randomization and class-sensitivity chapters' figures that loop over architectures, stages, classes or models.

Adebayo et al. (2018), Sec. 4 and 5 (cascading / independent randomization, data randomization);
Khakzar et al. (2020) and Sixt et al. (2020) (maps of other classes). Each figure is drawn by
:mod:`saliency_sanity.book.plotting` and saved by the chapter under its stable name.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd

from ...checks.randomize import randomized
from ...methods.many import attribute_many
from .. import plotting
from .data_randomization import FIT


def save_randomization_curves(ch, frames: Mapping[str, pd.DataFrame]) -> None:
    """For every architecture of ``ch`` and every mode of ``frames`` (``{"cascading": ..., "independent":
    ...}``): the similarity per stage, one line per method coloured by its handling, stages named by
    their layers; saved as ``randomization_<mode>_<arch>``."""
    for arch in ch.models:
        for mode, frame in frames.items():
            sub = frame[frame.arch == arch]
            stages = sub.drop_duplicates("stage").sort_values("stage")["layer"].tolist()
            grid = plotting.similarity_curves(sub, hue="handling", xticklabels=stages)
            grid.figure.suptitle(f"{arch}: {mode} randomization", y=1.03)
            ch.save(grid, f"randomization_{mode}_{arch}")


def save_class_sensitivity_boxes(ch, results: pd.DataFrame) -> None:
    """For every architecture of ``ch``: the excess over the null of the maps of two classes, per
    method and class pair; saved as ``class_sensitivity_<arch>``."""
    for arch in ch.models:
        grid = plotting.similarity_boxes(results[results.arch == arch].assign(value=lambda f: f.excess),
                                         x="label", hue="pair")
        grid.set_axis_labels("", "excess over the null")
        grid.figure.suptitle(f"{arch}: similarity of maps for two different classes, minus its null", y=1.02)
        ch.save(grid, f"class_sensitivity_{arch}")


def matched_pair_training(pair: Mapping, bound: float = FIT) -> plt.Figure:
    """Training (own labels) and test accuracy per epoch of each model of the matched pair, with the
    fit ``bound`` the permuted-label model must reach."""
    fig, ax = plt.subplots(figsize=(6.5, 3))
    for color, (kind, run) in zip(("C0", "C3"), pair.items()):
        h = run.history
        ax.plot(h.epoch, h.train_acc, color=color, marker=".", label=f"{kind} labels: training (own labels)")
        ax.plot(h.epoch, h.test_acc, color=color, ls="--", label=f"{kind} labels: test")
    ax.axhline(bound, color="0.5", lw=0.8, ls=":")
    ax.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def maps_by_stage(model, image, requests: Sequence, *, init: str, std: float, target: str = "top1") -> dict:
    """``{stage name: {method label: map [H, W]}}``: the maps of one ``image`` [1, C, H, W] at every stage of
    the cascading randomization (the trained model first); the model is restored afterwards."""
    per_stage = {}
    with randomized(model, mode="cascading", init=init, std=std, example_input=image) as stages:
        for stage in stages:
            maps = attribute_many(model, image, target, requests)
            per_stage[stage.name] = {lab: m[0] for lab, m in maps.items() if lab != "target"}
    return per_stage


def maps_by_target(model, image, requests: Sequence, classes: Sequence[str],
                   targets: Sequence[str] = ("top1", "bottom1", "random")) -> dict:
    """``{"<target>: <class name>": {method label: map [H, W]}}``: the maps of one ``image`` [1, C, H, W]
    for each explained class of ``targets``."""
    columns = {}
    for target in targets:
        maps = attribute_many(model, image, target, requests)
        explained = int(maps.pop("target")[0])
        columns[f"{target}: {classes[explained]}"] = {lab: m[0] for lab, m in maps.items()}
    return columns
