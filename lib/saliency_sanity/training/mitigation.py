"""Mitigating instability across retraining: regularisers, temporal soft-label distillation, ensembles.

Datta et al. (2023), "Measuring and Mitigating Local Instability in Deep Neural Networks" (cited
from its abstract only): data-agnostic regularisers (label smoothing, Szegedy et al. 2016; the
confidence penalty of Pereyra et al. 2017, Eq. 2) against a data-centric mitigation that uses the
per-sample instability estimate -- here a student trained on a teacher's temporally averaged,
temperature-scaled soft labels, either for every training image (``"distillation"``) or, localized,
only for the images whose predictions switch during the teacher's own training
(``"localized_distillation"``); the ensemble of N models (averaged probabilities) is the gold
standard. Every method's cost is recorded in seconds and in epochs of training, and
:func:`share_of_ensemble_reduction` / :func:`compare_to_ensemble` state a mitigation's effect as
the share of the ensemble's reduction of instability that it reaches.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd
import torch
from torch import nn

if TYPE_CHECKING:  # the functions below import training lazily: it is the heavier module
    from ..data.images import ImageSet
    from .config import TrainConfig
    from .train import TrainedModel

MITIGATIONS = ("none", "label_smoothing", "confidence_penalty", "distillation", "localized_distillation", "ensemble")
# The mitigations that train students of a teacher (the teacher is shared: same config, same cache).
DISTILLATIONS = ("distillation", "localized_distillation")
# Each method's options, with their defaults (our choices, not tuned per dataset).
METHOD_OPTIONS = {
    "none": {},
    "label_smoothing": {"label_smoothing": 0.1},
    "confidence_penalty": {"confidence_penalty": 0.1},
    "distillation": {"distill_temperature": 2.0, "distill_weight": 0.5, "distill_only_unstable": None,
                     "distill_from_epoch": 1},
    # localized: soft labels only where the teacher's within-run label entropy is > 0 (its prediction
    # switched at least once over its epochs from distill_from_epoch on); hard labels elsewhere
    "localized_distillation": {"distill_temperature": 2.0, "distill_weight": 0.5, "distill_only_unstable": 0.0,
                               "distill_from_epoch": 1},
    "ensemble": {"ensemble_size": 3},
}
TEACHER_SEED = 9_999  # the default teacher is a run of its own, not one of the evaluated seeds
ENSEMBLE_SEED_STRIDE = 10_000  # member j of the ensemble for seed s has seed s + j * stride


# ----------------------------------------------------------------------------- ensembles

class EnsembleModel(nn.Module):
    """The N-model ensemble as one module: log of the averaged member probabilities.

    Its outputs are valid logits (softmax gives the mean of the members' softmax), so saliency
    methods can explain the ensemble like any classifier.
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member model")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_p = torch.stack([m(x).log_softmax(-1) for m in self.members])
        return torch.logsumexp(log_p, 0) - torch.log(torch.tensor(float(len(self.members)), device=x.device,
                                                                   dtype=log_p.dtype))


def _run_probabilities(run, epoch, images, device) -> torch.Tensor:
    if isinstance(run, torch.Tensor):
        if run.dim() != 2 or not run.is_floating_point():
            raise ValueError(f"a tensor in runs must be logits [N, K], got {tuple(run.shape)} of {run.dtype}")
        return run.double().softmax(-1)
    if isinstance(run, MitigatedRun):
        return torch.stack([_run_probabilities(m, epoch, images, device) for m in run.members]).mean(0)
    if hasattr(run, "test_logits") and hasattr(run, "model"):
        if images is None:
            return run.test_logits(epoch).double().softmax(-1)
        from .._core.device import resolve_device
        from .train import predict_logits

        model = run.model.to(resolve_device(device))
        return predict_logits(model, images, resolve_device(device)).double().softmax(-1)
    raise TypeError(f"runs must hold TrainedModel, MitigatedRun or logits tensors, got {type(run).__name__}")


def ensemble_predictions(runs: Sequence, *, epoch: int | None = None, images: torch.Tensor | None = None,
                         device="auto") -> torch.Tensor:
    """Probabilities [N, K] of the ensemble of ``runs``: the mean of their softmax outputs.

    The gold standard of Datta et al. (2023). ``runs``: trained runs (``TrainedModel``, their stored
    test-set logits after ``epoch``, or their predictions on ``images`` when given),
    :class:`MitigatedRun` (its own members), or logits tensors [N, K]. float64.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("runs is empty; pass the trained runs to average")
    return torch.stack([_run_probabilities(r, epoch, images, device) for r in runs]).mean(0)


# ----------------------------------------------------------------------------- training with a mitigation

@dataclass
class MitigatedRun:
    """One predictor of a mitigation: a single model, or the members of one ensemble."""

    method: str
    seed: int
    members: list  # list[TrainedModel]
    seconds: float  # own training time (all members), without a distillation teacher

    @property
    def model(self) -> nn.Module:
        """The model to explain: the single model, or the members as an :class:`EnsembleModel`."""
        return self.members[0].model if len(self.members) == 1 else EnsembleModel([m.model for m in self.members])

    def test_probabilities(self, epoch: int | None = None) -> torch.Tensor:
        """Test-set probabilities [N, K] after ``epoch`` (members' probabilities averaged)."""
        return ensemble_predictions(self.members, epoch=epoch)


@dataclass
class MitigationResult:
    """The runs of one mitigation, their cost table, the teacher and the distilled training images.

    ``teacher`` and ``distilled`` (a bool mask over the training images: True where the student
    learns from soft labels, False where it keeps the hard label) are set for the distillations only.
    """

    method: str
    runs: list  # list[MitigatedRun]
    costs: pd.DataFrame
    teacher: "TrainedModel | None" = None
    distilled: torch.Tensor | None = None

    @property
    def distilled_share(self) -> float:
        """Fraction of the training images distilled: 1 for global distillation, NaN without a teacher."""
        return float("nan") if self.distilled is None else self.distilled.double().mean().item()

    def test_probabilities(self, epoch: int | None = None) -> torch.Tensor:
        """Probabilities [N_runs, N_samples, K] of every run, for :mod:`saliency_sanity.metrics.stability`."""
        return torch.stack([r.test_probabilities(epoch) for r in self.runs])

    def test_predictions(self, epoch: int | None = None) -> torch.Tensor:
        return self.test_probabilities(epoch).argmax(-1)


def _method_options(method: str, options: dict) -> dict:
    if method not in MITIGATIONS:
        raise ValueError(f"unknown mitigation {method!r}; choose one of {list(MITIGATIONS)}")
    unknown = set(options) - set(METHOD_OPTIONS[method])
    if unknown:
        raise ValueError(f"{method} takes no option(s) {sorted(unknown)}; valid: {sorted(METHOD_OPTIONS[method])}")
    return {**METHOD_OPTIONS[method], **options}


def train_mitigated(method: str, base_config: "TrainConfig", train: "ImageSet", test: "ImageSet",
                    seeds: Sequence[int], *, teacher_seed: int = TEACHER_SEED, device="auto", cache: bool = True,
                    progress: bool = True, root: Path | None = None, **options) -> MitigationResult:
    """Train one run per seed with mitigation ``method`` and record what it cost.

    After Datta et al. (2023). ``method`` (:data:`MITIGATIONS`) and its ``options``
    (:data:`METHOD_OPTIONS`, defaults there):

    - ``"none"``: ``base_config`` with each seed (the baseline);
    - ``"label_smoothing"``: option ``label_smoothing`` (Szegedy et al. 2016);
    - ``"confidence_penalty"``: option ``confidence_penalty``, beta of Pereyra et al. (2017);
    - ``"distillation"``: one teacher (``base_config`` with ``teacher_seed``, recording its
      training-set logits per epoch), then a student per seed on its soft labels; options
      ``distill_temperature``, ``distill_weight``, ``distill_only_unstable``, ``distill_from_epoch``
      (see :class:`~saliency_sanity.training.train.TrainConfig`); every training image gets soft labels;
    - ``"localized_distillation"``: the localized, data-specific variant, a data-centric mitigation
      that uses the per-sample instability estimate (Datta et al. 2023): the same teacher (the same
      config, so one cached teacher serves both distillations), but soft labels only for the training
      images whose within-run label entropy over the teacher's epochs ``distill_from_epoch``..E
      exceeds ``distill_only_unstable`` (default 0: the teacher's prediction switched at least once);
      the others keep their hard labels. Flagging needs several epochs: with E - from_epoch + 1 < 5
      the estimate is coarse;
    - ``"ensemble"``: per seed s, ``ensemble_size`` models with seeds s + j * 10,000 (member 0 is
      the baseline model of seed s, reused from the cache), probabilities averaged.

    With ``n_train`` and no ``subset_seed``, ``subset_seed`` is set to ``base_config.seed`` so that
    every run (and the teacher) trains on the same images: retraining on the same data.

    Returns a :class:`MitigationResult`; its ``costs`` table has one row per run: ``method``,
    ``seed``, ``train_seconds`` (the run's own training, all members of an ensemble),
    ``teacher_seconds`` (the whole teacher, on every distillation row; 0 otherwise) and
    ``seconds`` = their sum, the cost of one such predictor from scratch, and the same in epochs of
    training (``train_epochs``, ``teacher_epochs``, ``epochs``: machine-independent). Seconds are
    those measured when a model was trained, also when it is later loaded from the cache. For the
    distillations, ``distilled`` is the mask of training images that get soft labels.
    """
    from .train import student_targets, train_model

    opts = _method_options(method, options)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    base = base_config
    if base.n_train is not None and base.subset_seed is None:
        base = replace(base, subset_seed=base.seed)
    common = dict(device=device, cache=cache, progress=progress, root=root)
    teacher = distilled = None
    members: dict[int, list] = {}
    if method == "ensemble":
        size = opts["ensemble_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"ensemble_size must be an integer >= 1, got {size!r}")
        member_seeds = {s: [s + j * ENSEMBLE_SEED_STRIDE for j in range(size)] for s in seeds}
        flat = [m for ms in member_seeds.values() for m in ms]
        if len(set(flat)) != len(flat):
            raise ValueError(f"ensemble member seeds s + j * {ENSEMBLE_SEED_STRIDE} collide for seeds {seeds}; "
                             f"use seeds that differ by less than {ENSEMBLE_SEED_STRIDE}")
        for s, ms in member_seeds.items():
            members[s] = [train_model(replace(base, seed=m), train, test, **common) for m in ms]
    elif method in DISTILLATIONS:
        teacher_config = replace(base, seed=teacher_seed, record_train_logits=True)
        teacher = train_model(teacher_config, train, test, **common)
        for s in seeds:
            student = replace(base, seed=s, distill_teacher=teacher_config, **opts)
            members[s] = [train_model(student, train, test, teacher=teacher, **common)]
        distilled = student_targets(student, teacher, members[seeds[-1]][0].fingerprint)[1].cpu()
    else:
        for s in seeds:
            members[s] = [train_model(replace(base, seed=s, **opts), train, test, **common)]
    runs = [MitigatedRun(method, s, ms, sum(m.seconds for m in ms)) for s, ms in members.items()]
    teacher_seconds = teacher.seconds if teacher is not None else 0.0
    costs = pd.DataFrame({"method": method, "seed": [r.seed for r in runs],
                          "train_seconds": [r.seconds for r in runs], "teacher_seconds": teacher_seconds})
    costs["seconds"] = costs["train_seconds"] + costs["teacher_seconds"]
    costs["train_epochs"] = [sum(m.config.epochs for m in r.members) for r in runs]
    costs["teacher_epochs"] = teacher.config.epochs if teacher is not None else 0
    costs["epochs"] = costs["train_epochs"] + costs["teacher_epochs"]
    return MitigationResult(method, runs, costs, teacher, distilled)


# ----------------------------------------------------------------------------- against the gold standard

def share_of_ensemble_reduction(none: float, mitigated: float, ensemble: float) -> float:
    """The share of the ensemble's reduction of instability that a mitigation reaches.

    (none - mitigated) / (none - ensemble), with the instability (e.g. the fraction of test images
    whose label the retrained predictors do not all agree on) without mitigation, with the
    mitigation and with the ensemble, the gold standard of Datta et al. (2023), whose abstract
    states their mitigation's effect this way ("within 90% of the gold standard"). 1: as good as the
    ensemble; 0: no better than no mitigation; negative: worse; above 1: better than the ensemble.
    NaN when the ensemble reduces nothing (none <= ensemble), as the share is then undefined.
    """
    values = (none, mitigated, ensemble)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ValueError(f"none, mitigated and ensemble must be finite numbers, got {values}")
    gain = none - ensemble
    return float("nan") if gain <= 0 else (none - mitigated) / gain


def compare_to_ensemble(frame: pd.DataFrame, *, value: str = "unstable", costs: Sequence[str] = ("seconds",),
                        method: str = "mitigation", baseline: str = "none", ensemble: str = "ensemble") -> pd.DataFrame:
    """Each mitigation against the ensemble: a copy of ``frame`` with the share and relative costs added.

    ``frame`` has one row per mitigation (named in column ``method``), its instability ``value``
    (lower is better) and its ``costs`` per predictor (columns, e.g. seconds or epochs of training).
    Adds ``share_of_ensemble_reduction`` (:func:`share_of_ensemble_reduction` against the rows
    ``baseline`` and ``ensemble``) and, per cost column c, ``c_vs_ensemble`` = c / c of the ensemble.
    """
    missing = {method, value, *costs} - set(frame.columns)
    if missing:
        raise ValueError(f"frame lacks column(s) {sorted(missing)}; it has {list(frame.columns)}")
    names = frame[method].tolist()
    for name in (baseline, ensemble):
        if names.count(name) != 1:
            raise ValueError(f"frame must have exactly one row {method} == {name!r}, got {names.count(name)}")
    row = {name: frame.iloc[names.index(name)] for name in (baseline, ensemble)}
    out = frame.copy()
    out["share_of_ensemble_reduction"] = [
        share_of_ensemble_reduction(float(row[baseline][value]), float(v), float(row[ensemble][value]))
        for v in frame[value]]
    for c in costs:
        out[f"{c}_vs_ensemble"] = frame[c].astype(float) / float(row[ensemble][c])
    return out
