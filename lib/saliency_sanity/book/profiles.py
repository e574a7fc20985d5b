"""Run profiles: how much work every notebook does. Defined once here, read by notebooks and the CLI."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace


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
    # data randomization test: images memorised with permuted labels; a true-label model is trained on the
    # same images with the same config (saliency_sanity.checks.data_randomization.matched_configs)
    permuted_n_train: int = 2_000
    # enough for > 95 % training accuracy on 2,000 images (measured on the CPU with the final weights:
    # 99.9 % of the permuted labels, 100 % of the true ones); smoke's 8 epochs on 256 images are not
    permuted_epochs: int = 40
    # test images whose maps are made for all 10 labels (completeness/soundness): >= 100 so that "sound or
    # not" rests on enough images (issue #15). Training the masks against random training images costs ~12x
    # the mean fill per step (measured: 6.4 s vs 0.5 s per step for 1,000 masks on 2 CPU cores), so these
    # 100 images are most of the default build's time (notebook 05, ~1 h on 2 cores)
    soundness_images: int = 100
    # Adam steps of the sound-mask method, chosen from its loss curve: on 3 test images x 10 labels (smoke
    # models, 10 random training images per step, 2,000 steps), the 100-step mean of the mean loss changes
    # by 3.2 %, 1.7 %, then 0.2 % from one block of 100 steps to the next; after step 400 it drifts by
    # 1 % in all over the remaining 1,600 steps, within the noise of the random fills (step-to-step SD 6 %).
    mask_steps: int = 400
    mask_n_fill: int = 10  # random training images per mask and step filling the masked pixels (Gupta et al.: 10)
    soundness_ablation_images: int = 10  # of the soundness images, those the mask's TV x upsampling ablation uses
    stability_n_train: int | None = 6_000  # instability chapter: training images of every retraining run
    # ... and its epochs: >= 5, as the within-run label entropy (which flags the images that localized
    # distillation smooths) is taken over a run's epochs (short runs: the chapter trains ~31 models)
    stability_epochs: int = 5
    stability_images: int = 50  # test images whose maps are compared across seeds
    stability_test_images: int | None = 5_000  # test images predicted after every epoch of every run
    archs: tuple[str, ...] = ("vgg", "resnet")
    # trained models per architecture in the randomization and class-sensitivity chapters: their intervals
    # resample these seeds, then images, and each model is randomized with its own seed (>= 3: the scorecard)
    model_seeds: tuple[int, ...] = (0, 1, 2)
    # noisy copies per map of the smooth MPRT (Hedström et al. 2023; Quantus's default 50, "set based on
    # ImageNet experiment ... update the value according to your use case"): 10 on 2 CPU cores, 50 in full
    smprt_samples: int = 10
    device: str = "auto"

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "smoke": Profile("smoke", n_train=3_000, epochs=2, seeds=(0, 1), n_images=8, ig_steps=8,
                     smoothgrad_samples=4, permuted_n_train=256, permuted_epochs=8, soundness_images=3,
                     mask_steps=20, stability_n_train=600, stability_epochs=2, stability_images=6,
                     stability_test_images=500, model_seeds=(0, 1), smprt_samples=2),
    # 50 test images x 3 model seeds: 150 explained images per architecture, intervals over seeds and images
    "default": Profile("default", n_train=None, epochs=4, seeds=(0, 1, 2, 3, 4), n_images=50,
                       ig_steps=32, smoothgrad_samples=16),
    "full": Profile("full", n_train=None, epochs=10, seeds=tuple(range(10)), n_images=1000,
                    ig_steps=64, smoothgrad_samples=50, soundness_images=200, soundness_ablation_images=20,
                    stability_n_train=None, stability_epochs=10, stability_images=200,
                    stability_test_images=None, model_seeds=tuple(range(5)), smprt_samples=50),
}


# How long a build from an empty cache may take on 2 CPU cores (issue #17), minutes of notebook execution;
# the reproducibility chapter compares the recorded run times with them
TIME_GOAL_MINUTES = {"smoke": 5, "default": 30}


def get_profile(name: str, **overrides) -> Profile:
    """The profile called ``name`` with notebook parameters that are not None overriding its fields.

    Overrides are type-checked, because papermill passes whatever the user typed (``-p epochs two``).
    """
    if not isinstance(name, str) or name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {list(PROFILES)}")
    base = PROFILES[name]
    changes = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in base.__dataclass_fields__ or key == "name":
            raise ValueError(f"unknown profile parameter {key!r}; valid: {sorted(set(base.__dataclass_fields__) - {'name'})}")
        default = getattr(base, key)
        if isinstance(default, tuple):
            if isinstance(value, int) and not isinstance(value, bool):
                value = tuple(range(value))
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise TypeError(f"parameter {key} must be a list of integers (or a count), got {value!r}")
            value = tuple(value)
            if key in ("seeds", "model_seeds") and len(value) == 0:
                raise ValueError(f"parameter {key} must name at least one seed")
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError(f"parameter {key} must be a string, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"parameter {key} must be an integer, got {value!r} ({type(value).__name__})")
        elif value < 1:
            raise ValueError(f"parameter {key} must be >= 1, got {value}")
        changes[key] = value
    return replace(base, **changes) if changes else base
