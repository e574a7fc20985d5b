"""Mitigating instability across retraining: regularisers, temporal soft-label distillation, ensembles.

Datta et al. (2023), "Measuring and Mitigating Local Instability in Deep Neural Networks", Sec. 4:
data-agnostic regularisers (label smoothing, Szegedy et al. 2016; the confidence penalty of
Pereyra et al. 2017, Eq. 2) against their data-centric method (TGTSS), a student trained on the
teacher's temporally averaged, temperature-scaled soft labels, optionally only for the samples
whose predictions switch during the teacher's training; the ensemble of N models (averaged
probabilities) is the gold standard. Every method's cost is recorded in seconds of training.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd
import torch
from torch import nn

from .stability import temporal_label_entropy

if TYPE_CHECKING:  # training imports this module; the functions below import it lazily
    from .data import ImageSet
    from .training import TrainConfig, TrainedModel

MITIGATIONS = ("none", "label_smoothing", "confidence_penalty", "distillation", "ensemble")
# Each method's options, with their defaults (our choices; Datta et al. tune them per dataset).
METHOD_OPTIONS = {
    "none": {},
    "label_smoothing": {"label_smoothing": 0.1},
    "confidence_penalty": {"confidence_penalty": 0.1},
    "distillation": {"distill_temperature": 2.0, "distill_weight": 0.5, "distill_only_unstable": None,
                     "distill_from_epoch": 1},
    "ensemble": {"ensemble_size": 3},
}
TEACHER_SEED = 9_999  # the default teacher is a run of its own, not one of the evaluated seeds
ENSEMBLE_SEED_STRIDE = 10_000  # member j of the ensemble for seed s has seed s + j * stride


# ----------------------------------------------------------------------------- losses and targets

def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy H(p) = -sum_c p_c log p_c of softmax(logits), per sample -> [B].

    Pereyra et al. (2017), Eq. 2: the confidence penalty subtracts beta * H(p(.|x)) from the loss.
    """
    log_p = logits.log_softmax(-1)
    return -(log_p.exp() * log_p).sum(-1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with soft labels, -sum_c q_c log softmax(logits)_c, per sample -> [B]."""
    return -(targets * logits.log_softmax(-1)).sum(-1)


def distillation_targets(epoch_logits: torch.Tensor, temperature: float = 2.0, *, from_epoch: int = 1,
                         only_unstable: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporally averaged, temperature-scaled soft labels and the mask of samples to distil.

    Datta et al. (2023), Sec. 4 (TGTSS): q(x) = mean over the teacher's epochs e >= ``from_epoch``
    of softmax(z_e(x) / T), with z_e the teacher's training-set logits after epoch e (our reading:
    the probabilities, not the logits, are averaged). ``epoch_logits`` [E, N, K] -> targets
    [N, K] (float32) and mask [N] (bool): True where the temporal label entropy of the teacher's
    predictions over those epochs exceeds ``only_unstable``, everywhere when it is None.
    """
    if not isinstance(epoch_logits, torch.Tensor) or epoch_logits.dim() != 3 or not epoch_logits.is_floating_point():
        raise ValueError("epoch_logits must be a floating tensor [N_epochs, N_samples, N_classes], got "
                         f"{getattr(epoch_logits, 'shape', type(epoch_logits).__name__)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 1 <= from_epoch <= epoch_logits.shape[0]:
        raise ValueError(f"from_epoch must be in [1, {epoch_logits.shape[0]}], got {from_epoch}")
    z = epoch_logits[from_epoch - 1:].float()
    targets = (z / temperature).softmax(-1).mean(0)
    if only_unstable is None:
        return targets, torch.ones(z.shape[1], dtype=torch.bool, device=z.device)
    return targets, temporal_label_entropy(z.argmax(-1)) > only_unstable


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
        from .training import predict_logits, resolve_device

        model = run.model.to(resolve_device(device))
        return predict_logits(model, images, resolve_device(device)).double().softmax(-1)
    raise TypeError(f"runs must hold TrainedModel, MitigatedRun or logits tensors, got {type(run).__name__}")


def ensemble_predictions(runs: Sequence, *, epoch: int | None = None, images: torch.Tensor | None = None,
                         device="auto") -> torch.Tensor:
    """Probabilities [N, K] of the ensemble of ``runs``: the mean of their softmax outputs.

    Datta et al. (2023)'s gold standard. ``runs``: trained runs (``TrainedModel``, their stored
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
    """The runs of one mitigation, their cost table and the teacher (distillation only)."""

    method: str
    runs: list  # list[MitigatedRun]
    costs: pd.DataFrame
    teacher: "TrainedModel | None" = None

    def test_probabilities(self, epoch: int | None = None) -> torch.Tensor:
        """Probabilities [N_runs, N_samples, K] of every run, for :mod:`saliency_sanity.stability`."""
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

    Datta et al. (2023), Sec. 4. ``method`` (:data:`MITIGATIONS`) and its ``options``
    (:data:`METHOD_OPTIONS`, defaults there):

    - ``"none"``: ``base_config`` with each seed (the baseline);
    - ``"label_smoothing"``: option ``label_smoothing`` (Szegedy et al. 2016);
    - ``"confidence_penalty"``: option ``confidence_penalty``, beta of Pereyra et al. (2017);
    - ``"distillation"``: one teacher (``base_config`` with ``teacher_seed``, recording its
      training-set logits per epoch), then a student per seed on its soft labels; options
      ``distill_temperature``, ``distill_weight``, ``distill_only_unstable``, ``distill_from_epoch``
      (see :class:`~saliency_sanity.training.TrainConfig`);
    - ``"ensemble"``: per seed s, ``ensemble_size`` models with seeds s + j * 10,000 (member 0 is
      the baseline model of seed s, reused from the cache), probabilities averaged.

    With ``n_train`` and no ``subset_seed``, ``subset_seed`` is set to ``base_config.seed`` so that
    every run (and the teacher) trains on the same images: retraining on the same data.

    Returns a :class:`MitigationResult`; its ``costs`` table has one row per run: ``method``,
    ``seed``, ``train_seconds`` (the run's own training, all members of an ensemble),
    ``teacher_seconds`` (the whole teacher, on every distillation row; 0 otherwise) and
    ``seconds`` = their sum, the cost of one such predictor from scratch. Seconds are those
    measured when a model was trained, also when it is later loaded from the cache.
    """
    from .training import train_model

    opts = _method_options(method, options)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    base = base_config
    if base.n_train is not None and base.subset_seed is None:
        base = replace(base, subset_seed=base.seed)
    common = dict(device=device, cache=cache, progress=progress, root=root)
    teacher = None
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
    elif method == "distillation":
        teacher_config = replace(base, seed=teacher_seed, record_train_logits=True)
        teacher = train_model(teacher_config, train, test, **common)
        for s in seeds:
            student = replace(base, seed=s, distill_teacher=teacher_config, **opts)
            members[s] = [train_model(student, train, test, teacher=teacher, **common)]
    else:
        for s in seeds:
            members[s] = [train_model(replace(base, seed=s, **opts), train, test, **common)]
    runs = [MitigatedRun(method, s, ms, sum(m.seconds for m in ms)) for s, ms in members.items()]
    teacher_seconds = teacher.seconds if teacher is not None else 0.0
    costs = pd.DataFrame({"method": method, "seed": [r.seed for r in runs],
                          "train_seconds": [r.seconds for r in runs], "teacher_seconds": teacher_seconds})
    costs["seconds"] = costs["train_seconds"] + costs["teacher_seconds"]
    return MitigationResult(method, runs, costs, teacher)
