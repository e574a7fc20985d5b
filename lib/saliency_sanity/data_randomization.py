"""The data randomization test of Adebayo et al. (2018, Sec. 5) without confounds.

The permuted-label model memorises a small subset for many epochs; comparing its maps with the
main model's (all 60,000 images, a few epochs) mixes the effect of the labels with that of other
images, another batch size and another number of optimisation steps. :func:`matched_configs` gives
a true-label model that differs from the permuted-label one *only* in the labels: same seed (hence
the same initial weights, the same ``n_train`` images and the same batch order in every epoch), same
epochs, batch size and learning rate.
"""
from __future__ import annotations

import math
from dataclasses import fields, replace

import torch

from .data import ImageSet
from .device import resolve_device
from .training import (TrainConfig, TrainedModel, predict_logits, train_model, training_labels,
                       training_subset)

KINDS = ("true", "permuted")  # the labels each model of a matched pair trains on
# Test images predicted after every epoch of both runs (for their test accuracy): a seeded subset,
# because predicting all 10,000 after each of the many epochs would cost more than the training.
TEST_IMAGES = 2_000


def matched_configs(profile, arch: str = "vgg") -> dict[str, TrainConfig]:
    """``{"true": ..., "permuted": ...}``: the configs of a matched pair for ``profile``.

    The permuted one is the model of the data randomization test (``permuted_n_train`` images,
    ``permuted_epochs`` epochs, batch size 64, the profile's first seed; the same training config as
    :meth:`saliency_sanity.chapter.Chapter.random_label_run`, though cached apart from it because
    :func:`train_matched_pair` predicts a test subset); the true-label one is the same config with
    ``permute_labels=False``.
    """
    permuted = TrainConfig(arch=arch, seed=profile.seeds[0], epochs=profile.permuted_epochs,
                           n_train=profile.permuted_n_train, batch_size=64, permute_labels=True)
    return {"true": replace(permuted, permute_labels=False), "permuted": permuted}


def config_differences(a: TrainConfig, b: TrainConfig) -> list[str]:
    """The names of the fields in which two configs differ."""
    return [f.name for f in fields(TrainConfig) if getattr(a, f.name) != getattr(b, f.name)]


def optimisation_steps(config: TrainConfig, n_images: int) -> int:
    """Optimizer steps of a run of ``config`` on ``n_images`` training images (the last batch may be short)."""
    n = n_images if config.n_train is None else min(config.n_train, n_images)
    return math.ceil(n / config.batch_size) * config.epochs


def train_matched_pair(profile, train: ImageSet, test: ImageSet, arch: str = "vgg", *, device=None,
                       test_images: int | None = TEST_IMAGES, **kwargs) -> dict[str, TrainedModel]:
    """Train (or load from the cache) both models of :func:`matched_configs`; ``kwargs`` go to
    :func:`~saliency_sanity.training.train_model`.

    Both runs report their test accuracy on the same seeded ``test_images`` of ``test`` (None: all);
    the test images do not change the training, only what is predicted after every epoch.
    """
    device = profile.device if device is None else device
    if test_images is not None and test_images < len(test):
        test = test.subset(test_images, seed=0)
    return {kind: train_model(config, train, test, device=device, **kwargs)
            for kind, config in matched_configs(profile, arch).items()}


def fit_accuracy(run: TrainedModel, train: ImageSet, *, device="auto") -> float:
    """Accuracy of the final model, in eval mode, on the images it was trained on, against the labels
    it was trained on (the permuted ones for a permuted-label model): how well it fits them.

    The ``train_acc`` of the history is the running accuracy of the last epoch, counted while the
    weights still change; this is the accuracy of the weights that are explained.
    """
    images = training_subset(run.config, train)
    labels = training_labels(run.config, images.labels)
    logits = predict_logits(run.model, images.images, resolve_device(device))
    return float((logits.argmax(1) == labels).float().mean())


def label_agreement(config: TrainConfig, train: ImageSet) -> float:
    """Fraction of the training images whose training label under ``config`` is the true label
    (1 without ``permute_labels``; about 1/K with it)."""
    images = training_subset(config, train)
    return float((training_labels(config, images.labels) == images.labels).float().mean())


def same_training_images(a: TrainConfig, b: TrainConfig, train: ImageSet) -> bool:
    """Whether two configs train on the same images in the same order."""
    x, y = training_subset(a, train), training_subset(b, train)
    return x.images.shape == y.images.shape and bool(torch.equal(x.images, y.images))
