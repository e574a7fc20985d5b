"""Where a cascading randomization curve is read: after the logits, the top half, every layer, or on average.

Adebayo et al. (2018, Sec. 4) and Sixt et al. (2020) make their claims about the *top* layers (Guided
Backprop's map stays the same when the logits and the upper layers are re-initialised); the value
after every layer is random answers another question. Each reading keeps one row per image.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

READINGS = ("logit", "top", "all", "area")
READING_NAMES = {"logit": "after the logit layer", "top": "after the top half of the stages",
                 "all": "after every layer", "area": "mean over all stages"}
_VALUES = ("value", "null", "excess")
_KEYS = ("arch", "seed", "mode", "order", "method", "variant", "label", "handling", "metric", "image")


def top_stage(n_stages: int) -> int:
    """The stage after which the upper half of ``n_stages`` stages is random (at least the logits)."""
    return max(1, (n_stages + 1) // 2)


def randomization_readings(frame: pd.DataFrame) -> pd.DataFrame:
    """Per image, method and metric: the similarity after the logit layer (stage 1), after the top half
    of the stages (:func:`top_stage`), after every stage, and its mean over stages 1..S (``area``).

    ``frame``: rows of a top-down cascading :func:`~saliency_sanity.checks.randomization_test`, every
    stage evaluated (several models may be stacked with ``arch``/``seed`` columns). Columns ``value``
    and, where present, ``null`` and ``excess`` are read; ``stage`` says which stage a reading is
    (missing for the area); ``n_stages`` the number of randomized stages.
    """
    if frame.empty:
        raise ValueError("no rows to read")
    for column, wanted in (("mode", "cascading"), ("order", "top_down")):
        if column in frame and set(frame[column].unique()) != {wanted}:
            raise ValueError(f"readings need {column}={wanted!r} rows only, got {sorted(frame[column].unique())}")
    values = [c for c in _VALUES if c in frame]
    keys = [c for c in _KEYS if c in frame]
    model_keys = [c for c in ("arch", "seed") if c in frame]
    parts = []
    for model, rows in (frame.groupby(model_keys, sort=False) if model_keys else [((), frame)]):
        n_stages = int(rows.stage.max())
        present = set(rows.stage.unique())
        missing = sorted(set(range(n_stages + 1)) - present)
        if missing:
            raise ValueError(f"readings need every stage 0..{n_stages}; stages {missing} are missing "
                             "(run randomization_test without `stages`)")
        randomized = rows[rows.stage >= 1]
        for reading, stage in (("logit", 1), ("top", top_stage(n_stages)), ("all", n_stages)):
            parts.append(randomized[randomized.stage == stage][keys + values + ["stage"]]
                         .assign(reading=reading, n_stages=n_stages))
        area = randomized.groupby(keys, sort=False, dropna=False)[values].mean().reset_index()
        parts.append(area.assign(reading="area", stage=pd.NA, n_stages=n_stages))
    out = pd.concat(parts, ignore_index=True)
    out["reading"] = pd.Categorical(out["reading"], categories=READINGS, ordered=True)
    return out[[*keys, "reading", "stage", "n_stages", *values]]


# ----------------------------------------------------------------- the plain and the repaired MPRT side by side
# Each test's per-image score and the sign that makes "higher" mean "the map changed more with the
# parameters": a similarity to the trained model's map falls, the explanation's complexity rises.
MPRT_TESTS = {"mprt": -1.0, "mprt_excess": -1.0, "smooth_mprt": -1.0, "efficient_mprt": 1.0}
MPRT_TEST_NAMES = {"mprt": "MPRT", "mprt_excess": "MPRT excess", "smooth_mprt": "smooth MPRT",
                   "efficient_mprt": "efficient MPRT"}
_SCORE_KEYS = ["arch", "seed", "image", "label", "handling"]


def mprt_scores(readings: pd.DataFrame, smooth: pd.DataFrame, efficient: pd.DataFrame,
                metric: str = "spearman_abs") -> pd.DataFrame:
    """Per image and method, the score of each test after every layer is random (Hedström et al. 2023):
    the plain MPRT's similarity (``readings`` at reading "all", raw value and excess over the null), the
    smooth MPRT's similarity at its last stage, and the efficient MPRT's relative rise of complexity.

    Columns ``arch, seed, image, label, handling, test, score`` and ``sensitivity`` = score times the
    sign of :data:`MPRT_TESTS`, so that for every test a higher sensitivity means a map that changed
    more when the model was randomized.
    """
    plain = readings[(readings.reading == "all") & (readings.metric == metric)]
    last = smooth.groupby(["arch", "seed"]).stage.transform("max")
    smooth = smooth[(smooth.stage == last) & (smooth.metric == metric)]
    parts = [plain.assign(test="mprt", score=plain["value"]), plain.assign(test="mprt_excess", score=plain["excess"]),
             smooth.assign(test="smooth_mprt", score=smooth["value"]),
             efficient.assign(test="efficient_mprt", score=efficient["value"])]
    # only the methods every test scored (a notebook may have been run with fewer methods)
    shared = set.intersection(*(set(p["label"]) for p in parts))
    out = pd.concat([p[_SCORE_KEYS + ["test", "score"]] for p in parts], ignore_index=True)
    out = out[out["label"].isin(shared)].reset_index(drop=True)
    out["sensitivity"] = out["score"] * out["test"].map(MPRT_TESTS)
    return out


def ranking_agreement(scores: pd.DataFrame, a: str, b: str, *, n_boot: int = 1000,
                      seed: int = 0) -> pd.DataFrame:
    """How alike tests ``a`` and ``b`` rank the methods: per architecture, the Spearman correlation of
    the methods' mean sensitivities (:func:`mprt_scores`), with a 95 % percentile interval from
    resampling the (model seed, image) units, the same units for every method and both tests.

    Hedström et al. (2023) argue that the repaired tests judge methods differently from the plain MPRT;
    a correlation of 1 means the same ranking. Methods with an undefined score on some unit are
    compared on the units where both tests define them (NaN means of a method leave it out).
    Columns ``arch, a, b, rho, low, high, n_units, n_methods``.
    """
    from .._core.draws import keyed_seed
    from ..metrics.statistics import bootstrap_statistic

    rows = []
    for arch, frame in scores[scores.test.isin([a, b])].groupby("arch", sort=True):
        wide = frame.pivot_table(index=["seed", "image"], columns=["test", "label"], values="sensitivity",
                                 aggfunc="first", dropna=False)
        if a not in wide.columns.get_level_values(0) or b not in wide.columns.get_level_values(0):
            raise ValueError(f"{arch}: scores of both tests {a!r} and {b!r} are needed")
        first, second = wide[a].to_numpy(), wide[b].to_numpy()
        labels = list(wide[a].columns)
        if list(wide[b].columns) != labels:
            raise ValueError(f"{arch}: tests {a!r} and {b!r} scored different methods")

        def rho(i):
            ma, mb = pd.Series(np.nanmean(first[i], 0)), pd.Series(np.nanmean(second[i], 0))
            keep = ma.notna() & mb.notna()
            return ma[keep].corr(mb[keep], method="spearman") if keep.sum() > 2 else np.nan

        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a method undefined on every resampled unit
            estimate, low, high = bootstrap_statistic(rho, len(wide), n_boot=n_boot,
                                                      seed=keyed_seed(seed, "ranking", arch, a, b))
        rows.append({"arch": arch, "a": a, "b": b, "rho": estimate, "low": low, "high": high,
                     "n_units": len(wide), "n_methods": len(labels)})
    return pd.DataFrame(rows)
