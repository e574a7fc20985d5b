"""Random draws keyed by what they belong to, never by the batch, the rank or the process count.

A check's result must not depend on how its images are batched or split across ``torchrun``
ranks. Every random draw in a check is therefore a function of a key: the user's ``seed``, the
image's global index, the purpose of the draw (the "random" class, SmoothGrad's noise, a model's
initialisation) and, where it applies, the method, stage and layer. :func:`keyed_seed` hashes
such a key to a 63-bit seed; :func:`image_seeds` gives one per image, which the methods accept as
their ``seed`` (a sequence of ints, one per image of the batch) and turn into one CPU generator
per image and purpose with :func:`image_generators`.
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Sequence, Union

import torch

Seed = Union[int, Sequence[int], torch.Tensor]


def keyed_seed(seed: int, *key) -> int:
    """A 63-bit seed that depends only on ``seed`` and the parts of ``key`` (ints and strings).

    blake2b of their ``repr``: stable across processes, platforms and Python's hash randomisation.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    for part in key:
        if isinstance(part, bool) or not isinstance(part, (int, str)):
            raise TypeError(f"key parts must be ints or strings, got {part!r}")
    digest = hashlib.blake2b(repr((seed, *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def image_seeds(seed: int, image_ids: Sequence[int], *key) -> list[int]:
    """One seed per image, keyed by ``(seed, "image", global image index, *key)``."""
    return [keyed_seed(seed, "image", int(i), *key) for i in image_ids]


def per_image(seed: Seed, batch: int) -> list[int] | None:
    """The per-image seeds in ``seed`` (a sequence or 1-D tensor of ``batch`` ints), or None for
    one int seed (then the whole batch shares one generator, as before per-image keys existed)."""
    if isinstance(seed, bool):
        raise TypeError("seed must be an int or one int per image, not a bool")
    if isinstance(seed, int):
        return None
    if isinstance(seed, torch.Tensor):
        if seed.dim() != 1 or seed.is_floating_point():
            raise TypeError(f"a seed tensor must be 1-D and hold integers, got shape {tuple(seed.shape)}, "
                            f"dtype {seed.dtype}")
        seed = seed.tolist()
    if not isinstance(seed, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seed):
        raise TypeError(f"seed must be an int or a sequence of ints (one per image), got {seed!r}")
    if len(seed) != batch:
        raise ValueError(f"got {len(seed)} per-image seeds for a batch of {batch} images")
    return list(seed)


def image_generators(seed: Seed, batch: int, purpose: str) -> list[torch.Generator] | None:
    """One CPU generator per image for ``purpose`` (e.g. ``"random class"``), or None for an int
    seed. CPU generators so that CPU and GPU runs draw the same numbers."""
    seeds = per_image(seed, batch)
    if seeds is None:
        return None
    return [torch.Generator().manual_seed(keyed_seed(s, purpose)) for s in seeds]


def single_seed(seed: Seed, method: str) -> int:
    """The int seed of a method that draws for the whole batch at once; one seed per image is
    refused, because that method's result would still depend on how the images are batched."""
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    raise TypeError(f"{method} draws its random numbers for the whole batch and takes one int seed, "
                    f"not {type(seed).__name__}; its result depends on the batch")


@contextlib.contextmanager
def seeded_init(seed: int):
    """Seed torch's global CPU generator from ``seed`` for a model constructor's random
    initialisation; the generator's previous state is restored on exit."""
    with torch.random.fork_rng(devices=[]):
        # CPU only: torch.manual_seed would also reseed (and leave changed) every CUDA generator
        torch.random.default_generator.manual_seed(keyed_seed(seed, "model initialisation"))
        yield
