"""The instability chapter's loops and summaries (``notebooks/06_instability.ipynb``), after Datta et al. (2023).

The agreement of the maps of retrained models on stable and unstable test images, for two targets
(each model's own top-1 class and one fixed class), the tension between stability and sensitivity
to the model, and each mitigation's accuracy, instability, churn and map stability against the
ensemble. Functions that feed the book's prose return ``{glue key: value}``, the chapter's keys (made
by :func:`~saliency_sanity.book.glue.glue_key` where they hold a method's name) with plain ``int``,
``float`` or ``str`` values, the words chosen to read in a sentence.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
import torch

from ...metrics.stability import instability_table, map_stability, map_stability_table, pairwise_churn, run_maps
from ...training.mitigation import compare_to_ensemble
from ..glue import glue_key

EDGE_CONTROL = "control: edge detector"  # the model-ignoring map (Adebayo et al. 2018)
TOP1, TRUE_LABEL = "top1", "true label"  # the two targets: each model's own class, one fixed class
# how the prose names each mitigation
MITIGATION_NAMES = {"none": "no mitigation", "label_smoothing": "label smoothing",
                    "confidence_penalty": "the confidence penalty", "distillation": "distillation of every image",
                    "localized_distillation": "localized distillation", "ensemble": "the ensemble"}


def map_agreement_table(runs: Sequence, x: torch.Tensor, requests, targets: Mapping, *, samples,
                        instability: pd.DataFrame, controls: Mapping[str, torch.Tensor] | None = None,
                        device=None) -> pd.DataFrame:
    """Per target, method and image: the agreement of the maps of every retrained model, beside the image's instability.
    After Datta et al. (2023), who measure the instability of predictions across retraining; the
    agreement is :func:`~saliency_sanity.metrics.stability.map_stability` (Spearman of absolute
    maps, mean over pairs of runs). ``targets``: {name: target of
    :func:`~saliency_sanity.metrics.stability.run_maps`} ("top1" or fixed classes); ``requests``:
    the methods; ``controls``: {name: map [N_images, H, W]} that ignore the model, the same for
    every run. ``samples``: the images' indices in ``instability``
    (:func:`~saliency_sanity.metrics.stability.instability_table`), whose columns are merged in.
    Columns: target, method, sample, map_stability, pixel_dispersion, the instability columns and
    ``unstable`` (label entropy > 0: the runs do not all predict the same class).
    """
    rows = []
    for target_name, target in targets.items():
        maps = run_maps(runs, x, requests, target, device=device)
        maps.update({name: c.unsqueeze(0).repeat(len(runs), 1, 1, 1) for name, c in (controls or {}).items()})
        for method, method_maps in maps.items():
            rows.append(map_stability_table(method_maps, ["spearman_abs"], samples=samples, target=target_name)
                        .assign(method=method))
    table = (pd.concat(rows, ignore_index=True)
             .pivot(index=["target", "method", "sample"], columns="metric", values="value")
             .rename(columns={"spearman_abs": "map_stability"}).reset_index().merge(instability, on="sample"))
    table["unstable"] = table.label_entropy > 0
    return table


def agreement_by_method(agreement: pd.DataFrame) -> pd.DataFrame:
    """The mean map agreement per target and method, on images with stable and with unstable predictions.
    After Datta et al. (2023): are maps less alike where the retrained models disagree?
    ``agreement``: :func:`map_agreement_table`. Indexed by (target, method); columns "stable
    predictions" and "unstable predictions" (NaN where a target has no such image).
    """
    by_method = (agreement.groupby(["target", "method", "unstable"]).map_stability.mean().unstack()
                 .reindex(columns=[False, True]))
    by_method.columns = ["stable predictions", "unstable predictions"]
    return by_method


def agreement_values(by_method: pd.DataFrame, *, top1: str = TOP1) -> dict:
    """Each method's mean map agreement on stable and on unstable images under the chapter's keys.
    After Datta et al. (2023). ``by_method``: :func:`agreement_by_method`; keys
    ``mapstab_<method>_stable`` and ``_unstable`` for target ``top1``, ``mapstab_true_<method>_...``
    for the other (:func:`~saliency_sanity.book.glue.glue_key`).
    """
    values = {}
    for (target, method), row in by_method.iterrows():
        key = glue_key("mapstab" if target == top1 else "mapstab_true", method)
        values[f"{key}_stable"] = float(row["stable predictions"])
        values[f"{key}_unstable"] = float(row["unstable predictions"])
    return values


def agreement_gaps(by_method: pd.DataFrame, *, controls: Sequence[str] = (EDGE_CONTROL,), top1: str = TOP1,
                   fixed: str = TRUE_LABEL) -> dict:
    """How much less the maps agree on unstable than on stable images, per target, over the methods.
    After Datta et al. (2023). ``by_method``: :func:`agreement_by_method` with targets ``top1`` and
    ``fixed``; ``controls`` are left out. Returns ``n_methods``, ``n_less_unstable_top1`` and
    ``n_less_unstable_true`` (methods whose maps agree less on unstable images), ``gap_top1`` and
    ``gap_true`` (mean over methods of stable - unstable), ``gap_change`` ("narrows" when the gap is
    smaller for the fixed class, else "widens"), ``unstable_top1_mean`` and ``unstable_true_mean``
    (mean agreement on unstable images) and ``unstable_true_vs_top1`` ("higher" / "lower").
    """
    gap = (by_method["stable predictions"] - by_method["unstable predictions"]).unstack("target").drop(
        index=list(controls))
    unstable_mean = (by_method["unstable predictions"].drop(index=list(controls), level="method")
                     .groupby("target").mean())
    return {
        "n_methods": len(gap),
        "n_less_unstable_top1": int((gap[top1] > 0).sum()),
        "n_less_unstable_true": int((gap[fixed] > 0).sum()),
        "gap_top1": float(gap[top1].mean()),
        "gap_true": float(gap[fixed].mean()),
        "gap_change": "narrows" if gap[fixed].mean() < gap[top1].mean() else "widens",
        "unstable_top1_mean": float(unstable_mean[top1]),
        "unstable_true_mean": float(unstable_mean[fixed]),
        "unstable_true_vs_top1": "higher" if unstable_mean[fixed] > unstable_mean[top1] else "lower",
    }


def tension_table(randomization: pd.DataFrame, agreement: pd.DataFrame, *, controls: Sequence[str] = (EDGE_CONTROL,),
                  target: str = TOP1) -> pd.DataFrame:
    """Each method's similarity after every layer is randomized, beside its map agreement across retraining.
    Adebayo et al. (2018) want the first low, Datta et al. (2023) the second high; a map that ignores
    the model (``controls``, similarity 1 by construction) has both. ``randomization``: the table of
    :func:`~saliency_sanity.checks.randomization_test` (its last stage is read, mean over images);
    ``agreement``: :func:`map_agreement_table` (mean over images for ``target``). Columns: method,
    randomization_similarity, stability.
    """
    after = randomization[randomization.stage == randomization.stage.max()].groupby("label").value.mean()
    table = pd.DataFrame({"method": list(after.index) + list(controls),
                          "randomization_similarity": list(after.values) + [1.0] * len(controls)})
    table["stability"] = table.method.map(agreement[agreement.target == target].groupby("method").map_stability.mean())
    return table


def tension_values(tension: pd.DataFrame) -> dict:
    """Each method's randomization similarity and stability under the chapter's keys.
    Adebayo et al. (2018) against Datta et al. (2023). ``tension``: :func:`tension_table`; keys
    ``tension_<method>_randomization`` and ``tension_<method>_stability``.
    """
    values = {}
    for row in tension.itertuples():
        values[glue_key("tension", row.method, "randomization")] = float(row.randomization_similarity)
        values[glue_key("tension", row.method, "stability")] = float(row.stability)
    return values


def mitigation_summary(results: Mapping, labels, x: torch.Tensor, fixed_target, *, method: str = "gradient",
                       device=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each mitigation's accuracy, instability, churn, map stability and cost, against the ensemble.
    After Datta et al. (2023), who state a mitigation's effect as its share of the ensemble's
    reduction of instability. ``results``: {mitigation: ``MitigationResult``} with "none" and
    "ensemble"; ``labels``: the test labels; ``x``: the images whose ``method`` maps are compared
    across runs, for each run's top-1 class and for ``fixed_target``. Returns the table of
    :func:`~saliency_sanity.training.mitigation.compare_to_ensemble` (one row per mitigation:
    accuracy, unstable, mean_churn, gradient_map_stability, gradient_map_stability_true_label,
    seconds, epochs, distilled, share and relative costs) and one row per (mitigation, test image)
    with ``unstable``.
    """
    rows, per_image = [], []
    for name, result in results.items():
        p = result.test_probabilities()
        t = instability_table(p, labels)
        per_image.append(pd.DataFrame({"mitigation": name, "sample": t["sample"], "unstable": t.label_entropy > 0}))
        top1 = run_maps(result.runs, x, [method], device=device)[method]
        fixed = run_maps(result.runs, x, [method], fixed_target, device=device)[method]
        rows.append({"mitigation": name, "accuracy": float(t.accuracy.mean()),
                     "unstable": float((t.label_entropy > 0).mean()),
                     "mean_churn": float(pairwise_churn(p.argmax(-1)).churn.mean()),
                     "gradient_map_stability": float(map_stability(top1).nanmean()),
                     "gradient_map_stability_true_label": float(map_stability(fixed).nanmean()),
                     "seconds": float(result.costs.seconds.mean()), "epochs": float(result.costs.epochs.mean()),
                     "distilled": result.distilled_share})
    return (compare_to_ensemble(pd.DataFrame(rows), costs=("seconds", "epochs")),
            pd.concat(per_image, ignore_index=True))


def mitigation_values(mitigation: pd.DataFrame, *, baseline: str = "none") -> dict:
    """Per mitigation, its instability, share, costs and map stability, and the direction of the latter's change.
    After Datta et al. (2023). ``mitigation``: :func:`mitigation_summary`'s table. Keys
    ``mit_<mitigation>_unstable``, ``_share``, ``_seconds``, ``_epochs`` (int), ``_cost`` and
    ``_cost_epochs`` (relative to the ensemble), ``_mapstab`` and ``_mapstab_true`` (top-1 and
    fixed-class map stability), and for every mitigation but ``baseline`` ``_mapstab_change`` and
    ``_mapstab_true_change``: "raises" or "lowers" against ``baseline``.
    """
    none = mitigation.set_index("mitigation").loc[baseline]
    values = {}
    for row in mitigation.itertuples():
        key = f"mit_{row.mitigation}"
        values[f"{key}_unstable"] = row.unstable
        values[f"{key}_share"] = row.share_of_ensemble_reduction
        values[f"{key}_seconds"] = row.seconds
        values[f"{key}_epochs"] = int(row.epochs)
        values[f"{key}_cost"] = row.seconds_vs_ensemble
        values[f"{key}_cost_epochs"] = row.epochs_vs_ensemble
        values[f"{key}_mapstab"] = row.gradient_map_stability
        values[f"{key}_mapstab_true"] = row.gradient_map_stability_true_label
        if row.mitigation != baseline:
            values[f"{key}_mapstab_change"] = ("raises" if row.gradient_map_stability > none.gradient_map_stability
                                               else "lowers")
            values[f"{key}_mapstab_true_change"] = (
                "raises" if row.gradient_map_stability_true_label > none.gradient_map_stability_true_label
                else "lowers")
    return values


def mitigation_verdicts(mitigation: pd.DataFrame, names: Mapping[str, str] = MITIGATION_NAMES, *,
                        localized: str = "localized_distillation",
                        others: Sequence[str] = ("label_smoothing", "confidence_penalty")) -> dict:
    """Which single mitigation comes closest to the ensemble, and the localized one against the paper and the others.
    Datta et al. (2023) state that their localized mitigation comes "within 90% of the gold standard"
    (the ensemble). ``mitigation``: :func:`mitigation_summary`'s table; ``names``: how the prose
    names each mitigation. Returns ``best_single`` (the name of the single mitigation with the
    largest share); when ``localized`` was run, ``localized_distilled_share``, ``localized_vs_paper``
    ("matches" at a share >= 0.9, "falls short of", or "cannot be compared with" when the ensemble
    gains nothing) and ``localized_vs_<other>`` ("more" / "less") for each of ``others`` run.
    """
    singles = mitigation[~mitigation.mitigation.isin(["none", "ensemble"])].set_index("mitigation")
    shares = singles.share_of_ensemble_reduction  # NaN where the ensemble reduces nothing: no share to compare
    values = {"best_single": names[shares.idxmax()] if shares.notna().any()
              else "none of them (no ensemble gain to share)"}
    if localized in singles.index:
        local = singles.loc[localized]
        values["localized_distilled_share"] = float(local.distilled)
        share = local.share_of_ensemble_reduction
        values["localized_vs_paper"] = ("cannot be compared with" if pd.isna(share) else "falls short of"
                                        if share < 0.9 else "matches")
        for other in others:
            if other in singles.index:
                theirs = singles.loc[other].share_of_ensemble_reduction
                values[f"localized_vs_{other}"] = ("neither more nor less (no ensemble gain to share)"
                                                   if pd.isna(share) or pd.isna(theirs)
                                                   else "more" if share > theirs else "less")
    return values


__all__ = ["EDGE_CONTROL", "MITIGATION_NAMES", "TOP1", "TRUE_LABEL", "agreement_by_method", "agreement_gaps",
           "agreement_values", "map_agreement_table", "mitigation_summary", "mitigation_values", "mitigation_verdicts",
           "tension_table", "tension_values"]
