"""What every notebook needs first: the profile, the trained models, test images, a figure saver.

Keeps the notebooks short: ``ch = Chapter.open(profile, figures_dir)`` replaces the same ten lines
of set-up in each of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from .figure_style import save_figure
from .._core.device import resolve_device
from ..data.images import ImageSet, load_fashion_mnist
from ..training.config import TrainConfig
from ..training.train import TrainedModel, train_model, train_profile_models
from .profiles import Profile, get_profile


@dataclass
class Chapter:
    profile: Profile
    figures_dir: Path
    seed: int = 0
    saved: list = field(default_factory=list)

    @classmethod
    def open(cls, profile: str, figures_dir: str | Path = "book/figures", **overrides) -> "Chapter":
        """Resolve the profile with the notebook's parameters (None = profile default)."""
        return cls(get_profile(profile, **overrides), Path(figures_dir))

    @property
    def device(self) -> torch.device:
        return resolve_device(self.profile.device)

    @cached_property
    def runs(self) -> dict[str, TrainedModel]:
        """The trained model of each architecture (first seed), loaded from the cache if present."""
        runs = train_profile_models(self.profile, seeds=self.profile.seeds[:1])
        return {run.config.arch: run for run in runs}

    def random_label_run(self, arch: str = "vgg") -> TrainedModel:
        """The model of the data randomization test (Adebayo et al. 2018, Sec. 5): the same
        architecture trained on a subset with permuted labels until it memorises them."""
        config = TrainConfig(arch=arch, seed=self.profile.seeds[0], epochs=self.profile.permuted_epochs,
                             n_train=self.profile.permuted_n_train, batch_size=64, permute_labels=True)
        return train_model(config, load_fashion_mnist("train"), self.test, device=self.profile.device)

    @cached_property
    def seed_runs(self) -> dict[tuple[str, int], TrainedModel]:
        """The trained model of every architecture and seed of ``profile.model_seeds``."""
        runs = train_profile_models(self.profile, seeds=self.profile.model_seeds, progress=False)
        return {(run.config.arch, run.config.seed): run for run in runs}

    @property
    def tables_dir(self) -> Path:
        """Where the notebooks leave the tidy tables the scorecard reads (beside the executed notebooks)."""
        return self.figures_dir.parent / "generated" / "tables"

    def save_table(self, frame, name: str) -> Path:
        """Keep ``frame`` as ``<tables_dir>/<name>.csv``, tagged with the profile that made it."""
        from .._core.cache import atomic_write_text

        tagged = frame.assign(profile=self.profile.name)
        return atomic_write_text(tagged.to_csv(index=False, float_format="%.17g"), self.tables_dir / f"{name}.csv")

    def read_table(self, name: str, notebook: str):
        """A table another notebook saved with this profile; a clear error when it is missing or stale."""
        import pandas as pd

        path = self.tables_dir / f"{name}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run notebooks/{notebook} with profile "
                                    f"{self.profile.name!r} first (`python -m saliency_sanity reproduce`)")
        frame = pd.read_csv(path)
        made = set(frame.pop("profile").unique())
        if made != {self.profile.name}:
            raise ValueError(f"{path} was made with profile {sorted(made)}, not {self.profile.name!r}: "
                             f"rerun notebooks/{notebook} with this profile")
        return frame

    @property
    def models(self) -> dict[str, torch.nn.Module]:
        return {arch: run.model.to(self.device).eval() for arch, run in self.runs.items()}

    @cached_property
    def test(self) -> ImageSet:
        return load_fashion_mnist("test")

    def images(self, n: int | None = None) -> ImageSet:
        """``n`` (default: the profile's ``n_images``) seeded test images."""
        return self.test.subset(n or self.profile.n_images, seed=self.seed)

    def one_per_class(self) -> ImageSet:
        return self.test.subset(per_class=1, seed=self.seed)

    def save(self, fig, name: str) -> None:
        """Save a figure under its stable name (PNG + SVG) in the book's figures folder."""
        fig = getattr(fig, "figure", fig)  # seaborn grids carry their matplotlib figure
        self.saved += save_figure(fig, name, self.figures_dir)

    def method_options(self) -> dict:
        """Per-method options the profile sets (sample and step counts)."""
        return {"integrated_gradients": {"steps": self.profile.ig_steps},
                "smoothgrad": {"n_samples": self.profile.smoothgrad_samples}}
