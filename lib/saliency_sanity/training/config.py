"""What determines a trained model: its config, the cache key made of it, and the data it trains on.

Seeded and hashed so that the same config and data give the same checkpoint folder
(:func:`config_key`, :func:`data_fingerprint`); the seeded ``n_train`` subset and the permuted labels of
Adebayo et al.'s (2018, Sec. 5) data randomization test are functions of the config alone.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
import hashlib

import torch

from ..data.images import ImageSet


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model; its hash names the checkpoint folder.

    The fields after ``label_smoothing`` are left out of the hash while they keep their default,
    so models trained before they existed keep their cache folders (:func:`config_key`).

    - ``confidence_penalty``: beta of Pereyra et al. (2017), Eq. 2: loss = CE - beta * H(p(.|x)).
    - ``record_train_logits``: after every epoch, the logits of the whole training set, computed in
      eval mode with the epoch's final weights (one extra forward pass over the training set per
      epoch, no backward; the weights are identical to a run without it), are kept in the
      checkpoint as ``train_logits`` (float32) -- what a distillation teacher needs.
    - ``subset_seed``: the seed of the ``n_train`` subset; None draws it with ``seed`` (so runs with
      different seeds see different images). Set it to train several seeds on the same images.
    - ``distill_teacher``: the teacher's config (its hash enters this config's hash); the student
      is trained on the teacher's temporally averaged, temperature-scaled training-set
      probabilities (Datta et al. 2023, TGTSS), see :func:`saliency_sanity.training.losses.distillation_targets`.
      The teacher records its training logits (set automatically) and must train on the same
      images: same ``n_train`` and, with ``n_train``, the same subset seed.
    - ``distill_temperature`` (T), ``distill_from_epoch`` (first teacher epoch averaged, 1-based),
      ``distill_only_unstable`` (soft labels only for samples whose temporal label entropy over the
      teacher's epochs exceeds this threshold, hard labels elsewhere; None: every sample),
      ``distill_weight`` (w: loss = (1 - w) CE(hard label) + w CE(soft label) on distilled samples).
    """

    arch: str = "vgg"
    seed: int = 0
    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    n_train: int | None = None
    permute_labels: bool = False  # data randomization test (Adebayo et al. 2018, Sec. 5)
    label_smoothing: float = 0.0
    confidence_penalty: float = 0.0
    record_train_logits: bool = False
    subset_seed: int | None = None
    distill_teacher: "TrainConfig | None" = None
    distill_temperature: float = 2.0
    distill_weight: float = 0.5
    distill_only_unstable: float | None = None
    distill_from_epoch: int = 1

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {self}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not self.confidence_penalty >= 0.0:
            raise ValueError(f"confidence_penalty (beta) must be >= 0, got {self.confidence_penalty}")
        teacher = self.distill_teacher
        if teacher is None:
            changed = [f.name for f in fields(self) if f.name.startswith("distill_") and getattr(self, f.name) != f.default]
            if changed:
                raise ValueError(f"{', '.join(changed)} only apply to a distilled student; set distill_teacher to "
                                 "the teacher's TrainConfig, or leave them at their defaults")
            return
        if not isinstance(teacher, TrainConfig):
            raise TypeError(f"distill_teacher must be the teacher's TrainConfig, got {type(teacher).__name__}")
        if not teacher.record_train_logits:  # normalised, so both spellings share one hash
            object.__setattr__(self, "distill_teacher", teacher := replace(teacher, record_train_logits=True))
        if not self.distill_temperature > 0:
            raise ValueError(f"distill_temperature must be > 0, got {self.distill_temperature}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in [0, 1] (1: soft labels only), got {self.distill_weight}")
        if self.distill_only_unstable is not None and not self.distill_only_unstable >= 0:
            raise ValueError(f"distill_only_unstable is a label-entropy threshold >= 0 (or None), "
                             f"got {self.distill_only_unstable}")
        if not 1 <= self.distill_from_epoch <= teacher.epochs:
            raise ValueError(f"distill_from_epoch must be in [1, {teacher.epochs}] (the teacher's epochs), "
                             f"got {self.distill_from_epoch}")
        if teacher.n_train != self.n_train or (self.n_train is not None and teacher.data_seed != self.data_seed):
            raise ValueError(
                "the student must train on the teacher's images: give both the same n_train and, with n_train, "
                f"the same subset_seed (teacher: n_train={teacher.n_train}, subset seed {teacher.data_seed}; "
                f"student: n_train={self.n_train}, subset seed {self.data_seed})")

    @property
    def data_seed(self) -> int:
        """The seed of the ``n_train`` subset."""
        return self.seed if self.subset_seed is None else self.subset_seed


# Fields added after caches existed: out of the hash while at their default (old keys unchanged).
_OPTIONAL_FIELDS = ("confidence_penalty", "record_train_logits", "subset_seed", "distill_teacher",
                    "distill_temperature", "distill_weight", "distill_only_unstable", "distill_from_epoch")


def config_key(config: TrainConfig) -> dict:
    """The config as it enters the cache hash: optional fields only where they differ from their default."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    key = {}
    for name in defaults:
        value = getattr(config, name)
        if name in _OPTIONAL_FIELDS and value == defaults[name]:
            continue
        key[name] = config_key(value) if isinstance(value, TrainConfig) else value
    return key


def data_fingerprint(data: ImageSet) -> str:
    """A short digest of images and labels, so a different dataset never hits a cached model."""
    h = hashlib.sha256()
    h.update(str(tuple(data.images.shape)).encode())
    h.update(data.labels.numpy().tobytes())
    h.update(data.images[:: max(1, len(data) // 512)].numpy().tobytes())
    return h.hexdigest()[:16]


def training_subset(config: TrainConfig, train: ImageSet) -> ImageSet:
    """The images ``config`` trains on: all of ``train`` or its seeded ``n_train`` subset."""
    return train if config.n_train is None else train.subset(config.n_train, seed=config.data_seed)


def training_labels(config: TrainConfig, labels: torch.Tensor) -> torch.Tensor:
    if not config.permute_labels:
        return labels
    gen = torch.Generator().manual_seed(10_000 + config.seed)
    return labels[torch.randperm(len(labels), generator=gen)]
