"""Deterministic training, per-epoch checkpoints and the config-hash cache."""
import pytest
import torch

from saliency_sanity._core import cache
from saliency_sanity.data.images import synthetic
from saliency_sanity.training.train import TrainConfig, train_model

from helpers.model_state import identical, weights


@pytest.fixture(scope="module")
def toy():
    return synthetic(96, seed=0), synthetic(40, seed=1)


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_same_seed_gives_bit_identical_weights(arch, toy, tmp_path):
    cfg = TrainConfig(arch=arch, epochs=2, batch_size=32, seed=3)
    a = train_model(cfg, *toy, device="cpu", cache=False, progress=False)
    b = train_model(cfg, *toy, device="cpu", cache=False, progress=False)
    assert identical(weights(a.model), weights(b.model))
    c = train_model(TrainConfig(arch=arch, epochs=2, batch_size=32, seed=4), *toy, device="cpu", cache=False,
                    progress=False)
    assert not identical(weights(a.model), weights(c.model))


def test_learns_the_toy_task(toy):
    run = train_model(TrainConfig(arch="vgg", epochs=5, batch_size=16), *toy, device="cpu",
                      cache=False, progress=False)
    assert run.history["test_acc"].iloc[-1] > 0.9
    assert list(run.history["epoch"]) == [1, 2, 3, 4, 5]


def test_cache_hit_miss_and_per_epoch_checkpoints(toy, isolated_cache):
    cfg = TrainConfig(arch="vgg", epochs=2, batch_size=32)
    first = train_model(cfg, *toy, device="cpu", progress=False)
    assert sorted(p.name for p in first.directory.glob("epoch_*.pt")) == ["epoch_001.pt", "epoch_002.pt"]
    stamp = (first.directory / "epoch_002.pt").stat().st_mtime_ns
    again = train_model(cfg, *toy, device="cpu", progress=False)  # hit: nothing retrained
    assert (again.directory / "epoch_002.pt").stat().st_mtime_ns == stamp
    assert identical(weights(first.model), weights(again.model))
    assert again.history.equals(first.history)
    assert first.test_logits(1).shape == (40, 10)
    changed = train_model(TrainConfig(arch="vgg", epochs=2, batch_size=32, lr=5e-4), *toy, device="cpu",
                          progress=False)
    assert changed.directory != first.directory  # miss on a changed parameter
    other_data = train_model(cfg, synthetic(96, seed=7), toy[1], device="cpu", progress=False)
    assert other_data.directory != first.directory  # miss on changed data


def test_resume_after_interruption_matches_uninterrupted(toy):
    full = train_model(TrainConfig(arch="vgg", epochs=3, batch_size=32), *toy, device="cpu", cache=False,
                       progress=False)
    part = train_model(TrainConfig(arch="vgg", epochs=3, batch_size=32), *toy, device="cpu", progress=False)
    (part.directory / "epoch_003.pt").unlink()  # as if killed during epoch 3
    resumed = train_model(TrainConfig(arch="vgg", epochs=3, batch_size=32), *toy, device="cpu", progress=False)
    assert identical(weights(full.model), weights(resumed.model))
    assert list(resumed.history["epoch"]) == [1, 2, 3]


def test_permuted_labels_are_a_permutation(toy):
    from saliency_sanity.training.train import training_labels

    labels = toy[0].labels
    permuted = training_labels(TrainConfig(permute_labels=True), labels)
    assert sorted(permuted.tolist()) == sorted(labels.tolist()) and not torch.equal(permuted, labels)


def test_bad_config():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "epoch_001.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="delete it to recompute"):
        cache.safe_torch_load(path)


def test_pickled_object_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        cache.safe_torch_load(path)


def test_config_hash_is_stable_and_sensitive():
    assert cache.config_hash(TrainConfig()) == cache.config_hash(TrainConfig())
    assert cache.config_hash(TrainConfig()) != cache.config_hash(TrainConfig(seed=1))
    with pytest.raises(TypeError, match="cannot hash"):
        cache.config_hash({"f": object()})


def test_atomic_write_leaves_no_partial_file(tmp_path):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.atomic_torch_save({"x": Boom()}, tmp_path / "out.pt")
    assert list(tmp_path.iterdir()) == []
