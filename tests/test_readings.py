"""Readings of a cascading randomization curve, on hand-made tables."""
import numpy as np
import pandas as pd
import pytest

from saliency_sanity.readings import randomization_readings, top_stage


def _frame(n_stages=4, images=(0, 1), seeds=(0,)):
    rows = []
    for seed in seeds:
        for image in images:
            for stage in range(n_stages + 1):
                value = 1.0 - stage / n_stages + 0.01 * image + seed
                rows.append({"arch": "vgg", "seed": seed, "mode": "cascading", "order": "top_down",
                             "method": "gradient", "variant": "default", "label": "gradient", "metric": "spearman_abs",
                             "image": image, "stage": stage, "value": value, "null": 0.1, "excess": value - 0.1})
    return pd.DataFrame(rows)


def test_top_stage_is_the_upper_half():
    assert [top_stage(n) for n in (1, 2, 3, 4, 16, 17)] == [1, 1, 2, 2, 8, 9]


def test_readings_pick_stages_and_average_the_area():
    out = randomization_readings(_frame(n_stages=4))
    one = out[out.image == 1].set_index("reading")
    assert one.loc["logit", "stage"] == 1 and one.loc["top", "stage"] == 2 and one.loc["all", "stage"] == 4
    assert one.loc["logit", "value"] == pytest.approx(0.75 + 0.01)
    assert one.loc["all", "value"] == pytest.approx(0.0 + 0.01)
    # the area is the mean over the randomized stages 1..S, never the trained stage 0
    assert one.loc["area", "value"] == pytest.approx(np.mean([0.75, 0.5, 0.25, 0.0]) + 0.01)
    assert one.loc["area", "excess"] == pytest.approx(one.loc["area", "value"] - 0.1)
    assert set(out.n_stages) == {4}


def test_readings_are_per_model():
    frame = pd.concat([_frame(n_stages=4), _frame(n_stages=2, seeds=(1,)).assign(arch="resnet")])
    out = randomization_readings(frame)
    assert out.groupby("arch").n_stages.first().to_dict() == {"resnet": 2, "vgg": 4}
    assert len(out) == 4 * 2 * 2


def test_readings_refuse_missing_stages_and_other_modes():
    frame = _frame()
    with pytest.raises(ValueError, match="stages \\[2\\] are missing"):
        randomization_readings(frame[frame.stage != 2])
    with pytest.raises(ValueError, match="mode='cascading'"):
        randomization_readings(frame.assign(mode="independent"))
