"""What the data randomization section reports: how well the matched pair fits its labels, and how alike its maps are.

Adebayo et al. (2018), Sec. 5 (data randomization test), on the matched pair of
:func:`~saliency_sanity.checks.data_randomization.train_matched_pair`: a permuted-label model must
memorise its labels (above :data:`FIT`), and a map that explains the model must differ between it
and the true-label model. The ``*_values`` functions return what the section glues, ``{key: value}``.
"""
from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import pandas as pd

from ...checks.data_randomization import config_differences, fit_accuracy, label_agreement, optimisation_steps
from ...checks.requests import handling, paper_methods
from ...checks.tables import similarity_means
from ...metrics.statistics import bootstrap_intervals, interval_cells
from ..glue import glue_key
from ..glue import interval_values, n_changed, n_similar
from ..verdicts import similar_or_changed

FIT = 0.95  # Adebayo et al.: permuted-label training accuracy above 95 %
FIT_ACCURACY = "training accuracy (own labels, final weights)"
COUNTS = ["training images", "epochs", "batch size", "optimisation steps", "test images"]
# the methods Adebayo et al. report in Sec. 5, always in the test
REPORTED = ("gradient", "input_x_gradient", "gradcam", "guided_backprop", "guided_gradcam")
# the comparisons the section states: is the guided map more similar than its unguided counterpart?
GUIDED_PAIRS = (("guided_backprop", "gradient"), ("guided_gradcam", "gradcam"))


def fit_table(pair: Mapping, train, *, device) -> pd.DataFrame:
    """One row per model of the matched pair (``{"true": run, "permuted": run}``): its training images,
    epochs, batch size, optimisation steps, share of true labels, fit of its own labels (final weights
    and last epoch's running accuracy), test accuracy and test images. ValueError unless the two runs
    differ in their labels only: the same config otherwise, the same images, the same number of steps."""
    differences = config_differences(pair["true"].config, pair["permuted"].config)
    if differences != ["permute_labels"]:
        raise ValueError(f"the matched pair must differ in permute_labels only, not in {differences}")
    if pair["true"].fingerprint != pair["permuted"].fingerprint:
        raise ValueError("the matched pair was trained on different images")
    fit = pd.DataFrame({kind: {
        "training images": min(run.config.n_train, len(train)),
        "epochs": run.config.epochs,
        "batch size": run.config.batch_size,
        "optimisation steps": optimisation_steps(run.config, len(train)),
        "labels that are true": label_agreement(run.config, train),
        FIT_ACCURACY: fit_accuracy(run, train, device=device),
        "training accuracy (last epoch, running)": float(run.history.train_acc.iloc[-1]),
        "test accuracy": float(run.history.test_acc.iloc[-1]),
        "test images": len(run.test_logits()),
    } for kind, run in pair.items()}).T
    if fit["optimisation steps"].nunique() != 1:
        raise ValueError("the matched pair took different numbers of optimisation steps")
    return fit


def fit_values(fit: pd.DataFrame, profile: str) -> dict:
    """Each model's fit and test accuracy (``datarand_<kind>_train_acc``, ``datarand_<kind>_test_acc``,
    the permuted model's also as ``permuted_train_acc``, ``permuted_test_acc``), the permuted model's
    counts and ``datarand_fit_verdict``, a sentence on whether it memorised its labels (a warning when
    it did not: the comparison is then not yet Adebayo et al.'s test)."""
    values = {}
    for kind, row in fit.iterrows():
        values[glue_key("datarand", kind, "train_acc")] = float(row[FIT_ACCURACY])
        values[glue_key("datarand", kind, "test_acc")] = float(row["test accuracy"])
    permuted = fit.loc["permuted"]
    values["permuted_train_acc"] = float(permuted[FIT_ACCURACY])
    values["permuted_test_acc"] = float(permuted["test accuracy"])
    for key, column in (("n_train", "training images"), ("epochs", "epochs"), ("steps", "optimisation steps"),
                        ("test_images", "test images")):
        values[glue_key("datarand", key)] = int(permuted[column])
    fits = permuted[FIT_ACCURACY] >= FIT
    values["datarand_fit_verdict"] = (
        "reaches the 95 % that Adebayo et al. require: it has memorised its permuted labels" if fits else
        f"stays below the 95 % that Adebayo et al. require: with the {profile!r} profile it has not "
        "memorised its permuted labels, so in this build the comparison below is not yet their test")
    if not fits:
        warnings.warn(f"the permuted-label model fits {permuted[FIT_ACCURACY]:.1%} of its labels, below the "
                      f"{FIT:.0%} of Adebayo et al.; raise permuted_epochs")
    return values


def reported_requests(requests: Sequence, **options) -> list:
    """``requests`` followed by those of :data:`REPORTED` it lacks (``options`` per method as in
    :func:`~saliency_sanity.checks.paper_methods`)."""
    have = {label for label, _, _ in requests}
    return list(requests) + [r for r in paper_methods(list(REPORTED), **options) if r[0] not in have]


def with_handling(data_rand: pd.DataFrame) -> pd.DataFrame:
    """The test's table with each method's gradient handling (column ``handling``)."""
    data_rand["handling"] = data_rand["label"].map(handling)
    return data_rand


def excess_intervals(data_rand: pd.DataFrame) -> pd.DataFrame:
    """The mean excess and its interval per method and metric (seeds, then images)."""
    return bootstrap_intervals(data_rand, ["label", "metric"], value="excess")


def excess_cells(excess: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """The excess intervals of :func:`excess_intervals` as texts: rows methods, columns ``metrics``."""
    return excess.assign(cell=interval_cells(excess)).pivot(index="label", columns="metric", values="cell")[list(metrics)]


def compare_means(guided: float, plain: float) -> str:
    """``guided`` against ``plain`` in words: "higher than", "lower than", "equal to" or "not comparable with"."""
    return ("not comparable with" if pd.isna(guided) or pd.isna(plain) else
            "higher than" if guided > plain else "lower than" if guided < plain else "equal to")


def compare_intervals(guided, plain) -> str:
    """Two intervals (``low``, ``high``) in words: "higher than" / "lower than" only when they do not
    overlap, else "not distinguishable from"; "not comparable with" when an end is undefined."""
    return ("not comparable with" if pd.isna([guided.low, guided.high, plain.low, plain.high]).any() else
            "higher than" if guided.low > plain.high else "lower than" if guided.high < plain.low else
            "not distinguishable from")


def similarity_values(data_rand: pd.DataFrame, excess: pd.DataFrame, metrics: Sequence[str],
                      quoted: str = "spearman_abs") -> dict:
    """The excess interval and verdict of every method and metric (``datarand_excess_<metric>_<label>``,
    ``datarand_verdict_<metric>_<label>``), how many methods are similar / changed on ``quoted``
    (``datarand_n_methods``, ``datarand_nsimilar``, ``datarand_nchanged``), the mean similarity
    (``datarand_<metric>_<label>``; ``datarand_<label>`` for ``quoted``) and, for each pair of
    :data:`GUIDED_PAIRS` and metric, the guided method against the plain one on the mean
    (``datarand_cmp_<guided>_<plain>_<metric>``) and on the excess interval (``datarand_cmpx_...``)."""
    values = {}
    for row in excess.itertuples():
        values |= interval_values(glue_key("datarand_excess", row.metric, row.label), row.mean, row.low, row.high)
        values[glue_key("datarand_verdict", row.metric, row.label)] = similar_or_changed(row.low, row.high)
    chosen = excess[excess.metric == quoted]
    values["datarand_n_methods"] = int(chosen.label.nunique())
    values["datarand_nsimilar"] = n_similar(chosen.low)
    values["datarand_nchanged"] = n_changed(chosen.high)
    means = similarity_means(data_rand, ["label", "metric"])
    for row in means.itertuples():
        values[glue_key("datarand", row.metric, row.label)] = float(row.mean)
        if row.metric == quoted:
            values[glue_key("datarand", row.label)] = float(row.mean)
    table = means.pivot(index="label", columns="metric", values="mean")[list(metrics)]
    for guided, plain in GUIDED_PAIRS:
        for metric in metrics:
            values[glue_key("datarand_cmp", guided, plain, metric)] = compare_means(
                table.loc[guided, metric], table.loc[plain, metric])
    indexed = excess.set_index(["label", "metric"])
    for guided, plain in GUIDED_PAIRS:
        for metric in metrics:
            values[glue_key("datarand_cmpx", guided, plain, metric)] = compare_intervals(
                indexed.loc[(guided, metric)], indexed.loc[(plain, metric)])
    return values
