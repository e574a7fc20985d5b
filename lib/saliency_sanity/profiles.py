"""Run profiles: how much work every notebook does. Defined once here, read by notebooks and the CLI."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    """Sizes of one reproduction run. ``smoke`` is the CI path, ``default`` the embedded
    Fashion-MNIST reproduction on 2 CPU cores, ``full`` more images, seeds and stages for a GPU."""

    name: str
    n_train: int | None  # training images (None = all 60,000)
    epochs: int
    seeds: tuple[int, ...]  # retraining seeds for the instability chapter
    n_images: int  # test images explained per check
    ig_steps: int
    smoothgrad_samples: int
    archs: tuple[str, ...] = ("vgg", "resnet")
    device: str = "auto"

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "smoke": Profile("smoke", n_train=2_000, epochs=1, seeds=(0, 1), n_images=8, ig_steps=8,
                     smoothgrad_samples=4),
    "default": Profile("default", n_train=None, epochs=4, seeds=(0, 1, 2, 3, 4), n_images=100,
                       ig_steps=32, smoothgrad_samples=16),
    "full": Profile("full", n_train=None, epochs=10, seeds=tuple(range(10)), n_images=1000,
                    ig_steps=64, smoothgrad_samples=50),
}


def get_profile(name: str) -> Profile:
    if not isinstance(name, str) or name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {list(PROFILES)}")
    return PROFILES[name]
