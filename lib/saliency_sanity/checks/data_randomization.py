"""The data randomization test of Adebayo et al. (2018, Sec. 5) without confounds.

The permuted-label model memorises a small subset for many epochs; comparing its maps with the
main model's (all 60,000 images, a few epochs) mixes the effect of the labels with that of other
images, another batch size and another number of optimisation steps. :func:`matched_configs` gives
a true-label model that differs from the permuted-label one *only* in the labels: same seed (hence
the same initial weights, the same ``n_train`` images and the same batch order in every epoch), same
epochs, batch size and learning rate.
"""
from __future__ import annotations

from dataclasses import fields, replace
# imports of the test (merged by the clean-up pass)
import math
from typing import Iterable, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .._core.device import resolve_device
from .._core.draws import image_seeds
from .._core.validation import check_images, check_model
from ..data.images import ImageSet
from ..methods.many import attribute_many
from ..methods.requests import method_requests
from ..metrics.similarity import check_metrics
from ..training.config import TrainConfig, training_labels, training_subset
from ..training.train import TrainedModel, predict_logits, train_model
from .requests import DEFAULT_METRICS, _variant
from .tables import _image_ids, _null_index, _pair_rows, _stacked_similarities, canonical_order

KINDS = ("true", "permuted")  # the labels each model of a matched pair trains on
# Test images predicted after every epoch of both runs (for their test accuracy): a seeded subset,
# because predicting all 10,000 after each of the many epochs would cost more than the training.
TEST_IMAGES = 2_000


def matched_configs(profile, arch: str = "vgg") -> dict[str, TrainConfig]:
    """``{"true": ..., "permuted": ...}``: the configs of a matched pair for ``profile``.

    The permuted one is the model of the data randomization test (``permuted_n_train`` images,
    ``permuted_epochs`` epochs, batch size 64, the profile's first seed; the same training config as
    :meth:`saliency_sanity.book.chapter.Chapter.random_label_run`, though cached apart from it because
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
    :func:`~saliency_sanity.training.train.train_model`.

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




def data_randomization_test(model: nn.Module, random_label_model: nn.Module, x: torch.Tensor, methods: Iterable, *,
                            metrics: Sequence[str] = DEFAULT_METRICS, seed: int = 0, batch_size: int = 64,
                            image_ids: Sequence[int] | None = None, progress: bool = True,
                            background: float | None = 0.0) -> pd.DataFrame:
    """Similarity between the maps of a model trained on the true labels and of one trained on
    permuted labels (Adebayo et al. 2018, Sec. 5), each explaining its own top-1 class.

    A map that explains the model must differ: the second model has learned nothing about the
    relation between images and labels, only memorised them.

    Columns ``value`` (the similarity of the two models' maps), ``null`` (the same metric after the
    random-label model's map is permuted among the input's foreground pixels: what maps that share
    only the input's support score) and ``excess = value - null``.
    ``background`` (default 0.0) defines the input's background for the ``null`` column: the
    compared map's values are permuted among the pixels where some channel of the input differs
    from it (:func:`saliency_sanity.metrics.nulls.foreground_mask`; ``None``: among all pixels), the same
    permutation for an image (keyed by ``seed`` and the image's index). Maps must have the
    input's height and width.
    """
    for m in (model, random_label_model):
        check_model(m)
    check_images(x)
    requests = method_requests(methods)
    metrics = check_metrics(metrics)
    ids = _image_ids(image_ids, x)
    label_to_method = {lab: (name, _variant(name, opts)) for lab, name, opts in requests}
    device = next(model.parameters()).device
    parts = []
    for start in tqdm(range(0, len(x), batch_size), disable=not progress, desc="data randomization"):
        xb = x[start:start + batch_size].to(device)
        images = ids[start:start + len(xb)]
        seeds = image_seeds(seed, images)
        a = attribute_many(model, xb, "top1", requests, reduce=None, seed=seeds)
        b = attribute_many(random_label_model, xb, "top1", requests, reduce=None, seed=seeds)
        values, null = _stacked_similarities({lab: a[lab] for lab in label_to_method}, b, metrics,
                                             _null_index(xb, background, seed, images), tuple(xb.shape[-2:]))
        target_a, target_b = a["target"].cpu().numpy(), b["target"].cpu().numpy()
        for lab, (name, variant) in label_to_method.items():
            for metric, value in values[lab].items():
                parts.append(_pair_rows(value, null[lab][metric], method=name, variant=variant,
                                        label=lab, image=images, target_a=target_a, target_b=target_b,
                                        metric=metric))
    return canonical_order(pd.concat(parts, ignore_index=True), label=list(label_to_method), metric=metrics)
