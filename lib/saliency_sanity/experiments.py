"""The book's checks over every architecture and training seed, each cached as a table.

The randomization, class-sensitivity and positive-handling chapters (and the scorecard) read the same
experiments; :func:`saliency_sanity.cache.cached_table` computes each (model, settings) once and the
other notebooks reuse it. Every model of ``profile.model_seeds`` is randomized with its own seed.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from .cache import cached_table
from .checks import DEFAULT_METRICS, class_sensitivity, handling, randomization_test
from .training import config_key

# the ResNet's residual blocks are its stages: randomizing inside a block breaks the identity path
UNITS = {"vgg": "layer", "resnet": "block"}


def _request_key(requests) -> list:
    return [[label, name, dict(options)] for label, name, options in requests]


def _runs(ch, seeds: Sequence[int] | None):
    for (arch, seed), run in ch.seed_runs.items():
        if seeds is None or seed in seeds:
            yield arch, seed, run


def randomization_runs(ch, requests, *, mode: str = "cascading", metrics: Sequence[str] = DEFAULT_METRICS,
                       init: str = "truncated_normal", std: float = 0.01, explain: str = "current_top1",
                       seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """:func:`~saliency_sanity.checks.randomization_test` (top-down) on every architecture x model seed
    of the chapter ``ch``, each model re-initialised with its own seed; columns ``arch``, ``seed``,
    ``handling`` added. ``seeds`` restricts the model seeds (e.g. the independent test on the first)."""
    data = ch.images()
    frames = []
    for arch, seed, run in _runs(ch, seeds):
        key = {"model": config_key(run.config), "fingerprint": run.fingerprint, "requests": _request_key(requests),
               "mode": mode, "unit": UNITS[arch], "metrics": list(metrics), "init": init, "std": std,
               "explain": explain, "n_images": len(data), "image_seed": ch.seed}
        model = run.model.to(ch.device).eval()
        frame = cached_table("randomization", key, lambda: randomization_test(
            model, data.images, requests, mode=mode, unit=UNITS[arch], metrics=metrics, explain=explain,
            labels=data.labels, init=init, std=std, seed=seed, progress=False))
        frames.append(frame.assign(arch=arch, seed=seed))
    out = pd.concat(frames, ignore_index=True)
    out["handling"] = out["label"].map(handling)
    return out


def class_sensitivity_runs(ch, requests, *, pairs=(("top1", "bottom1"), ("top1", "random")),
                           metrics: Sequence[str] = DEFAULT_METRICS,
                           seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """:func:`~saliency_sanity.checks.class_sensitivity` on every architecture x model seed, with the
    "random" class drawn per seed; columns ``arch``, ``seed``, ``handling`` added."""
    data = ch.images()
    frames = []
    for arch, seed, run in _runs(ch, seeds):
        key = {"model": config_key(run.config), "fingerprint": run.fingerprint, "requests": _request_key(requests),
               "pairs": [list(p) for p in pairs], "metrics": list(metrics), "n_images": len(data),
               "image_seed": ch.seed}
        model = run.model.to(ch.device).eval()
        frame = cached_table("class_sensitivity", key, lambda: class_sensitivity(
            model, data.images, requests, pairs=pairs, metrics=metrics, seed=seed, progress=False))
        frames.append(frame.assign(arch=arch, seed=seed))
    out = pd.concat(frames, ignore_index=True)
    out["handling"] = out["label"].map(handling)
    return out
