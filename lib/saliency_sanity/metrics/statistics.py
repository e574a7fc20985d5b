"""Uncertainty of the book's reported means, paired contrasts and verdicts.

A reported mean similarity pools images from several training seeds. Images of one seed share
that seed's model, so they are not independent: the interval comes from a two-stage bootstrap
that resamples seeds, then images within each drawn seed (:func:`bootstrap_mean`,
:func:`bootstrap_intervals`). Two method variants are compared on the same images with a paired
Wilcoxon signed-rank test, Holm-corrected over the table (:func:`paired_contrasts`), and a claim
is judged by where its interval lies relative to the claimed bound (:func:`verdict`).

Tables are tidy: one row per (arch, seed, label, metric, image, ...) with a ``value`` column.
A NaN value is an undefined similarity (e.g. a constant map); such rows are dropped and counted.
"""
from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.stats

from .._core.draws import keyed_seed

VERDICTS = ("reproduced", "partly", "not reproduced", "not testable here")

# Index draws held in memory at once (8 bytes each): bounds memory for large units or n_boot.
_CHUNK = 10_000_000


# ----------------------------------------------------------------------------- bootstrap

def _check_options(n_boot: int, confidence: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be an int >= 1, got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


def _units(values_by_unit: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The non-empty units as flat float arrays; NaN refused so that no value is lost silently."""
    units = []
    for i, values in enumerate(values_by_unit):
        values = np.asarray(values, dtype=float).reshape(-1)
        if np.isnan(values).any():
            raise ValueError(f"unit {i} holds NaN values; drop undefined values first "
                             "(bootstrap_intervals and paired_contrasts drop and count them)")
        if values.size:
            units.append(values)
    return units


def _replicates(units: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """The n_boot two-stage bootstrap replicates of the pooled mean of ``units`` (non-empty).

    Davison & Hinkley (1997), Sect. 3.8: resample units, then values within each drawn unit.
    """
    n_units = len(units)
    sizes = np.array([u.size for u in units])
    chosen = rng.integers(0, n_units, size=(n_boot, n_units))  # the unit in each slot of each replicate
    slot_sums = np.empty(n_boot * n_units)
    flat_chosen = chosen.reshape(-1)
    # Values are drawn only for the slots that chose a unit, one fresh resample per slot: a unit
    # drawn twice in one replicate is resampled independently each time, as the scheme requires.
    for i, values in enumerate(units):
        slots = np.flatnonzero(flat_chosen == i)
        rows = max(1, _CHUNK // values.size)
        for start in range(0, slots.size, rows):
            part = slots[start:start + rows]
            picks = rng.integers(0, values.size, size=(part.size, values.size))
            slot_sums[part] = values[picks].sum(axis=1)
    # Pooled mean, not the mean of unit means: units of unequal size weigh by their values, as
    # in the reported point estimate.
    return slot_sums.reshape(n_boot, n_units).sum(axis=1) / sizes[chosen].sum(axis=1)


def bootstrap_mean(values_by_unit: Sequence[np.ndarray], *, n_boot: int = 2000, confidence: float = 0.95,
                   seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the pooled mean of all values and its two-stage bootstrap percentile interval.

    Davison & Hinkley (1997), "Bootstrap Methods and their Application", Sect. 3.8, two-stage bootstrap.

    ``values_by_unit`` holds one array per unit (training seed) of its values (images). Each
    replicate draws as many units as there are, with replacement, then each drawn unit's values
    with replacement; a unit drawn twice is resampled independently each time. The statistic is
    the pooled mean (sum of the resampled values / their count), and the interval its
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles. With one unit only the values
    are resampled. Empty units are left out; NaN values raise ValueError. No values at all gives
    ``(nan, nan, nan)``; a single value ``(v, nan, nan)``, since one value has no spread to resample.
    The draws come from ``np.random.default_rng(seed)``.
    """
    _check_options(n_boot, confidence)
    units = _units(values_by_unit)
    total = sum(u.size for u in units)
    if total == 0:
        return math.nan, math.nan, math.nan
    mean = float(sum(u.sum() for u in units) / total)
    if total < 2:
        return mean, math.nan, math.nan
    stats = _replicates(units, n_boot, np.random.default_rng(seed))
    low, high = np.quantile(stats, [(1 - confidence) / 2, (1 + confidence) / 2])
    return mean, float(low), float(high)


# ----------------------------------------------------------------------------- tables

def _require(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks the column(s) {missing}; it has {list(frame.columns)}")


def _key_part(x) -> int | str:
    """A group key's part as keyed_seed accepts it (an int or a string)."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)):
        return int(x)
    return x if isinstance(x, str) else str(x)


def _groups(frame: pd.DataFrame, by: Sequence[str]):
    """(key tuple, sub-frame) for each group of ``by``, in sorted order; one group when ``by`` is empty."""
    if not by:
        return [((), frame)]
    return list(frame.groupby(list(by), sort=True, dropna=False))


def _refuse_duplicates(frame: pd.DataFrame, keys: list[str], where: str) -> None:
    if not keys:
        return
    dup = frame.duplicated(keys, keep=False)
    if dup.any():
        shown = frame.loc[dup, keys].drop_duplicates().head(5).to_dict("records")  # native scalars
        listed = "; ".join(", ".join(f"{k}={v!r}" for k, v in r.items()) for r in shown)
        raise ValueError(f"duplicated keys {keys} {where}: {listed}; every row must be named uniquely "
                         "(add the distinguishing column to `by`)")


def _split_units(frame: pd.DataFrame, value: str, unit: str | None, order: list[str]) -> list[np.ndarray]:
    """The defined values of ``frame`` as one array per unit, in a canonical order.

    Sorted by unit, then by the naming keys and the value, so that the draws do not depend on the
    order of the rows.
    """
    frame = frame.sort_values(order + [value], kind="stable")
    if unit is None:
        return [frame[value].to_numpy(float)]
    return [g[value].to_numpy(float) for _, g in frame.groupby(unit, sort=True, dropna=False)]


def _content_key(units: list[np.ndarray]) -> str:
    """A digest of the values by unit: the same data draws the same bootstrap, however it was grouped."""
    digest = hashlib.blake2b(digest_size=16)
    for values in units:
        digest.update(np.ascontiguousarray(values, dtype=float).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def _n_units(frame: pd.DataFrame, unit: str | None) -> int:
    if frame.empty:
        return 0
    return 1 if unit is None else int(frame[unit].nunique(dropna=False))


def bootstrap_intervals(frame: pd.DataFrame, by: Sequence[str], *, value: str = "value",
                        levels: Sequence[str] = ("seed", "image"), n_boot: int = 2000,
                        confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per group of ``by``: the pooled mean of ``value`` and its two-stage bootstrap interval.

    Davison & Hinkley (1997), two-stage bootstrap, through :func:`bootstrap_mean`.

    Columns: ``by...``, ``mean``, ``low``, ``high``, ``n`` (defined values), ``undefined`` (NaN
    values, dropped), ``n_units`` (distinct ``levels[0]`` values among the defined rows; 1 when that
    column is absent, 0 when no value is defined). Units are ``levels[0]``; the other levels only
    name the rows and must be unique within a unit and group (ValueError naming the duplicated
    keys otherwise). A level column absent from the frame counts as one unit. Each group draws from
    ``keyed_seed(seed, "bootstrap", digest of its values by unit)``: its numbers depend neither on
    the order of the rows, nor on the other groups, nor on how the same rows were grouped (two
    chapters grouping one quantity differently print one interval).
    """
    by = list(by)
    _require(frame, by + [value])
    present = [lv for lv in levels if lv in frame.columns]
    unit = levels[0] if levels and levels[0] in frame.columns else None
    # Without an inner level the rows are unnamed and a unit may repeat; the values then set the order.
    named = present if any(lv in frame.columns for lv in levels[1:]) else []
    rows = []
    for key, group in _groups(frame, by):
        _refuse_duplicates(group, named, f"in group {dict(zip(by, key))}")
        defined = group[group[value].notna()]
        units = _split_units(defined, value, unit, present)
        mean, low, high = bootstrap_mean(units, n_boot=n_boot, confidence=confidence,
                                         seed=keyed_seed(seed, "bootstrap", _content_key(units)))
        rows.append((*key, mean, low, high, len(defined), len(group) - len(defined), _n_units(defined, unit)))
    columns = by + ["mean", "low", "high", "n", "undefined", "n_units"]
    return pd.DataFrame(rows, columns=columns).astype({"n": int, "undefined": int, "n_units": int})


# ----------------------------------------------------------------------------- paired tests

def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values, in the input order.

    Holm (1979), "A simple sequentially rejective multiple test procedure".

    Sorted ascending, the i-th smallest of m p-values becomes p_(i) * (m - i + 1), then the
    running maximum, clipped at 1. NaN p-values stay NaN and do not count in m.
    """
    p = np.asarray(pvalues, dtype=float).reshape(-1)
    adjusted = np.full(p.shape, np.nan)
    defined = np.flatnonzero(~np.isnan(p))
    m = defined.size
    if m == 0:
        return adjusted
    order = defined[np.argsort(p[defined], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    # The running maximum keeps the adjusted values in the order of the raw ones (step-down).
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def paired_contrasts(frame: pd.DataFrame, contrasts: Sequence[tuple[str, str]], *, by: Sequence[str] = (),
                     column: str = "label", value: str = "value", pair_on: Sequence[str] = ("seed", "image"),
                     n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Paired comparison of the rows with ``column == a`` and ``column == b``, per contrast and group.

    Wilcoxon (1945) signed-rank test (scipy.stats.wilcoxon), Holm (1979) correction, and the
    Davison & Hinkley (1997) two-stage bootstrap of the mean difference.

    For each (a, b) in ``contrasts`` and each group of ``by``, rows are paired on the ``pair_on``
    columns present in the frame (each key at most once per side, ValueError otherwise); pairs
    with a NaN on either side are dropped. Columns: ``by...``, ``a``, ``b``, ``n`` (pairs),
    ``mean_a``, ``mean_b``, ``difference`` (mean of a - b), ``low``, ``high`` (its two-stage bootstrap
    interval, units = ``pair_on[0]`` when present, draws from ``keyed_seed(seed, "contrast", *key,
    a, b)``), ``statistic`` and ``p`` (``scipy.stats.wilcoxon(a_values, b_values)``, two-sided,
    default zero_method), ``p_holm`` (Holm over every row of the returned table) and ``n_units``.
    With fewer than 2 pairs, or all differences zero, the test is undefined: statistic and p NaN.
    ValueError if a contrast names a value absent from ``column``.
    """
    by = list(by)
    _require(frame, by + [column, value])
    keys = [c for c in pair_on if c in frame.columns]
    if not keys:
        raise ValueError(f"none of the pairing columns {list(pair_on)} is in the frame; rows cannot be paired")
    unit = pair_on[0] if pair_on and pair_on[0] in frame.columns else None
    known = set(frame[column].dropna().unique())
    for a, b in contrasts:
        absent = [v for v in (a, b) if v not in known]
        if absent:
            raise ValueError(f"contrast ({a!r}, {b!r}) names {absent}, absent from column {column!r} "
                             f"(values: {sorted(map(str, known))})")
    rows = []
    for key, group in _groups(frame, by):
        where = f"in group {dict(zip(by, key))}"
        for a, b in contrasts:
            side_a = group.loc[group[column] == a, keys + [value]]
            side_b = group.loc[group[column] == b, keys + [value]]
            _refuse_duplicates(side_a, keys, f"for {column}={a!r} {where}")
            _refuse_duplicates(side_b, keys, f"for {column}={b!r} {where}")
            pairs = side_a.merge(side_b, on=keys, suffixes=("_a", "_b"))
            pairs = pairs[pairs[f"{value}_a"].notna() & pairs[f"{value}_b"].notna()]
            pairs = pairs.assign(_d=pairs[f"{value}_a"] - pairs[f"{value}_b"]).sort_values(keys, kind="stable")
            x, y = pairs[f"{value}_a"].to_numpy(float), pairs[f"{value}_b"].to_numpy(float)
            difference, low, high = bootstrap_mean(
                _split_units(pairs, "_d", unit, keys), n_boot=n_boot, confidence=confidence,
                seed=keyed_seed(seed, "contrast", *map(_key_part, key), _key_part(a), _key_part(b)))
            statistic = p = math.nan
            # scipy refuses or returns a meaningless p for these; say "undefined" instead.
            if len(x) >= 2 and np.any(x != y):
                test = scipy.stats.wilcoxon(x, y)
                statistic, p = float(test.statistic), float(test.pvalue)
            mean_a = float(x.mean()) if len(x) else math.nan
            mean_b = float(y.mean()) if len(y) else math.nan
            rows.append((*key, a, b, len(x), mean_a, mean_b, difference, low, high, statistic, p,
                         _n_units(pairs, unit)))
    columns = by + ["a", "b", "n", "mean_a", "mean_b", "difference", "low", "high", "statistic", "p", "n_units"]
    table = pd.DataFrame(rows, columns=columns)
    table.insert(len(columns) - 1, "p_holm", holm(table["p"].to_numpy(float)))
    return table.astype({"n": int, "n_units": int})


# ----------------------------------------------------------------------------- verdicts

def verdict(low: float, high: float, *, claim: str, bound: float) -> str:
    """The verdict on the claim "quantity > bound" or "quantity < bound" from the quantity's interval.

    A stated decision rule on confidence intervals (cf. Gardner & Altman 1986, "Confidence
    intervals rather than P values").

    ``claim=">"``: "reproduced" when low > bound, "not reproduced" when high <= bound, "partly"
    otherwise (the interval contains the bound). ``claim="<"``: "reproduced" when high < bound,
    "not reproduced" when low >= bound, "partly" otherwise. "not testable here" when low or high
    is NaN. ValueError for another claim, a NaN bound or low > high.
    """
    if claim not in (">", "<"):
        raise ValueError(f'claim must be ">" or "<", got {claim!r}')
    if math.isnan(bound):
        raise ValueError("bound must be a number, got NaN")
    if math.isnan(low) or math.isnan(high):
        return "not testable here"
    if low > high:
        raise ValueError(f"low ({low}) must not exceed high ({high})")
    if claim == ">":
        return "reproduced" if low > bound else "not reproduced" if high <= bound else "partly"
    return "reproduced" if high < bound else "not reproduced" if low >= bound else "partly"


def interval_text(mean: float, low: float, high: float, *, words: bool = False) -> str:
    """``"+0.12 [+0.05, +0.20]"``: a mean with its interval as the book prints it, never a NaN.

    An undefined mean prints ``"–"`` (``words``: "undefined (no image gives two non-constant maps)"),
    a mean without an interval only the mean (``words``: with "(too few defined values for an interval)").
    """
    if mean != mean:  # NaN: no defined value
        return "undefined (no image gives two non-constant maps)" if words else "–"
    if low != low or high != high:
        return f"{mean:+.2f}" + (" (too few defined values for an interval)" if words else "")
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def interval_cells(frame: pd.DataFrame, *, prefix: str = "", mean: str = "mean") -> list[str]:
    """:func:`interval_text` of every row of a table with ``<prefix>mean``, ``<prefix>low`` and ``<prefix>high``."""
    return [interval_text(m, lo, hi) for m, lo, hi in
            zip(frame[f"{prefix}{mean}"], frame[f"{prefix}low"], frame[f"{prefix}high"])]


def bootstrap_statistic(statistic, n: int, *, n_boot: int = 2000, confidence: float = 0.95,
                        seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high) of any statistic of ``n`` rows: ``statistic(indices)`` on every row and a
    percentile interval over ``n_boot`` resamples of the rows (Efron & Tibshirani 1993, Ch. 13);
    replicates where the statistic is undefined (NaN) are left out."""
    _check_options(n_boot, confidence)
    if n < 2:
        return (float(statistic(np.arange(n))) if n else math.nan), math.nan, math.nan
    rng = np.random.default_rng(seed)
    replicates = np.array([statistic(i) for i in rng.integers(0, n, (n_boot, n))], dtype=float)
    replicates = replicates[~np.isnan(replicates)]
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail]) if len(replicates) else (math.nan, math.nan)
    return float(statistic(np.arange(n))), float(low), float(high)


def bootstrap_difference(a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, confidence: float = 0.95,
                         seed: int = 0) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high) for two independent groups, each resampled on its own (a
    two-sample percentile bootstrap); NaN values are dropped, fewer than 2 per group gives NaN."""
    _check_options(n_boot, confidence)
    a, b = (np.asarray(v, dtype=float) for v in (a, b))
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    replicates = (a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
                  - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1))
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(a.mean() - b.mean()), float(low), float(high)
