"""What the randomization chapter reports of the cascading test: stages, intervals, verdicts, counts, rankings.

Adebayo et al. (2018), Sec. 4 (model parameter randomization), read at the top half of the layers as
Sixt et al. (2020) do; the calibration of the support-preserving null beside it. Every function takes
the tidy tables of :func:`~saliency_sanity.checks.readings.randomization_readings` (or their intervals)
and returns what the chapter glues, ``{key: value}`` (see :mod:`saliency_sanity.book.glue`).
"""
from __future__ import annotations

import pandas as pd

from ...checks.readings import top_stage
from ...metrics.statistics import bootstrap_intervals, interval_cells, interval_text
from ..glue import glue_key
from ..glue import interval_values, n_changed, n_similar
from ..verdicts import similar_or_changed

BY = ["arch", "label", "metric", "reading"]
KINDS = ("excess", "value", "null")  # what an interval is of, in the order the chapter glues them
QUOTED = "spearman_abs"  # the metric whose counts and ranking the chapter quotes


def stage_values(readings: pd.DataFrame) -> dict:
    """Per architecture: its number of stages (``rand_<arch>_n_stages``) and the stage after which
    its top half is random (``rand_<arch>_top_stage``)."""
    values = {}
    for arch, n in readings.groupby("arch").n_stages.first().items():
        values[glue_key("rand", arch, "n_stages")] = int(n)
        values[glue_key("rand", arch, "top_stage")] = top_stage(int(n))
    return values


def reading_intervals(readings: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{"excess", "value", "null"}``: each quantity's mean and interval per architecture, method,
    metric and reading (seeds, then images, resampled)."""
    return {kind: bootstrap_intervals(readings, BY, value=kind) for kind in KINDS}


def reading_values(intervals: dict[str, pd.DataFrame], metric: str = QUOTED) -> dict:
    """The interval of every quantity (``rand_<kind>_<arch>_<metric>_<reading>_<label>`` and its
    ``_low``, ``_high``, ``_text``), the verdict on every excess (``rand_verdict_...``), the number of
    methods (``rand_n_methods``) and per architecture and reading how many are similar / changed on
    ``metric`` (``rand_nsimilar_<arch>_<reading>``, ``rand_nchanged_<arch>_<reading>``)."""
    values = {}
    for kind in KINDS:
        for row in intervals[kind].itertuples():
            values |= interval_values(glue_key("rand", kind, row.arch, row.metric, row.reading, row.label),
                                      row.mean, row.low, row.high)
            if kind == "excess":
                values[glue_key("rand_verdict", row.arch, row.metric, row.reading, row.label)] = \
                    similar_or_changed(row.low, row.high)
    quoted = intervals["excess"][intervals["excess"].metric == metric]
    values["rand_n_methods"] = int(quoted.label.nunique())
    for (arch, reading), group in quoted.groupby(["arch", "reading"], observed=True):
        values[glue_key("rand_nsimilar", arch, reading)] = n_similar(group.low)
        values[glue_key("rand_nchanged", arch, reading)] = n_changed(group.high)
    return values


def handling_ranking(readings: pd.DataFrame, metric: str = QUOTED, reading: str = "top") -> dict:
    """Per architecture, the gradient handlings ranked by their excess at ``reading`` (the methods of a
    handling averaged per image first), highest first, undefined last: ``rand_<arch>_handling_ranking``
    as ``"<handling> <interval in words>; ..."``."""
    chosen = readings[(readings.metric == metric) & (readings.reading == reading)]
    per_handling = chosen.groupby(["arch", "handling", "seed", "image"], observed=True, as_index=False)["excess"].mean()
    ranked = bootstrap_intervals(per_handling, ["arch", "handling"], value="excess")
    values = {}
    for arch, group in ranked.groupby("arch"):
        group = group.sort_values("mean", ascending=False, na_position="last")
        values[glue_key("rand", arch, "handling_ranking")] = "; ".join(
            f"{r.handling} {interval_text(r.mean, r.low, r.high, words=True)}" for r in group.itertuples())
    return values


def excess_means(intervals: dict[str, pd.DataFrame], metric: str = QUOTED) -> pd.DataFrame:
    """The mean excess of ``metric`` per method (rows) and architecture x reading (columns)."""
    excess = intervals["excess"]
    return excess[excess.metric == metric].pivot(index="label", columns=["arch", "reading"], values="mean")


def reading_cells(intervals: dict[str, pd.DataFrame], reading: str = "top") -> pd.DataFrame:
    """The value, null and excess of every metric at ``reading`` as interval texts: rows architecture x
    method, columns metric x kind."""
    top = pd.concat([intervals[k][intervals[k].reading == reading].assign(kind=k) for k in ("value", "null", "excess")])
    top["cell"] = interval_cells(top)
    return top.pivot_table(index=["arch", "label"], columns=["metric", "kind"], values="cell", aggfunc="first")


def null_calibration_values(calibration: pd.DataFrame) -> dict:
    """The value, null and excess of every metric on the calibration maps of
    :func:`~saliency_sanity.metrics.nulls.null_calibration`: ``nullcal_<comparison>_<metric>_<kind>``."""
    return {glue_key("nullcal", row.comparison, row.metric, kind): float(getattr(row, kind))
            for row in calibration.itertuples() for kind in ("value", "null", "excess")}
