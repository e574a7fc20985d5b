"""The book's checks over every architecture and training seed, each cached as a table.

The randomization, class-sensitivity and positive-handling chapters (and the scorecard) read the same
experiments; :func:`saliency_sanity._core.cache.cached_table` computes each (model, settings) once and the
other notebooks reuse it. Every model of ``profile.model_seeds`` is randomized with its own seed.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from .._core.cache import cached_table
from ..checks.class_pairs import class_sensitivity
from ..checks.convergence import cosine_convergence
from ..checks.efficient import efficient_mprt
from ..checks.mprt import randomization_test, smooth_mprt
from ..checks.requests import DEFAULT_METRICS, handling
from ..training.config import config_key

# the ResNet's residual blocks are its stages: randomizing inside a block breaks the identity path
UNITS = {"vgg": "layer", "resnet": "block"}


def _request_key(requests) -> list:
    return [[label, name, dict(options)] for label, name, options in requests]


def _runs(ch, seeds: Sequence[int] | None):
    for (arch, seed), run in ch.seed_runs.items():
        if seeds is None or seed in seeds:
            yield arch, seed, run


def _each_model(ch, name: str, settings: dict, check, seeds: Sequence[int] | None) -> pd.DataFrame:
    """``check(model, data, arch, seed)`` on every architecture x model seed of ``ch``, each result cached
    under ``name`` and the model's config plus ``settings``; columns ``arch`` and ``seed`` added."""
    data = ch.images()
    frames = []
    for arch, seed, run in _runs(ch, seeds):
        key = {"model": config_key(run.config), "fingerprint": run.fingerprint, **settings,
               "n_images": len(data), "image_seed": ch.seed}
        model = run.model.to(ch.device).eval()
        frame = cached_table(name, key, lambda: check(model, data, arch, seed))
        frames.append(frame.assign(arch=arch, seed=seed))
    return pd.concat(frames, ignore_index=True)


def _with_handling(frame: pd.DataFrame) -> pd.DataFrame:
    frame["handling"] = frame["label"].map(handling)
    return frame


def randomization_runs(ch, requests, *, mode: str = "cascading", metrics: Sequence[str] = DEFAULT_METRICS,
                       init: str = "truncated_normal", std: float = 0.01, explain: str = "current_top1",
                       seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """:func:`~saliency_sanity.checks.randomization_test` (top-down) on every architecture x model seed
    of the chapter ``ch``, each model re-initialised with its own seed; columns ``arch``, ``seed``,
    ``handling`` added. ``seeds`` restricts the model seeds (e.g. the independent test on the first)."""
    settings = {"requests": _request_key(requests), "mode": mode, "metrics": list(metrics), "init": init,
                "std": std, "explain": explain}
    return _with_handling(_each_model(ch, "randomization", settings, lambda model, data, arch, seed: randomization_test(
        model, data.images, requests, mode=mode, unit=UNITS[arch], metrics=metrics, explain=explain,
        labels=data.labels, init=init, std=std, seed=seed, progress=False), seeds))


def class_sensitivity_runs(ch, requests, *, pairs=(("top1", "bottom1"), ("top1", "random")),
                           metrics: Sequence[str] = DEFAULT_METRICS,
                           seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """:func:`~saliency_sanity.checks.class_sensitivity` on every architecture x model seed, with the
    "random" class drawn per seed; columns ``arch``, ``seed``, ``handling`` added."""
    settings = {"requests": _request_key(requests), "pairs": [list(p) for p in pairs], "metrics": list(metrics)}
    return _with_handling(_each_model(ch, "class_sensitivity", settings, lambda model, data, arch, seed: class_sensitivity(
        model, data.images, requests, pairs=pairs, metrics=metrics, seed=seed, progress=False), seeds))


def smooth_mprt_runs(ch, requests, *, n_samples: int, noise_magnitude: float = 0.1,
                     init: str = "truncated_normal", std: float = 0.01, explain: str = "current_top1",
                     seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """:func:`~saliency_sanity.checks.smooth_mprt` (Hedström et al. 2023) on every architecture x model
    seed: bottom-up, read on the trained and the fully randomized model only (``stages=[0, -1]``, Quantus's
    ``return_last_correlation``). Everything but the smoothing is the plain test's, so that the two differ
    in the smoothing alone: its init and std (the randomized weights are those of the plain test's last
    stage), its explained class (``explain``, the plain test's "current_top1") and its normalisation
    (the package's default, not Quantus's unclipped maps); ``arch``, ``seed``, ``handling`` added."""
    settings = {"requests": _request_key(requests), "n_samples": n_samples, "noise_magnitude": noise_magnitude,
                "init": init, "std": std, "explain": explain}
    return _with_handling(_each_model(ch, "smooth_mprt", settings, lambda model, data, arch, seed: smooth_mprt(
        model, data.images, requests, n_samples=n_samples, noise_magnitude=noise_magnitude, unit=UNITS[arch],
        init=init, std=std, explain=explain, normalize="default", stages=[0, -1], seed=seed, progress=False), seeds))


def efficient_mprt_runs(ch, requests, *, init: str = "truncated_normal", std: float = 0.01,
                        explain: str = "current_top1",
                        seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """:func:`~saliency_sanity.checks.efficient.efficient_mprt` (Hedström et al. 2023) on every architecture x
    model seed, randomized and explaining the class (``explain``) as the plain test; ``arch``, ``seed``,
    ``handling`` added."""
    settings = {"requests": _request_key(requests), "init": init, "std": std, "explain": explain}
    return _with_handling(_each_model(ch, "efficient_mprt", settings, lambda model, data, arch, seed: efficient_mprt(
        model, data.images, requests, unit=UNITS[arch], init=init, std=std, explain=explain, seed=seed,
        progress=False), seeds))


def convergence_runs(ch, requests, *, pair=("top1", "random"), seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """:func:`~saliency_sanity.checks.convergence.cosine_convergence` (Sixt et al. 2020) on every architecture x
    model seed; ``arch``, ``seed``, ``handling`` added."""
    settings = {"requests": _request_key(requests), "pair": list(pair)}
    return _with_handling(_each_model(ch, "convergence", settings, lambda model, data, arch, seed: cosine_convergence(
        model, data.images, requests, pair=pair, seed=seed, progress=False), seeds))
