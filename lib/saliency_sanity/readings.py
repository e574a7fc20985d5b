"""Where a cascading randomization curve is read: after the logits, the top half, every layer, or on average.

Adebayo et al. (2018, Sec. 4) and Sixt et al. (2020) make their claims about the *top* layers (Guided
Backprop's map stays the same when the logits and the upper layers are re-initialised); the value
after every layer is random answers another question. Each reading keeps one row per image.
"""
from __future__ import annotations

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
