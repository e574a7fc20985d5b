"""Seeded, deterministic training with per-epoch checkpoints cached under a hash of the config
(:mod:`saliency_sanity.training.config`).

Same config and data -> bit-identical weights on CPU: the shuffling order of every epoch is drawn
from a generator seeded by (seed, epoch), so an interrupted run resumes from its last epoch and
ends exactly where an uninterrupted one would. A resumed run says so: it logs the epoch it resumes
from, and the result records it (``TrainedModel.resumed_from_epoch``, ``epochs_run``, and a
``resumed_from_epoch`` entry in every checkpoint it writes).

Options for the instability chapter (Datta et al. 2023): a confidence penalty (Pereyra et al.
2017), per-epoch training-set logits of a teacher, and a student trained on the teacher's
temporally averaged, temperature-scaled soft labels (:mod:`saliency_sanity.training.mitigation`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import logging
from pathlib import Path
import time

import pandas as pd
import torch
from torch import nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._core.cache import (atomic_torch_save, atomic_write_json, cache_root, config_hash, remove_stale_temporary_files,
                           safe_torch_load)
from .._core.device import resolve_device
from ..data.images import ImageSet
from ..models.architectures import build_model
from .config import TrainConfig, config_key, data_fingerprint, training_labels, training_subset
from .losses import distillation_targets, prediction_entropy, soft_cross_entropy

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """A trained model, its per-epoch history and where its checkpoints are.

    ``resumed_from_epoch``: the last checkpointed epoch this call started from (0: trained from
    scratch; ``config.epochs``: loaded whole from the cache, nothing trained). ``epochs_run``: the
    epochs this call trained, ``config.epochs - resumed_from_epoch``. The history covers every epoch
    either way (the earlier ones read from the checkpoint).
    """

    model: nn.Module
    config: TrainConfig
    history: pd.DataFrame
    directory: Path
    # Per-epoch logits of the epochs trained in this process ({epoch: {"test_logits": ...}}), so that
    # a run with cache=False can still be read; other epochs come from the checkpoints.
    records: dict = field(default_factory=dict, repr=False)
    fingerprint: str | None = None  # data_fingerprint of the images it was trained on
    resumed_from_epoch: int = 0
    epochs_run: int | None = None

    def checkpoint(self, epoch: int) -> dict:
        """The stored state of ``epoch`` (1-based): weights and the test-set logits after it."""
        return safe_torch_load(self.directory / f"epoch_{epoch:03d}.pt")

    def _logits(self, name: str, epoch: int | None) -> torch.Tensor:
        epoch = epoch or self.config.epochs
        if not 1 <= epoch <= self.config.epochs:
            raise ValueError(f"epoch must be in [1, {self.config.epochs}], got {epoch}")
        if name in self.records.get(epoch, {}):
            return self.records[epoch][name].float()
        path = self.directory / f"epoch_{epoch:03d}.pt"
        if not path.exists():
            raise ValueError(f"no {name} for epoch {epoch}: {path} does not exist (trained with cache=False in "
                             "another process?); retrain with cache=True")
        state = self.checkpoint(epoch)
        if name not in state:
            raise ValueError(f"{path} has no {name}; train with record_train_logits=True to record them")
        return state[name].float()

    def test_logits(self, epoch: int | None = None) -> torch.Tensor:
        """Test-set logits [N, K] after ``epoch`` (default: the last), stored as float16."""
        return self._logits("test_logits", epoch)

    def train_logits(self, epoch: int | None = None) -> torch.Tensor:
        """Training-set logits [N, K] after ``epoch`` (needs ``record_train_logits``), in training-set order."""
        return self._logits("train_logits", epoch)

    def epoch_logits(self, split: str = "test", from_epoch: int = 1) -> torch.Tensor:
        """Logits of every epoch from ``from_epoch`` on, stacked: [E, N, K]."""
        if split not in ("test", "train"):
            raise ValueError(f"unknown split {split!r}; choose 'test' or 'train'")
        return torch.stack([self._logits(f"{split}_logits", e) for e in range(from_epoch, self.config.epochs + 1)])

    @property
    def seconds(self) -> float:
        """Training time in seconds, summed over the epochs (as measured when they were trained)."""
        return float(self.history["seconds"].sum())


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """Logits of ``images`` in eval mode, batched, returned on the CPU."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(images[i:i + batch_size].to(device)).cpu()
                          for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


def train_model(config: TrainConfig, train: ImageSet, test: ImageSet, *, device="auto",
                cache: bool = True, progress: bool = True, root: Path | None = None,
                teacher: TrainedModel | None = None) -> TrainedModel:
    """Train (or load from the cache) the model that ``config`` describes on ``train``.

    Keeps a checkpoint per epoch holding weights, optimizer state and the test-set logits (and the
    training-set logits with ``record_train_logits``), so later chapters can read per-epoch
    predictions without retraining. A distilled student (``config.distill_teacher``) trains its
    teacher first (or loads it from the cache), unless the trained ``teacher`` is passed.

    Resuming: with ``cache``, training starts after the last epoch whose checkpoint exists. It logs
    ``resuming <folder> from epoch k/E`` (logger ``saliency_sanity.training.train``, INFO; the progress bar
    starts at k too), and the result's ``resumed_from_epoch`` is k and ``epochs_run`` is E - k;
    every checkpoint written records ``resumed_from_epoch`` as well. Temporary files that a run
    killed mid-write left in the folder are removed first
    (:func:`saliency_sanity._core.cache.remove_stale_temporary_files`). A checkpoint that cannot be written
    (full disk, file-size limit) raises ``OSError`` naming it; the checkpoints already there are kept.
    """
    device = resolve_device(device)
    full_train, train = train, training_subset(config, train)
    fingerprint = data_fingerprint(train)
    key = {"train": config_key(config), "data": fingerprint, "test": data_fingerprint(test)}
    directory = (root or cache_root() / "models") / f"{config.arch}-{config_hash(key)}"
    soft = distill = None
    if config.distill_teacher is not None:
        if teacher is None:
            teacher = train_model(config.distill_teacher, full_train, test, device=device, cache=cache,
                                  progress=progress, root=root)
        soft, distill = student_targets(config, teacher, fingerprint)
        soft, distill = soft.to(device), distill.to(device)
    model = build_model(config.arch, in_channels=train.images.shape[1], num_classes=len(train.classes),
                        seed=config.seed).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict] = []
    records: dict = {}
    start = 0
    if cache:
        for stale in remove_stale_temporary_files(directory):
            log.info("removed %s, left by a run killed while writing it", stale)
        for epoch in range(config.epochs, 0, -1):
            path = directory / f"epoch_{epoch:03d}.pt"
            if path.exists():
                state = safe_torch_load(path, map_location=device)
                model.load_state_dict(state["state_dict"])
                opt.load_state_dict(state["optimizer"])
                history = _history_from(state)
                start = epoch
                break
        atomic_write_json(key, directory / "config.json")
    if 0 < start < config.epochs:
        log.info("resuming %s from epoch %d/%d (its checkpoint); %d epoch(s) left to train",
                 directory, start, config.epochs, config.epochs - start)
    elif start == config.epochs:
        log.info("loaded %s from the cache: all %d epochs checkpointed, nothing to train", directory, start)
    labels = training_labels(config, train.labels)
    desc = f"train {config.arch} seed {config.seed}" + (f" (resumed from epoch {start})" if start else "")
    bar = tqdm(range(start, config.epochs), desc=desc, total=config.epochs, initial=start,
               disable=not progress or start == config.epochs, leave=False)
    for epoch in bar:
        tic = time.perf_counter()
        train_loss, train_acc = _one_epoch(model, opt, train.images, labels, config, epoch, device, soft, distill)
        test_logits = predict_logits(model, test.images, device)
        test_loss = F.cross_entropy(test_logits, test.labels).item()
        test_acc = (test_logits.argmax(1) == test.labels).float().mean().item()
        record = {"test_logits": test_logits.half()}
        if config.record_train_logits:
            record["train_logits"] = predict_logits(model, train.images, device).float()
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                        "test_loss": test_loss, "test_acc": test_acc,
                        "seconds": time.perf_counter() - tic})
        records[epoch + 1] = record
        bar.set_postfix(test_acc=f"{test_acc:.3f}")
        if cache:
            atomic_torch_save({"state_dict": model.state_dict(), "optimizer": opt.state_dict(), **record,
                               "resumed_from_epoch": start,
                               "history": {k: torch.tensor([h[k] for h in history], dtype=torch.float64)
                                           for k in history[0]}},
                              directory / f"epoch_{epoch + 1:03d}.pt")
    model.eval()
    frame = pd.DataFrame(history)
    frame.insert(0, "arch", config.arch)
    frame.insert(1, "seed", config.seed)
    return TrainedModel(model, config, frame, directory, records, fingerprint, resumed_from_epoch=start,
                        epochs_run=config.epochs - start)


def student_targets(config: TrainConfig, teacher: TrainedModel,
                    fingerprint: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The soft labels [N, K] and the distilled-sample mask [N] that ``config``'s student trains on.

    Datta et al. (2023), TGTSS: the teacher's training-set probabilities at temperature T averaged
    over its epochs ``distill_from_epoch``..E (:func:`saliency_sanity.training.losses.distillation_targets`).
    """
    if config.distill_teacher is None:
        raise ValueError("config has no distill_teacher; set it to the teacher's TrainConfig")
    if teacher.config != config.distill_teacher:
        raise ValueError(f"the trained teacher's config {teacher.config} is not the student's distill_teacher "
                         f"{config.distill_teacher}; pass the matching teacher")
    if fingerprint is not None and teacher.fingerprint is not None and teacher.fingerprint != fingerprint:
        raise ValueError("the teacher was trained on other images than the student; train both on the same data")
    return distillation_targets(teacher.epoch_logits("train"), config.distill_temperature,
                                from_epoch=config.distill_from_epoch, only_unstable=config.distill_only_unstable)


def _history_from(state: dict) -> list[dict]:
    cols = state.get("history", {})
    n = len(next(iter(cols.values()))) if cols else 0
    return [{k: (int(v[i]) if k == "epoch" else float(v[i])) for k, v in cols.items()} for i in range(n)]


def training_loss(logits: torch.Tensor, labels: torch.Tensor, config: TrainConfig,
                  soft: torch.Tensor | None = None, distill: torch.Tensor | None = None) -> torch.Tensor:
    """The mean training loss of one batch under ``config``.

    Cross-entropy with ``label_smoothing``; for a distilled student, on the samples where
    ``distill`` is True, (1 - w) CE(hard) + w CE(``soft``) with w = ``distill_weight`` (Datta et al.
    2023); minus beta times the mean entropy of the predicted distribution (confidence penalty,
    Pereyra et al. 2017, Eq. 2).
    """
    if soft is None:
        loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
    else:
        hard = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing, reduction="none")
        w = config.distill_weight if distill is None else torch.where(distill, config.distill_weight, 0.0)
        loss = ((1 - w) * hard + w * soft_cross_entropy(logits, soft)).mean()
    if config.confidence_penalty:
        loss = loss - config.confidence_penalty * prediction_entropy(logits).mean()
    return loss


def _one_epoch(model, opt, images, labels, config: TrainConfig, epoch: int, device,
               soft=None, distill=None) -> tuple[float, float]:
    model.train()
    gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(len(labels), generator=gen)
    total_loss, correct = 0.0, 0
    for i in range(0, len(order), config.batch_size):
        idx = order[i:i + config.batch_size]
        xb, yb = images[idx].to(device), labels[idx].to(device)
        logits = model(xb)
        dev_idx = idx.to(device) if soft is not None else None
        loss = training_loss(logits, yb, config, None if soft is None else soft[dev_idx],
                             None if distill is None else distill[dev_idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total_loss += loss.item() * len(idx)
        correct += (logits.argmax(1) == yb).sum().item()
    model.eval()
    return total_loss / len(order), correct / len(order)



def train_profile_models(profile, *, archs=None, seeds=None, progress: bool = True,
                         **config_overrides) -> list[TrainedModel]:
    """Train (or load) every architecture x seed a :class:`~saliency_sanity.book.profiles.Profile` asks for."""
    from ..data.images import load_fashion_mnist

    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    runs = []
    for arch in archs or profile.archs:
        for seed in seeds if seeds is not None else profile.seeds[:1]:
            config = TrainConfig(arch=arch, seed=seed, epochs=profile.epochs, n_train=profile.n_train,
                                 **config_overrides)
            runs.append(train_model(config, train, test, device=profile.device, progress=progress))
    return runs
