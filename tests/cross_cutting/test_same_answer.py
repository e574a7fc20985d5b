"""Same answer everywhere: a check's table does not depend on the batch size, the number of torchrun
ranks or the run, because every random draw is keyed by (seed, image, purpose) and rows come in one
canonical order."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from saliency_sanity import attribute
from saliency_sanity.models.user import load_model
from saliency_sanity.cli.check import run_check
from saliency_sanity.checks import class_sensitivity, data_randomization_test, randomization_test
from saliency_sanity._core.draws import image_seeds, keyed_seed
from saliency_sanity.models.architectures import build_model

from helpers.paths import subprocess_env
from helpers.tiny_factory import unseeded

METHODS = "gradient,smoothgrad,gradcam"
CLOSE = dict(check_exact=False, rtol=0, atol=1e-6)
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def ten_images(tmp_path_factory):
    """Ten PNG images of different sizes in one folder, as a user would bring them."""
    folder = tmp_path_factory.mktemp("same") / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(10):
        size = (int(rng.integers(40, 120)), int(rng.integers(40, 120)))
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="module")
def state_dict(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "w.pt"
    torch.manual_seed(123)
    torch.save(unseeded().state_dict(), path)
    return path


def cli(launcher, args, out):
    result = subprocess.run([*launcher, "-m", "saliency_sanity", "check", "--model", "helpers.tiny_factory:unseeded",
                             "--methods", METHODS, "--device", "cpu", "--quiet", "--out", str(out), *args],
                            capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return pd.read_csv(out)


def as_csv(frame, tmp_path, name):
    """The table as the CLI writes and reads it, so that in-process and CLI tables compare alike."""
    frame.to_csv(tmp_path / name, index=False)
    return pd.read_csv(tmp_path / name)


@pytest.mark.parametrize("weights", ["none", "state_dict"])
def test_every_batch_size_and_rank_count_gives_the_batch16_table(weights, ten_images, state_dict, tmp_path):
    """Batch sizes 1, 7, 16 in one process and torchrun with 2 and 3 gloo ranks: one table, row order
    included, for a random-init factory model and for a state dict; SmoothGrad noise and the random
    class included."""
    w = str(state_dict) if weights == "state_dict" else "none"
    tables = {b: as_csv(run_check("helpers.tiny_factory:unseeded", ten_images, weights=w, methods=METHODS, device="cpu",
                                  batch_size=b, progress=False), tmp_path, f"b{b}.csv") for b in (1, 7, 16)}
    reference = tables.pop(16)
    assert len(reference) > 0 and {"randomization", "class_sensitivity"} == set(reference.test)
    assert (reference.pair == "top1 vs random").any() and (reference.label == "smoothgrad").any()
    runs = [(2, 3), (3, 3)] + ([(2, 16)] if weights == "none" else [])  # (ranks, batch); batch 16: rank 1 idle
    for ranks, batch in runs:
        tables[f"{ranks} ranks, batch {batch}"] = cli(
            [str(TORCHRUN), "--standalone", f"--nproc_per_node={ranks}", "--no-python", sys.executable],
            ["--images", str(ten_images), "--weights", w, "--batch-size", str(batch)],
            tmp_path / f"r{ranks}b{batch}.csv")
    for name, table in tables.items():
        pd.testing.assert_frame_equal(table, reference, **CLOSE, obj=f"{weights}, {name}")
    # ranks compute the very batches of one process: 2 and 3 ranks agree bit for bit
    pd.testing.assert_frame_equal(tables["2 ranks, batch 3"], tables["3 ranks, batch 3"], check_exact=True)


def test_two_runs_with_random_init_write_identical_csvs(ten_images, tmp_path):
    cli([sys.executable], ["--images", str(ten_images)], tmp_path / "a.csv")
    cli([sys.executable], ["--images", str(ten_images)], tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_random_init_is_keyed_by_the_seed_and_leaves_torch_generator_alone():
    state = torch.random.get_rng_state()
    a, b = (load_model("helpers.tiny_factory:unseeded", "none", seed=0).model.state_dict() for _ in range(2))
    other = load_model("helpers.tiny_factory:unseeded", "none", seed=1).model.state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], other["0.weight"])


def test_keyed_seeds_depend_on_every_part_of_the_key():
    base = keyed_seed(0, "image", 3)
    assert base == keyed_seed(0, "image", 3) and 0 <= base < 2 ** 63
    assert len({base, keyed_seed(1, "image", 3), keyed_seed(0, "image", 4), keyed_seed(0, "image", 3, "x")}) == 4
    assert image_seeds(5, [2, 0]) == [keyed_seed(5, "image", 2), keyed_seed(5, "image", 0)]
    with pytest.raises(TypeError, match="key parts"):
        keyed_seed(0, 1.5)


@pytest.fixture(scope="module")
def vgg():
    """In float64: float32 sums depend on the batch's shape (see the float32 test below)."""
    return build_model("vgg", seed=0).double().eval()


@pytest.fixture(scope="module")
def x():
    return torch.rand(9, 1, 28, 28, generator=torch.Generator().manual_seed(4), dtype=torch.float64)


def test_per_image_seeds_make_random_draws_independent_of_the_batch(vgg, x):
    """An image's random class and SmoothGrad map depend on its own seed, not on its batch mates;
    one int seed keeps the batch-wide draw (equal to Captum's usage)."""
    seeds = image_seeds(0, range(len(x)))
    for method in ("smoothgrad", "gradient"):
        whole = attribute(vgg, x, "random", method, seed=seeds, **({"n_samples": 3} if method == "smoothgrad" else {}))
        part = attribute(vgg, x[4:7], "random", method, seed=seeds[4:7],
                         **({"n_samples": 3} if method == "smoothgrad" else {}))
        torch.testing.assert_close(part, whole[4:7], rtol=0, atol=1e-6)
    batch_wide = attribute(vgg, x, "random", "smoothgrad", seed=0, n_samples=3)
    assert not torch.allclose(batch_wide[4:7], attribute(vgg, x[4:7], "random", "smoothgrad", seed=0, n_samples=3))
    with pytest.raises(ValueError, match="3 per-image seeds for a batch of 9"):
        attribute(vgg, x, "random", "gradient", seed=[1, 2, 3])
    with pytest.raises(TypeError, match="one int seed"):
        attribute(vgg, x[:1], "top1", "sound_mask", seed=[1], steps=1)


@pytest.mark.parametrize("check", ["randomization", "class_sensitivity", "data_randomization"])
def test_checks_give_one_table_for_any_batch_size_and_any_split(check, vgg, x):
    methods = ["gradient", ("smoothgrad", "smoothgrad", {"n_samples": 3}), "gradcam"]
    other = build_model("vgg", seed=1).double().eval()

    def run(images, ids=None, batch_size=16):
        common = dict(metrics=["spearman", "ssim"], batch_size=batch_size, image_ids=ids, progress=False)
        if check == "randomization":
            return randomization_test(vgg, images, methods, stages=[0, 1, -1], **common)
        if check == "class_sensitivity":
            return class_sensitivity(vgg, images, methods, **common)
        return data_randomization_test(vgg, other, images, methods, **common)

    reference = run(x)
    for b in (1, 7):
        pd.testing.assert_frame_equal(run(x, batch_size=b), reference, **CLOSE)
    # a shard of the images with their global indices gives exactly those rows of the whole table
    shard = run(x[4:7], ids=[4, 5, 6], batch_size=2)
    rows = reference[reference.image.isin([4, 5, 6])].reset_index(drop=True)
    pd.testing.assert_frame_equal(shard, rows, **CLOSE)
    with pytest.raises(ValueError, match="one index per image"):
        run(x[:3], ids=[0, 1])


def test_float32_batch_size_changes_only_rounding_and_spearman_by_adjacent_rank_swaps():
    """In float32 the convolution's sums depend on the batch's shape: maps agree to ~1e-6 of their
    scale, SSIM to 1e-5, and Spearman moves by at most a few swaps of adjacent ranks, each worth at
    most 12 / (n (n - 1)) for n pixels (2e-5 at 28 x 28). A finding, stated in the README."""
    net = build_model("vgg", seed=0).eval()
    x = torch.rand(9, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    a = randomization_test(net, x, ["gradient", "gradcam"], stages=[0, 1, -1], metrics=["spearman", "ssim"],
                           batch_size=16, progress=False)
    b = randomization_test(net, x, ["gradient", "gradcam"], stages=[0, 1, -1], metrics=["spearman", "ssim"],
                           batch_size=1, progress=False)
    assert a[["label", "stage", "image", "metric"]].equals(b[["label", "stage", "image", "metric"]])
    diff = (a.value - b.value).abs()
    swap = 12 / (784 * 783)
    assert diff[a.metric == "spearman"].max() <= 4 * swap
    assert diff[a.metric == "ssim"].max() <= 1e-5
    assert (diff[a.stage == 0] == 0).all()  # a map against itself: identical whatever the batch
