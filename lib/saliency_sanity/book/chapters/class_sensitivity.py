"""What the class-sensitivity chapter reports: per model, class pair and method, the similarity of two classes' maps.

Khakzar et al. (2020) (top-1 against the least likely class) and Sixt et al. (2020) (the random-logit
test), each similarity read against its support-preserving null. The tables are those of
:func:`~saliency_sanity.book.experiments.class_sensitivity_runs`; ``class_values`` returns what the
chapter glues, ``{key: value}``.
"""
from __future__ import annotations

import pandas as pd

from ...metrics.statistics import bootstrap_intervals, interval_cells
from ..glue import glue_key
from ..glue import interval_values, n_changed, n_similar
from ..verdicts import SIMILAR, similar_or_changed

BY = ["arch", "pair", "label"]
# the glue prefix of each quantity's interval: the value, its null, the excess over the null
KINDS = {"cs": "value", "csnull": "null", "csx": "excess"}


def class_intervals(results: pd.DataFrame, metric: str = "spearman_abs") -> dict[str, pd.DataFrame]:
    """``{"cs", "csnull", "csx"}``: the mean and interval of the value, the null and the excess of
    ``metric`` per architecture, class pair and method (seeds, then images, resampled)."""
    quoted = results[results.metric == metric]
    return {prefix: bootstrap_intervals(quoted, BY, value=column) for prefix, column in KINDS.items()}


def class_values(intervals: dict[str, pd.DataFrame]) -> dict:
    """The interval of each quantity (``cs_<arch>_<pair>_<label>``, ``csnull_...``, ``csx_...`` with
    ``_low``, ``_high``, ``_text``), the verdict on the excess (``csv_...``), the share of pairs with an
    undefined similarity (``csu_...``), per model and pair how many methods are similar / changed
    (``csn_<arch>_<pair>``, ``csc_<arch>_<pair>``), the number of methods and the bound."""
    values = {}
    for prefix in KINDS:
        for row in intervals[prefix].itertuples():
            values |= interval_values(glue_key(prefix, row.arch, row.pair, row.label), row.mean, row.low, row.high)
            if prefix == "csx":
                values[glue_key("csv", row.arch, row.pair, row.label)] = similar_or_changed(row.low, row.high)
            if prefix == "cs":
                values[glue_key("csu", row.arch, row.pair, row.label)] = float(row.undefined / (row.n + row.undefined))
    excess = intervals["csx"]
    for (arch, pair), group in excess.groupby(["arch", "pair"]):
        values[glue_key("csn", arch, pair)] = n_similar(group["low"])
        values[glue_key("csc", arch, pair)] = n_changed(group["high"])
    values["cs_n_methods"] = int(excess.label.nunique())
    values["cs_similar"] = SIMILAR
    return values


def excess_cells(excess: pd.DataFrame) -> pd.DataFrame:
    """The excess intervals as texts: rows methods, columns architecture x class pair."""
    return excess.assign(cell=interval_cells(excess)).pivot(index="label", columns=["arch", "pair"], values="cell")


def metric_cells(results: pd.DataFrame) -> pd.DataFrame:
    """The excess interval of every metric as texts: rows architecture x method, columns class pair x metric."""
    every = bootstrap_intervals(results, ["arch", "pair", "label", "metric"], value="excess")
    every["cell"] = interval_cells(every)
    return every.pivot(index=["arch", "label"], columns=["pair", "metric"], values="cell")
