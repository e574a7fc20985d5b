"""Seeded, deterministic training with per-epoch checkpoints cached under a hash of the config.

Same config and data -> bit-identical weights on CPU: the shuffling order of every epoch is drawn
from a generator seeded by (seed, epoch), so an interrupted run resumes from its last epoch and
ends exactly where an uninterrupted one would.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .cache import atomic_torch_save, atomic_write_json, cache_root, config_hash, safe_torch_load
from .data import ImageSet
from .models import build_model


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model; its hash names the checkpoint folder."""

    arch: str = "vgg"
    seed: int = 0
    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    n_train: int | None = None
    permute_labels: bool = False  # data randomization test (Adebayo et al. 2018, Sec. 5)
    label_smoothing: float = 0.0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {self}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass
class TrainedModel:
    model: nn.Module
    config: TrainConfig
    history: pd.DataFrame
    directory: Path

    def checkpoint(self, epoch: int) -> dict:
        """The stored state of ``epoch`` (1-based): weights and the test-set logits after it."""
        return safe_torch_load(self.directory / f"epoch_{epoch:03d}.pt")

    def test_logits(self, epoch: int | None = None) -> torch.Tensor:
        return self.checkpoint(epoch or self.config.epochs)["test_logits"].float()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def data_fingerprint(data: ImageSet) -> str:
    """A short digest of images and labels, so a different dataset never hits a cached model."""
    h = hashlib.sha256()
    h.update(str(tuple(data.images.shape)).encode())
    h.update(data.labels.numpy().tobytes())
    h.update(data.images[:: max(1, len(data) // 512)].numpy().tobytes())
    return h.hexdigest()[:16]


def training_labels(config: TrainConfig, labels: torch.Tensor) -> torch.Tensor:
    if not config.permute_labels:
        return labels
    gen = torch.Generator().manual_seed(10_000 + config.seed)
    return labels[torch.randperm(len(labels), generator=gen)]


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
                cache: bool = True, progress: bool = True, root: Path | None = None) -> TrainedModel:
    """Train (or load from the cache) the model that ``config`` describes on ``train``.

    Keeps a checkpoint per epoch holding weights, optimizer state and the test-set logits, so
    later chapters can read per-epoch predictions without retraining.
    """
    device = resolve_device(device)
    if config.n_train is not None:
        train = train.subset(config.n_train, seed=config.seed)
    key = {"train": asdict(config), "data": data_fingerprint(train), "test": data_fingerprint(test)}
    directory = (root or cache_root() / "models") / f"{config.arch}-{config_hash(key)}"
    model = build_model(config.arch, in_channels=train.images.shape[1], num_classes=len(train.classes),
                        seed=config.seed).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict] = []
    start = 0
    if cache:
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
    labels = training_labels(config, train.labels)
    bar = tqdm(range(start, config.epochs), desc=f"train {config.arch} seed {config.seed}",
               disable=not progress or start == config.epochs, leave=False)
    for epoch in bar:
        tic = time.perf_counter()
        train_loss, train_acc = _one_epoch(model, opt, train.images, labels, config, epoch, device)
        test_logits = predict_logits(model, test.images, device)
        test_loss = F.cross_entropy(test_logits, test.labels).item()
        test_acc = (test_logits.argmax(1) == test.labels).float().mean().item()
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                        "test_loss": test_loss, "test_acc": test_acc,
                        "seconds": time.perf_counter() - tic})
        bar.set_postfix(test_acc=f"{test_acc:.3f}")
        if cache:
            atomic_torch_save({"state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                               "test_logits": test_logits.half(),
                               "history": {k: torch.tensor([h[k] for h in history], dtype=torch.float64)
                                           for k in history[0]}},
                              directory / f"epoch_{epoch + 1:03d}.pt")
    model.eval()
    frame = pd.DataFrame(history)
    frame.insert(0, "arch", config.arch)
    frame.insert(1, "seed", config.seed)
    return TrainedModel(model, config, frame, directory)


def _history_from(state: dict) -> list[dict]:
    cols = state.get("history", {})
    n = len(next(iter(cols.values()))) if cols else 0
    return [{k: (int(v[i]) if k == "epoch" else float(v[i])) for k, v in cols.items()} for i in range(n)]


def _one_epoch(model, opt, images, labels, config: TrainConfig, epoch: int, device) -> tuple[float, float]:
    model.train()
    gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(len(labels), generator=gen)
    total_loss, correct = 0.0, 0
    for i in range(0, len(order), config.batch_size):
        idx = order[i:i + config.batch_size]
        xb, yb = images[idx].to(device), labels[idx].to(device)
        logits = model(xb)
        loss = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total_loss += loss.item() * len(idx)
        correct += (logits.argmax(1) == yb).sum().item()
    model.eval()
    return total_loss / len(order), correct / len(order)


def with_seed(config: TrainConfig, seed: int) -> TrainConfig:
    return replace(config, seed=seed)


def train_profile_models(profile, *, archs=None, seeds=None, progress: bool = True,
                         **config_overrides) -> list[TrainedModel]:
    """Train (or load) every architecture x seed a :class:`~saliency_sanity.profiles.Profile` asks for."""
    from .data import load_fashion_mnist

    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    runs = []
    for arch in archs or profile.archs:
        for seed in seeds if seeds is not None else profile.seeds[:1]:
            config = TrainConfig(arch=arch, seed=seed, epochs=profile.epochs, n_train=profile.n_train,
                                 **config_overrides)
            runs.append(train_model(config, train, test, device=profile.device, progress=progress))
    return runs
