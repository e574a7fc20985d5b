"""Readings of a cascading randomization curve, on hand-made tables."""
import numpy as np
import pandas as pd
import pytest

from saliency_sanity.checks.readings import randomization_readings, top_stage


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


def _scores(sensitivities: dict, seeds=(0, 1), images=range(6), noise=0.0, seed=0):
    """A mprt_scores-shaped table: each test's per-method sensitivity plus seeded noise per unit."""
    from saliency_sanity.checks.readings import MPRT_TESTS

    rng = np.random.default_rng(seed)
    rows = []
    for test, per_label in sensitivities.items():
        for label, s in per_label.items():
            for sd in seeds:
                for i in images:
                    value = s + noise * rng.standard_normal()
                    rows.append({"arch": "vgg", "seed": sd, "image": i, "label": label, "handling": "x",
                                 "test": test, "sensitivity": value, "score": value * MPRT_TESTS[test]})
    return pd.DataFrame(rows)


def test_ranking_agreement_is_one_for_the_same_ranking_and_minus_one_for_the_reverse():
    from saliency_sanity.checks.readings import ranking_agreement

    labels = [f"m{i}" for i in range(6)]
    same = {lab: i for i, lab in enumerate(labels)}
    table = _scores({"mprt": same, "smooth_mprt": {k: 10 * v + 3 for k, v in same.items()},
                     "efficient_mprt": {k: -v for k, v in same.items()}})
    alike = ranking_agreement(table, "mprt", "smooth_mprt").iloc[0]
    assert alike.rho == pytest.approx(1.0) and alike.low == pytest.approx(1.0) and alike.high == pytest.approx(1.0)
    assert alike.n_units == 12 and alike.n_methods == 6
    reverse = ranking_agreement(table, "mprt", "efficient_mprt").iloc[0]
    assert reverse.rho == pytest.approx(-1.0)


def test_ranking_agreement_interval_widens_with_noise_and_is_seeded():
    from saliency_sanity.checks.readings import ranking_agreement

    labels = {f"m{i}": i * 0.1 for i in range(6)}
    table = _scores({"mprt": labels, "smooth_mprt": labels}, noise=0.3)
    a, b = ranking_agreement(table, "mprt", "smooth_mprt"), ranking_agreement(table, "mprt", "smooth_mprt")
    pd.testing.assert_frame_equal(a, b)
    row = a.iloc[0]
    assert row.low < row.rho <= row.high <= 1 and row.high - row.low > 0.05


def test_ranking_agreement_needs_both_tests_on_the_same_methods():
    from saliency_sanity.checks.readings import ranking_agreement

    table = _scores({"mprt": {"a": 1, "b": 2, "c": 3}})
    with pytest.raises(ValueError, match="both tests"):
        ranking_agreement(table, "mprt", "smooth_mprt")


def test_mprt_scores_read_the_last_stage_and_orient_every_test():
    from saliency_sanity.checks.readings import mprt_scores

    readings = pd.DataFrame([{"arch": "vgg", "seed": 0, "image": 0, "label": lab, "handling": "h",
                              "metric": "spearman_abs", "reading": r, "value": v, "excess": v - 0.5}
                             for lab in ("a", "b") for r, v in (("top", 0.9), ("all", 0.7))])
    smooth = pd.DataFrame([{"arch": "vgg", "seed": 0, "image": 0, "label": lab, "handling": "h",
                            "metric": "spearman_abs", "stage": s, "value": v}
                           for lab in ("a", "b", "only_here") for s, v in ((0, 1.0), (5, 0.25))])
    efficient = pd.DataFrame([{"arch": "vgg", "seed": 0, "image": 0, "label": lab, "handling": "h", "value": 0.4}
                              for lab in ("a", "b")])
    out = mprt_scores(readings, smooth, efficient).set_index(["test", "label"])
    assert set(out.index.get_level_values("label")) == {"a", "b"}  # only methods every test scored
    assert out.loc[("mprt", "a"), "score"] == 0.7 and out.loc[("mprt", "a"), "sensitivity"] == -0.7
    assert out.loc[("mprt_excess", "a"), "score"] == pytest.approx(0.2)
    assert out.loc[("smooth_mprt", "a"), "score"] == 0.25
    assert out.loc[("efficient_mprt", "b"), "sensitivity"] == 0.4
