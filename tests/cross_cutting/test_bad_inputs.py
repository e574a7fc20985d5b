"""Bad inputs across the public API: each raises the stated error whose message names the problem,
and none leaves a file behind. One table, one row per bad input."""
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from saliency_sanity import attribute, attribute_many
from saliency_sanity.models.user import load_model, load_state
from saliency_sanity._core.cache import atomic_torch_save, check_writable, safe_torch_load
from saliency_sanity.checks import class_sensitivity, randomization_test
from saliency_sanity.data.images import CorruptDatasetError, DatasetNotFoundError, load_fashion_mnist, read_idx, write_idx
from saliency_sanity.data.folder import load_image_folder
from saliency_sanity.methods.masks import sound_mask
from saliency_sanity.models.architectures import build_model
from saliency_sanity.book.profiles import get_profile
from saliency_sanity.checks.randomize import randomized
from saliency_sanity.metrics.similarity import similarity

from helpers.model_state import assert_unchanged, weights
from helpers.paths import ROOT
from saliency_sanity.metrics.soundness import completeness_soundness, insertion_curve
from saliency_sanity.metrics.stability import churn, label_entropy

MODEL = build_model("vgg", seed=0).eval()
X = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
MAPS = torch.rand(2, 28, 28, generator=torch.Generator().manual_seed(1))


def run_randomized(**options):
    with randomized(MODEL, **options) as stages:
        for _ in stages:
            pass


class Evil:
    """A pickle that would run code when loaded."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))  # would leave a file that the table test looks for


def corrupt_checkpoint(tmp):
    path = tmp / "corrupt.pt"
    path.write_bytes(b"\x80\x02 this is not a checkpoint")
    return lambda: safe_torch_load(path)


def malicious_checkpoint(tmp):
    path = tmp / "evil.pt"
    path.write_bytes(pickle.dumps(Evil()))
    return lambda: safe_torch_load(path)


def other_architecture(tmp):
    path = tmp / "resnet_weights.pt"
    torch.save(build_model("resnet", seed=0).state_dict(), path)
    return lambda: load_state(build_model("vgg", seed=0), str(path), "vgg")


def not_a_state_dict(tmp):
    path = tmp / "list.pt"
    torch.save([torch.zeros(3), torch.ones(2)], path)
    return lambda: load_state(build_model("vgg", seed=0), str(path), "vgg")


def missing_dataset(tmp):
    (tmp / "fmnist").mkdir()
    return lambda: load_fashion_mnist("test", directory=tmp / "fmnist", download=False)


def truncated_idx(tmp):
    path = tmp / "t10k-images-idx3-ubyte"
    write_idx(path, np.zeros((4, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    return lambda: read_idx(path)


def bad_magic_idx(tmp):
    path = tmp / "labels-idx1-ubyte"
    path.write_bytes(b"\x12\x34\x56\x78" + bytes(20))
    return lambda: read_idx(path)


def corrupt_png(tmp):
    (tmp / "images").mkdir()
    (tmp / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return lambda: load_image_folder(tmp / "images")


def truncated_png(tmp):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
    (tmp / "images").mkdir()
    (tmp / "images" / "cut.png").write_bytes(buffer.getvalue()[:200])
    return lambda: load_image_folder(tmp / "images")


def only_text_files(tmp):
    (tmp / "images").mkdir()
    (tmp / "images" / "notes.txt").write_text("not an image")
    return lambda: load_image_folder(tmp / "images")


def out_in_a_file(tmp):
    (tmp / "results").write_text("a file, not a folder")
    return lambda: check_writable(tmp / "results" / "out.csv")


def out_is_a_folder(tmp):
    (tmp / "out.csv").mkdir()
    return lambda: check_writable(tmp / "out.csv")


def checkpoint_past_file_size_limit(tmp):
    """An atomic checkpoint write over an existing file past RLIMIT_FSIZE (soft limit, restored after;
    Python ignores SIGXFSZ, so the write raises EFBIG)."""
    import resource

    (tmp / "epoch_001.pt").write_bytes(b"previous checkpoint")

    def call():
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
        try:
            atomic_torch_save({"w": torch.zeros(10_000)}, tmp / "epoch_001.pt")
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            assert (tmp / "epoch_001.pt").read_bytes() == b"previous checkpoint"
    return call


def plain(fn):
    return lambda tmp: fn


CASES = [
    # images
    ("rank 3 images", plain(lambda: attribute(MODEL, X[0], 0, "gradient")), ValueError, r"rank 4"),
    ("integer images", plain(lambda: attribute(MODEL, (X * 255).long(), 0, "gradient")), TypeError, r"floating"),
    ("NaN in images", plain(lambda: attribute(MODEL, X.clone().index_fill_(0, torch.tensor([0]), float("nan")), 0,
                                              "gradient")), ValueError, r"NaN or Inf"),
    ("Inf in images", plain(lambda: attribute(MODEL, X + float("inf"), 0, "gradient")), ValueError, r"NaN or Inf"),
    ("empty batch", plain(lambda: attribute(MODEL, X[:0], 0, "gradient")), ValueError, r"empty batch"),
    ("images not a tensor", plain(lambda: attribute(MODEL, X.numpy(), 0, "gradient")), TypeError, r"torch.Tensor"),
    ("model not a module", plain(lambda: attribute(lambda t: t, X, 0, "gradient")), TypeError, r"nn.Module"),
    # targets
    ("target out of range", plain(lambda: attribute(MODEL, X, 10, "gradient")), ValueError, r"out of range.*0\.\.9"),
    ("negative target", plain(lambda: attribute(MODEL, X, -1, "gradient")), ValueError, r"out of range"),
    ("float target", plain(lambda: attribute(MODEL, X, 1.5, "gradient")), TypeError, r"class index"),
    ("targets of wrong length", plain(lambda: attribute(MODEL, X, torch.tensor([1, 2, 3]), "gradient")), ValueError,
     r"shape \[B\] = \[2\]"),
    ("unknown target name", plain(lambda: class_sensitivity(MODEL, X, ["gradient"], pairs=[("top1", "top5")],
                                                           progress=False)), ValueError, r"unknown target 'top5'"),
    # methods and their options
    ("unknown method", plain(lambda: attribute(MODEL, X, 0, "saliency_magic")), ValueError, r"unknown method"),
    ("unknown layer", plain(lambda: attribute(MODEL, X, 0, "gradcam", layer="features.conv9")), ValueError,
     r"layer 'features.conv9' not found"),
    ("Grad-CAM without conv layers", plain(lambda: attribute(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), X, 0,
                                                             "gradcam")), ValueError, r"no Conv2d layer"),
    ("unknown option", plain(lambda: attribute(MODEL, X, 0, "gradient", foo=1)), TypeError, r"unexpected"),
    ("IG with 0 steps", plain(lambda: attribute(MODEL, X, 0, "integrated_gradients", steps=0)), ValueError,
     r"steps must be >= 1"),
    ("unknown reduce", plain(lambda: attribute(MODEL, X, 0, "gradient", reduce="max")), ValueError, r"unknown reduce"),
    ("unknown aggregation", plain(lambda: attribute(MODEL, X, 0, "gradcam", aggregation="squared")), ValueError,
     r"aggregation"),
    ("empty method list", plain(lambda: attribute_many(MODEL, X, 0, [])), ValueError, r"empty"),
    # similarity
    ("unknown metric", plain(lambda: similarity(MAPS, MAPS, "pearson_magic")), ValueError, r"unknown metric"),
    ("maps of different shapes", plain(lambda: similarity(MAPS, MAPS[:, :20], "ssim")), ValueError, r"same shape"),
    ("maps not tensors", plain(lambda: similarity(MAPS.numpy(), MAPS, "ssim")), TypeError, r"torch.Tensor"),
    # randomization and checks
    ("unknown randomization mode", plain(lambda: run_randomized(mode="sideways")), ValueError, r"unknown mode"),
    ("unknown randomization order", plain(lambda: run_randomized(order="random")), ValueError, r"unknown order"),
    ("unknown randomization unit", plain(lambda: run_randomized(unit="neuron")), ValueError, r"unknown unit"),
    ("unknown init", plain(lambda: run_randomized(init="zeros_please")), ValueError, r"unknown init"),
    ("explain=label without labels", plain(lambda: randomization_test(MODEL, X, ["gradient"], explain="label",
                                                                      progress=False)), ValueError, r"needs labels"),
    ("unknown metric in a check", plain(lambda: randomization_test(MODEL, X, ["gradient"], metrics=["l2"],
                                                                   progress=False)), ValueError, r"unknown metric"),
    # completeness and soundness, masks
    ("K < 1 steps", plain(lambda: insertion_curve(MODEL, X, MAPS, 0, steps=0)), ValueError, r"steps"),
    ("unknown fill", plain(lambda: insertion_curve(MODEL, X, MAPS, 0, fill="purple")), ValueError, r"fill"),
    ("fill of the wrong shape", plain(lambda: insertion_curve(MODEL, X, MAPS, 0, fill=torch.zeros(3, 5, 5))),
     ValueError, r"fill"),
    ("maps per label of wrong rank", plain(lambda: completeness_soundness(MODEL, X, MAPS)), ValueError,
     r"maps_per_label must be a tensor \[B, L, H, W\]"),
    ("negative lambda_tv", plain(lambda: sound_mask(MODEL, X, 0, steps=2, lambda_tv=-1.0)), ValueError, r"lambda_tv"),
    ("a mean fill without a mean", plain(lambda: insertion_curve(MODEL, X, MAPS, 0)), ValueError,
     r"fill='mean' needs the per-channel mean"),
    ("a mask's mean fill without a mean", plain(lambda: sound_mask(MODEL, X, 0, steps=1)), ValueError,
     r"fill='mean' needs the per-channel mean"),
    # stability
    ("churn of different lengths", plain(lambda: churn(torch.tensor([1, 2]), torch.tensor([1, 2, 3]))), ValueError,
     r"shape|length"),
    ("label entropy of floats", plain(lambda: label_entropy(torch.rand(3, 4))), (TypeError, ValueError),
     r"integer|class"),
    # profiles and notebook parameters
    ("unknown profile", plain(lambda: get_profile("fast")), ValueError, r"unknown profile 'fast'"),
    ("parameter of the wrong type", plain(lambda: get_profile("smoke", epochs="two")), TypeError,
     r"parameter epochs must be an integer"),
    ("unknown parameter", plain(lambda: get_profile("smoke", learning_rate=3)), ValueError,
     r"unknown profile parameter 'learning_rate'"),
    ("no seeds", plain(lambda: get_profile("smoke", seeds=[])), ValueError, r"at least one seed"),
    # files
    ("corrupt checkpoint", corrupt_checkpoint, ValueError, r"not a loadable checkpoint"),
    ("pickle that runs code", malicious_checkpoint, ValueError, r"not a loadable checkpoint"),
    ("checkpoint of another architecture", other_architecture, ValueError, r"do not fit"),
    ("pickle that is not a state dict", not_a_state_dict, ValueError, r"not a state dict"),
    ("missing dataset files", missing_dataset, DatasetNotFoundError, r"missing"),
    ("truncated IDX file", truncated_idx, CorruptDatasetError, r"truncated|size|bytes"),
    ("IDX file with a bad magic number", bad_magic_idx, CorruptDatasetError, r"bad magic number"),
    ("unknown model spec", plain(lambda: load_model("keras:resnet")), ValueError, r"cannot import module 'keras'"),
    ("corrupt PNG in an image folder", corrupt_png, ValueError, r"cannot read image \S*broken\.png: \S"),
    ("truncated PNG in an image folder", truncated_png, ValueError, r"cannot read image \S*cut\.png"),
    ("image folder of non-image files only", only_text_files, ValueError, r"no images in"),
    ("output folder missing", plain(lambda: check_writable(Path("no") / "such" / "out.csv")), FileNotFoundError,
     r"folder no/such does not exist"),
    ("output folder is a file", out_in_a_file, NotADirectoryError, r"results is not a folder"),
    ("output path is a folder", out_is_a_folder, IsADirectoryError, r"out.csv: it is a folder"),
    ("checkpoint write past the file-size limit", checkpoint_past_file_size_limit, OSError,
     r"File too large.*epoch_001\.pt"),
]


@pytest.mark.parametrize("name,setup,error,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, setup, error, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    call = setup(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    weights_before = weights(MODEL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=message):
            call()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "a file was left behind"
    assert_unchanged(MODEL, weights_before)


def test_table_covers_at_least_25_bad_inputs():
    assert len(CASES) >= 25


def test_constant_maps_give_nan_and_a_warning():
    with pytest.warns(RuntimeWarning, match="undefined"):
        values = similarity(torch.ones(2, 28, 28), MAPS, "spearman_abs")
    assert torch.isnan(values).all()


def test_model_in_train_mode_is_explained_in_eval_mode_and_left_training():
    model = build_model("resnet", seed=0)  # BatchNorm: train mode would use the batch statistics
    expected = attribute(model.eval(), X, 0, "gradient")
    model.train()
    assert torch.equal(attribute(model, X, 0, "gradient"), expected)
    assert model.training and all(m.training for m in model.modules())


def test_wrong_papermill_parameter_names_it():
    """A notebook parameter of the wrong type fails at the first cell that reads the profile, naming it."""
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"bad-param-{os.getpid()}.ipynb"
    result = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks/03_class_sensitivity.ipynb"),
                             str(out), "-p", "profile", "smoke", "-p", "n_images", "two", "--cwd", str(ROOT)],
                            capture_output=True, text=True, timeout=300)
    out.unlink(missing_ok=True)
    assert result.returncode != 0
    assert "parameter n_images must be an integer" in result.stderr + result.stdout
