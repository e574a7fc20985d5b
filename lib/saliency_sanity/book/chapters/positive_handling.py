"""What the positive-handling chapter reports: both tests per method, counted by gradient handling, and the sign contrasts.

Khakzar et al. (2020): methods that keep only the positive part of gradients (by aggregation or by
propagation) lose their dependence on the class and the parameters. Read from the randomization
(Adebayo et al. 2018, Sec. 4, top-half reading) and class-sensitivity (top-1 against the least likely
class) tables; the ``*_values`` functions return what the chapter glues, ``{key: value}``.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import pandas as pd

from ...checks.requests import handling
from ...metrics.statistics import bootstrap_intervals, holm, interval_cells, paired_contrasts
from ..glue import glue_key
from ..glue import interval_values, n_changed, n_similar
from ..verdicts import ALPHA, PAIR, READING, SIMILAR, similar_or_changed

COLUMNS = ("mean", "low", "high", "n", "undefined", "n_units")
# the thesis in counts: methods that keep only the positive part against those that keep the sign
HANDLING_KINDS = {"positive_handling": ("positive aggregation", "absolute aggregation", "positive propagation"),
                  "signed_handling": ("signed aggregation", "signed propagation")}
# each aggregator's signed, positive and absolute variant
AGGREGATORS = {"gradcam": ("gradcam", "gradcam/positive", "gradcam/absolute"),
               "gradcam_pp": ("gradcam_pp/signed", "gradcam_pp", "gradcam_pp/absolute"),
               "fullgrad": ("fullgrad/signed", "fullgrad/positive", "fullgrad")}


def thesis_tests(readings: pd.DataFrame, classes: pd.DataFrame, metric: str) -> dict[str, pd.DataFrame]:
    """``{"randomization": ..., "class": ...}``: the rows of ``metric`` at the scorecard's reading
    (:data:`~saliency_sanity.book.verdicts.READING`) and class pair (:data:`~saliency_sanity.book.verdicts.PAIR`)."""
    return {"randomization": readings[(readings.reading == READING) & (readings.metric == metric)],
            "class": classes[(classes.pair == PAIR) & (classes.metric == metric)]}


def both_tests(tests: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per architecture and method: the excess interval of each test (columns ``<test>_mean``,
    ``<test>_low``, ``<test>_high``, ``<test>_n``, ...; missing where a test lacks the method) and its
    ``handling``."""
    parts = [bootstrap_intervals(frame, ["arch", "label"], value="excess").rename(
        columns={c: f"{test}_{c}" for c in COLUMNS}) for test, frame in tests.items()]
    summary = parts[0]
    for part in parts[1:]:
        summary = summary.merge(part, on=["arch", "label"], how="outer")
    summary["handling"] = summary["label"].map(handling)
    return summary


def summary_values(summary: pd.DataFrame, tests: Iterable[str]) -> dict:
    """Per method and test its interval (``ph_<arch>_<test>_<label>`` with ``_low``, ``_high``, ``_text``)
    and verdict (``phv_...``); per model and test how many methods are similar / changed, overall
    (``nsimilar_<arch>_<test>``, ``nchanged_...``) and per kind of :data:`HANDLING_KINDS`
    (``nsimilar_<arch>_<test>_<kind>``, ``nchanged_...``, and ``nmethods_<arch>_<kind>``); the number
    of methods and the bound."""
    tests = list(tests)
    values = {}
    for row in summary.itertuples():
        for test in tests:
            mean, low, high = (getattr(row, f"{test}_{c}") for c in ("mean", "low", "high"))
            values |= interval_values(glue_key("ph", row.arch, test, row.label), mean, low, high)
            values[glue_key("phv", row.arch, test, row.label)] = similar_or_changed(low, high)
    for test in tests:
        for arch, group in summary.groupby("arch"):
            values[glue_key("nsimilar", arch, test)] = n_similar(group[f"{test}_low"])
            values[glue_key("nchanged", arch, test)] = n_changed(group[f"{test}_high"])
            for kind, handlings in HANDLING_KINDS.items():
                part = group[group.handling.isin(handlings)]
                values[glue_key("nmethods", arch, kind)] = len(part)
                values[glue_key("nsimilar", arch, test, kind)] = n_similar(part[f"{test}_low"])
                values[glue_key("nchanged", arch, test, kind)] = n_changed(part[f"{test}_high"])
    values["n_methods"] = int(summary.label.nunique())
    values["ph_similar"] = SIMILAR
    return values


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Both tests' intervals as texts: rows handling x method, columns test x architecture."""
    table = summary.assign(randomization=interval_cells(summary, prefix="randomization_"),
                           **{"class": interval_cells(summary, prefix="class_")})
    return table.pivot_table(index=["handling", "label"], columns="arch", values=["randomization", "class"],
                             aggfunc="first")


def sign_pairs(labels: Iterable[str]) -> list[tuple[str, str]]:
    """(signed, other) for every aggregator of :data:`AGGREGATORS` whose signed and other variant are
    both among ``labels``: signed against positive, then signed against absolute."""
    have = set(labels)
    return [(signed, other) for signed, *others in AGGREGATORS.values() for other in others
            if signed in have and other in have]


def sign_contrasts(tests: Mapping[str, pd.DataFrame], labels: Iterable[str]) -> pd.DataFrame:
    """The paired contrasts of :func:`sign_pairs` on the excess of every test, per architecture (column
    ``test``), with ``p_holm`` corrected over every contrast of both tests (one family); an empty
    table when no aggregator has two variants among ``labels``."""
    pairs = sign_pairs(labels)
    if not pairs:
        return pd.DataFrame()
    contrasts = pd.concat([paired_contrasts(frame, pairs, by=["arch"], value="excess").assign(test=test)
                           for test, frame in tests.items()], ignore_index=True)
    contrasts["p_holm"] = holm(contrasts["p"].to_numpy())
    return contrasts


def contrast_word(difference: float, low: float, high: float, p_holm: float) -> str:
    """The signed variant against the other in words: "lower than" / "higher than" when the Holm p is
    below :data:`~saliency_sanity.book.verdicts.ALPHA` and the interval excludes 0 on that side."""
    if pd.isna([difference, low, high, p_holm]).any():
        return "not comparable (too few pairs with both maps defined) with"
    return ("lower than" if p_holm < ALPHA and high < 0 else
            "higher than" if p_holm < ALPHA and low > 0 else "not distinguishable from")


def contrast_values(contrasts: pd.DataFrame) -> dict:
    """Per contrast its difference, Holm p, text and word (``contrast_<test>_<arch>_<a>_<b>`` and
    ``_p``, ``_text``, ``_word``); per test and overall the number of contrasts and of those where the
    signed variant is significantly lower / higher. Empty for an empty table."""
    if contrasts.empty:
        return {}
    values = {}
    for row in contrasts.itertuples():
        key = glue_key("contrast", row.test, row.arch, row.a, row.b)
        values[key] = float(row.difference)
        values[key + "_p"] = float(row.p_holm)
        undefined = pd.isna([row.difference, row.low, row.high, row.p_holm]).any()
        values[key + "_text"] = ("no difference defined" if undefined else
                                 f"{row.difference:+.2f} [{row.low:+.2f}, {row.high:+.2f}], Holm p = {row.p_holm:.2g}")
        values[key + "_word"] = contrast_word(row.difference, row.low, row.high, row.p_holm)
    significant = contrasts.p_holm < ALPHA
    for test, group in contrasts.groupby("test"):
        values[glue_key("n_contrasts", test)] = len(group)
        values[glue_key("n_contrasts", test, "signed_lower")] = int(((group.p_holm < ALPHA) & (group.high < 0)).sum())
        values[glue_key("n_contrasts", test, "signed_higher")] = int(((group.p_holm < ALPHA) & (group.low > 0)).sum())
    values["n_contrasts"] = len(contrasts)
    values["n_contrasts_significant"] = int(significant.sum())
    values["n_contrasts_signed_lower"] = int((significant & (contrasts.high < 0)).sum())
    return values


def contrast_table(contrasts: pd.DataFrame):
    """The contrasts as the chapter shows them: the difference as an interval text, the Wilcoxon statistic
    and both p-values (a styled table; the empty table when there is no contrast). An undefined test (fewer
    than 2 pairs) shows "–", never "nan"."""
    if contrasts.empty:
        return contrasts
    shown = contrasts.assign(difference=interval_cells(contrasts, mean="difference"))
    return shown[["test", "arch", "a", "b", "n", "difference", "statistic", "p", "p_holm"]].style.format(
        {"statistic": "{:.0f}", "p": "{:.2g}", "p_holm": "{:.2g}"}, na_rep="–").hide(axis="index")
