"""`python -m saliency_sanity check`: your own model and image folder, single process and under torchrun."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from saliency_sanity.byom import default_layer, load_model
from saliency_sanity.check import run_check
from saliency_sanity.folder import IMAGENET_MEAN, load_image_folder

TESTS_DIR = Path(__file__).resolve().parent
KEYS = ["test", "label", "pair", "stage", "image", "metric"]


@pytest.fixture
def folder(tmp_path):
    """Five generated images in two class subfolders, of different sizes."""
    rng = np.random.default_rng(0)
    for i, (cls, size) in enumerate([("bird", (60, 80)), ("bird", (90, 70)), ("cat", (64, 64)),
                                     ("cat", (300, 260)), ("cat", (50, 120))]):
        (tmp_path / "images" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(tmp_path / "images" / cls / f"{i}.png")
    return tmp_path / "images"


def env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def test_folder_loader_preprocesses_like_imagenet(folder):
    data = load_image_folder(folder)
    assert data.images.shape == (5, 3, 224, 224)
    assert data.labels.tolist() == [0, 0, 1, 1, 1] and data.folder_classes == ["bird", "cat"]
    assert data.paths[0] == str(Path("bird") / "0.png")
    # a uniform grey image maps to (0.5 - mean) / std in every pixel
    Image.new("RGB", (30, 40), (128, 128, 128)).save(folder / "grey.png")
    grey = load_image_folder(folder).images[-1]
    expected = (128 / 255 - IMAGENET_MEAN[0]) / 0.229
    torch.testing.assert_close(grey[0], torch.full((224, 224), expected), rtol=1e-5, atol=1e-5)


def test_folder_errors(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(tmp_path / "empty")
    (folder / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        load_image_folder(folder)


def test_model_specs_weights_and_errors(tmp_path):
    loaded = load_model("torchvision:resnet18")
    assert loaded.name == "torchvision:resnet18" and not loaded.model.training
    assert default_layer(loaded.model) == "layer4"
    vgg = load_model("torchvision:vgg11").model
    assert default_layer(vgg) == "features.19"  # VGG-11's last ReLU before the pooling
    path = tmp_path / "w.pt"
    torch.save(loaded.model.state_dict(), path)
    fresh = load_model("torchvision:resnet18", str(path)).model
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), loaded.model.state_dict().values()))
    with pytest.raises(ValueError, match="do not fit"):
        load_model("torchvision:resnet34", str(path))
    with pytest.raises(ValueError, match="unknown torchvision model"):
        load_model("torchvision:not_a_net")
    with pytest.raises(ValueError, match="cannot import module"):
        load_model("no_such_module:make")
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        sys.path.insert(0, str(TESTS_DIR))
        load_model("tiny_factory:not_a_model")
    with pytest.raises(ValueError, match="torchvision's pretrained"):
        load_model("tiny_factory:tiny", "DEFAULT")


def test_run_check_table_and_bad_names(folder):
    sys.path.insert(0, str(TESTS_DIR))
    frame = run_check("tiny_factory:tiny", folder, methods="gradient,gradcam", progress=False, batch_size=2)
    assert set(frame.test) == {"randomization", "class_sensitivity"}
    assert sorted(frame.file.unique()) == sorted(load_image_folder(folder).paths)
    # randomization: original + 3 layers with parameters, 2 methods, 5 images, 2 metrics
    assert len(frame[frame.test == "randomization"]) == 4 * 2 * 5 * 2
    with pytest.raises(ValueError, match="unknown method"):
        run_check("tiny_factory:tiny", folder, methods="gradient,nope", progress=False)
    with pytest.raises(ValueError, match="unknown test"):
        run_check("tiny_factory:tiny", folder, tests="randomisation", progress=False)


def run_cli(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, env=env(), timeout=600, **kwargs)


def test_torchrun_equals_one_process_row_for_row(folder, tmp_path):
    """Two gloo ranks on the CPU split the five images 3 + 2 and gather one table. With one image per
    batch every map is computed from the same batch as in one process, so the values are equal exactly."""
    common = ["-m", "saliency_sanity", "check", "--model", "tiny_factory:tiny", "--images", str(folder),
              "--methods", "gradient,guided_backprop,gradcam", "--batch-size", "1", "--device", "cpu", "--quiet"]
    single = run_cli([sys.executable, *common, "--out", str(tmp_path / "one.csv")])
    assert single.returncode == 0, single.stderr[-3000:]
    assert "all layers randomized" in single.stdout  # the summary table
    torchrun = Path(sys.executable).with_name("torchrun")
    multi = run_cli([str(torchrun), "--standalone", "--nproc_per_node=2", "--no-python", sys.executable, *common,
                     "--out", str(tmp_path / "two.csv")])
    assert multi.returncode == 0, multi.stderr[-3000:]
    one = pd.read_csv(tmp_path / "one.csv").sort_values(KEYS, kind="stable").reset_index(drop=True)
    two = pd.read_csv(tmp_path / "two.csv").sort_values(KEYS, kind="stable").reset_index(drop=True)
    assert len(one) == len(two) > 0
    pd.testing.assert_frame_equal(one[sorted(one.columns)], two[sorted(two.columns)])


@pytest.mark.parametrize("n,world", [(5, 2), (7, 3), (2, 4), (0, 2)])
def test_shards_cover_every_image_once_in_order(n, world):
    from saliency_sanity.distributed import Ranks, shard

    parts = [shard(n, Ranks(rank, world)) for rank in range(world)]
    assert [i for part in parts for i in part] == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
