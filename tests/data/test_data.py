"""Fashion-MNIST IDX loading: lookup order, real format, corrupt and truncated files."""
import gzip

import numpy as np
import pytest
import torch

from saliency_sanity.data import images as data
from saliency_sanity.data.images import CorruptDatasetError, DatasetNotFoundError


def write_split(directory, n_train=20, n_test=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        suffix = ".gz" if gz else ""
        data.write_idx(directory / f"{split}-images-idx3-ubyte{suffix}", images)
        data.write_idx(directory / f"{split}-labels-idx1-ubyte{suffix}", labels)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_loads_idx_files_exactly(tmp_path, gz):
    arrays = write_split(tmp_path / "fm", gz=gz)
    train = data.load_fashion_mnist("train", directory=tmp_path / "fm")
    images, labels = arrays["train"]
    assert train.images.shape == (20, 1, 28, 28) and train.images.dtype == torch.float32
    assert torch.equal(train.images[:, 0], torch.from_numpy(images).float() / 255)
    assert torch.equal(train.labels, torch.from_numpy(labels.astype(np.int64)))
    assert train.classes[0] == "T-shirt/top" and len(train.classes) == 10
    assert len(data.load_fashion_mnist("test", directory=tmp_path / "fm")) == 10


def test_environment_variable_comes_first(tmp_path, monkeypatch):
    write_split(tmp_path / "mine")
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "mine"))
    assert data.find_fashion_mnist(download=False) == tmp_path / "mine"
    assert len(data.load_fashion_mnist("train")) == 20


def test_missing_dataset_lists_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(data, "LOCAL_DIR", tmp_path / "no-local")
    with pytest.raises(DatasetNotFoundError) as err:
        data.find_fashion_mnist(download=False)
    message = str(err.value)
    for place in ("nowhere", "no-debian", "no-local", "apt-get install dataset-fashion-mnist", "FASHION_MNIST_DIR"):
        assert place in message


def test_truncated_idx_is_an_error_not_garbage(tmp_path):
    write_split(tmp_path / "fm", gz=False)
    path = tmp_path / "fm" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptDatasetError, match="truncated or corrupt"):
        data.load_fashion_mnist("train", directory=tmp_path / "fm")


def test_truncated_gzip_is_an_error(tmp_path):
    write_split(tmp_path / "fm", gz=True)
    path = tmp_path / "fm" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CorruptDatasetError, match="cannot be read"):
        data.read_idx(path)


def test_bad_magic_number(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CorruptDatasetError, match="not an IDX file"):
        data.read_idx(path)


def test_label_out_of_range_is_rejected(tmp_path):
    write_split(tmp_path / "fm")
    data.write_idx(tmp_path / "fm" / "train-labels-idx1-ubyte.gz", np.full(20, 12, dtype=np.uint8))
    with pytest.raises(CorruptDatasetError, match="not a Fashion-MNIST class"):
        data.load_fashion_mnist("train", directory=tmp_path / "fm")


def test_images_and_labels_must_match(tmp_path):
    write_split(tmp_path / "fm")
    data.write_idx(tmp_path / "fm" / "train-labels-idx1-ubyte.gz", np.zeros(7, dtype=np.uint8))
    with pytest.raises(CorruptDatasetError, match="do not match"):
        data.load_fashion_mnist("train", directory=tmp_path / "fm")


def test_idx_roundtrip_for_every_type(tmp_path):
    for dtype in (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64):
        array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
        data.write_idx(tmp_path / "a.idx", array)
        assert np.array_equal(data.read_idx(tmp_path / "a.idx"), array)


def test_subset_per_class_and_seeded():
    ds = data.synthetic(100)
    sub = ds.subset(per_class=2, seed=3)
    assert sorted(sub.labels.tolist()) == sorted(list(range(10)) * 2)
    assert torch.equal(ds.subset(10, seed=1).images, ds.subset(10, seed=1).images)
    assert not torch.equal(ds.subset(10, seed=1).labels, ds.subset(10, seed=2).labels)


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown split"):
        data.load_fashion_mnist("validation", directory=".")


@pytest.mark.skipif(not (data.DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz").exists(), reason="Debian dataset not installed")
def test_real_fashion_mnist_test_split():
    test = data.load_fashion_mnist("test", directory=data.DEBIAN_DIR)
    assert test.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert 0.25 < test.images.mean().item() < 0.32
