"""The matched pair of the data randomization test: two models that differ only in their labels."""
import pytest
import torch

from saliency_sanity.book.chapter import Chapter
from saliency_sanity.data.images import synthetic
from saliency_sanity.checks.data_randomization import (config_differences, fit_accuracy, label_agreement, matched_configs,
                                                optimisation_steps, same_training_images, train_matched_pair)
from saliency_sanity.models.architectures import build_model
from saliency_sanity.book.profiles import PROFILES, get_profile
from saliency_sanity.training.train import training_labels, training_subset


@pytest.fixture(scope="module")
def toy():
    return synthetic(96, seed=0), synthetic(40, seed=1)


@pytest.fixture(scope="module")
def tiny():
    return get_profile("smoke", permuted_n_train=48, permuted_epochs=2, device="cpu")


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_matched_configs_differ_only_in_labels(name):
    pair = matched_configs(PROFILES[name], "vgg")
    assert set(pair) == {"true", "permuted"}
    assert config_differences(pair["true"], pair["permuted"]) == ["permute_labels"]
    assert pair["permuted"].permute_labels and not pair["true"].permute_labels
    assert pair["permuted"].n_train == PROFILES[name].permuted_n_train
    assert pair["permuted"].epochs == PROFILES[name].permuted_epochs
    steps = {kind: optimisation_steps(c, 60_000) for kind, c in pair.items()}
    assert steps["true"] == steps["permuted"] > 0


def test_permuted_config_is_the_chapters_random_label_model(monkeypatch):
    """Same config as Chapter.random_label_run, so the permuted model keeps its cache folder."""
    seen = {}
    monkeypatch.setattr("saliency_sanity.book.chapter.train_model", lambda config, *a, **k: seen.setdefault("c", config))
    monkeypatch.setattr("saliency_sanity.book.chapter.load_fashion_mnist", lambda split: None)
    ch = Chapter.open("smoke")
    ch.__dict__["test"] = None  # cached_property: no dataset needed
    ch.random_label_run("vgg")
    assert seen["c"] == matched_configs(ch.profile, "vgg")["permuted"]


def test_same_images_same_order_other_labels(toy, tiny):
    train, _ = toy
    pair = matched_configs(tiny, "vgg")
    assert same_training_images(pair["true"], pair["permuted"], train)
    images = training_subset(pair["true"], train)
    assert len(images) == 48
    true_labels = training_labels(pair["true"], images.labels)
    permuted_labels = training_labels(pair["permuted"], images.labels)
    assert torch.equal(true_labels, images.labels)
    assert torch.equal(permuted_labels.sort().values, true_labels.sort().values)  # a permutation of them
    assert label_agreement(pair["true"], train) == 1.0
    assert label_agreement(pair["permuted"], train) < 0.5
    other = matched_configs(get_profile("smoke", permuted_n_train=48, seeds=[5]), "vgg")["true"]
    assert not same_training_images(pair["true"], other, train)


def test_optimisation_steps_count_the_short_last_batch():
    pair = matched_configs(get_profile("smoke", permuted_n_train=100, permuted_epochs=3), "vgg")
    assert optimisation_steps(pair["true"], 60_000) == 2 * 3  # batches of 64: 64 + 36
    assert optimisation_steps(pair["true"], 50) == 1 * 3  # fewer images than n_train


def test_train_matched_pair(toy, tiny, tmp_path):
    train, test = toy
    runs = train_matched_pair(tiny, train, test, "vgg", root=tmp_path, progress=False, test_images=16)
    assert runs["true"].test_logits().shape == runs["permuted"].test_logits().shape == (16, 10)
    assert runs["true"].fingerprint == runs["permuted"].fingerprint  # same images (and their true labels)
    assert runs["true"].directory != runs["permuted"].directory
    assert len(runs["true"].history) == len(runs["permuted"].history) == 2
    # the same seed, hence the same initial weights: the two runs' configs build identical models
    true_init = build_model("vgg", seed=runs["true"].config.seed).state_dict()
    permuted_init = build_model("vgg", seed=runs["permuted"].config.seed).state_dict()
    assert all(torch.equal(v, permuted_init[k]) for k, v in true_init.items())
    for kind, run in runs.items():
        acc = fit_accuracy(run, train, device="cpu")
        assert 0.0 <= acc <= 1.0
        images = training_subset(run.config, train)
        labels = training_labels(run.config, images.labels)
        expected = (run.model(images.images).argmax(1) == labels).float().mean().item()
        assert acc == pytest.approx(expected)
