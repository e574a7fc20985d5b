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

from saliency_sanity.models.user import default_layer, load_model
from saliency_sanity.cli.check import run_check
from saliency_sanity.data.folder import IMAGENET_MEAN, load_image_folder

from helpers.paths import subprocess_env



@pytest.fixture
def folder(tmp_path):
    """Five generated images in two class subfolders, of different sizes."""
    rng = np.random.default_rng(0)
    for i, (cls, size) in enumerate([("bird", (60, 80)), ("bird", (90, 70)), ("cat", (64, 64)),
                                     ("cat", (300, 260)), ("cat", (50, 120))]):
        (tmp_path / "images" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(tmp_path / "images" / cls / f"{i}.png")
    return tmp_path / "images"


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
        load_model("helpers.tiny_factory:not_a_model")
    with pytest.raises(ValueError, match="torchvision's pretrained"):
        load_model("helpers.tiny_factory:tiny", "DEFAULT")


def test_run_check_table_and_bad_names(folder):
    frame = run_check("helpers.tiny_factory:tiny", folder, methods="gradient,gradcam", progress=False, batch_size=2)
    assert set(frame.test) == {"randomization", "class_sensitivity"}
    assert sorted(frame.file.unique()) == sorted(load_image_folder(folder).paths)
    # randomization: original + 3 layers with parameters, 2 methods, 5 images, 2 metrics
    assert len(frame[frame.test == "randomization"]) == 4 * 2 * 5 * 2
    with pytest.raises(ValueError, match="unknown method"):
        run_check("helpers.tiny_factory:tiny", folder, methods="gradient,nope", progress=False)
    with pytest.raises(ValueError, match="unknown test"):
        run_check("helpers.tiny_factory:tiny", folder, tests="randomisation", progress=False)


def run_cli(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, env=subprocess_env(), timeout=600, **kwargs)


@pytest.mark.parametrize("n,world,block", [(5, 2, 1), (7, 3, 1), (2, 4, 1), (0, 2, 1), (10, 3, 3), (10, 2, 16),
                                           (17, 3, 4)])
def test_shards_are_whole_batches_covering_every_image_once_in_order(n, world, block):
    """Ranks get contiguous runs of whole batches, so they compute exactly one process's batches."""
    from saliency_sanity.cli.distributed import Ranks, shard

    parts = [shard(n, Ranks(rank, world), block) for rank in range(world)]
    assert [i for part in parts for i in part] == list(range(n))
    assert all(part.start % block == 0 for part in parts if len(part))
    batches = [-(-len(part) // block) for part in parts]
    assert max(batches) - min(batches) <= 1


# Bad input where files are written: every failure is one line on stderr with exit status 1, leaves
# the previous file at --out byte-identical and no temporary file. A bad --out fails before any computing.
SENTINEL = b"image,metric,value\n0,ssim,0.5\n"  # the previous results at --out
QUICK = ["--model", "helpers.tiny_factory:tiny", "--methods", "gradient", "--tests", "randomization", "--metrics",
         "spearman_abs", "--batch-size", "2", "--device", "cpu", "--quiet"]
PREFIX = "python -m saliency_sanity check: error: "


def files_under(folder):
    """Every file under ``folder``, hidden ones (temporary files) included, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def check_cli(images, out, *extra, preexec_fn=None):
    return run_cli([sys.executable, "-m", "saliency_sanity", "check", *QUICK, "--images", str(images),
                    "--out", str(out), *extra], preexec_fn=preexec_fn)


def one_line_error(code, stderr, *needles):
    lines = stderr.strip().splitlines()
    assert code == 1, stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert lines[0].startswith(PREFIX), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", ["missing folder", "folder is a file", "out is a folder"])
def test_cli_unwritable_out_fails_before_any_computing(case, folder, tmp_path, monkeypatch, capsys):
    from saliency_sanity import cli
    from saliency_sanity.cli import check

    monkeypatch.setattr(check, "run_check", lambda *a, **k: pytest.fail("computed before checking --out"))
    place = tmp_path / "place"
    place.mkdir()
    if case == "missing folder":
        out, needle = place / "no" / "such" / "results.csv", "does not exist"
    elif case == "folder is a file":
        (place / "results").write_bytes(SENTINEL)
        out, needle = place / "results" / "results.csv", "is not a folder"
    else:
        (place / "results.csv").mkdir()
        (place / "results.csv" / "old.csv").write_bytes(SENTINEL)
        out, needle = place / "results.csv", "is a folder"
    before = files_under(place)
    code = cli.main(["check", *QUICK, "--images", str(folder), "--out", str(out)])
    one_line_error(code, capsys.readouterr().err, str(out), needle)
    assert files_under(place) == before and not (place / "no").exists()


def _drop_dac_override():
    """In the child, before exec: drop CAP_DAC_OVERRIDE from the bounding set, so that root's
    process honours permission bits (PR_CAPBSET_DROP = 24, CAP_DAC_OVERRIDE = 1)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(24, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE)")


def test_cli_read_only_out_folder(folder, tmp_path):
    """A folder without write permission. Root writes through chmod (CAP_DAC_OVERRIDE), so as root the
    CLI runs without that capability; the test first checks that the folder really refuses a file."""
    place = tmp_path / "read-only"
    place.mkdir()
    (place / "results.csv").write_bytes(SENTINEL)
    place.chmod(0o555)
    preexec = _drop_dac_override if os.geteuid() == 0 else None
    try:
        probe = subprocess.run([sys.executable, "-c", f"open({str(place / 'probe')!r}, 'w')"], capture_output=True,
                               preexec_fn=preexec)
        if probe.returncode == 0 or b"PermissionError" not in probe.stderr:
            pytest.skip(f"cannot make a folder read-only here: {probe.stderr.decode()[-300:]}")
        result = check_cli(folder, place / "results.csv", preexec_fn=preexec)
        one_line_error(result.returncode, result.stderr, str(place / "results.csv"), "cannot create a file in")
        assert files_under(place) == {"results.csv": SENTINEL}
    finally:
        place.chmod(0o755)


def test_cli_corrupt_png_fails_naming_it_and_other_files_are_ignored(folder, tmp_path, capsys):
    from saliency_sanity import cli

    (folder / "notes.txt").write_text("not an image: ignored")
    (folder / "bird" / "README.txt").write_text("ignored too")
    (folder / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    place = tmp_path / "results"
    place.mkdir()
    (place / "results.csv").write_bytes(SENTINEL)
    code = cli.main(["check", *QUICK, "--images", str(folder), "--out", str(place / "results.csv")])
    one_line_error(code, capsys.readouterr().err, "cannot read image", str(folder / "cat" / "broken.png"))
    assert files_under(place) == {"results.csv": SENTINEL}
    # without the corrupt file the run succeeds, with the images only, and replaces the previous CSV;
    # bird/README.txt sorts third in its folder, so --limit 3 would reach it if it were taken for an image
    (folder / "cat" / "broken.png").unlink()
    images = [str(Path(c, f"{i}.png")) for i, c in enumerate(["bird", "bird", "cat", "cat", "cat"])]
    assert load_image_folder(folder).paths == images
    code = cli.main(["check", *QUICK, "--limit", "3", "--images", str(folder), "--out", str(place / "results.csv")])
    assert code == 0 and "rows ->" in capsys.readouterr().out
    table = pd.read_csv(place / "results.csv")
    assert sorted(table.file.unique()) == images[:3]
    assert list(files_under(place)) == ["results.csv"]


def _file_size_limit(limit):
    def preexec():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: OSError(EFBIG), not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_cli_file_size_limit_while_writing_the_csv(folder, tmp_path):
    place = tmp_path / "results"
    place.mkdir()
    (place / "results.csv").write_bytes(SENTINEL)
    # 16 rows of a few dozen bytes each do not fit in 256 bytes; nothing else is written
    result = check_cli(folder, place / "results.csv", "--limit", "2", preexec_fn=_file_size_limit(256))
    one_line_error(result.returncode, result.stderr, f"cannot write the results to {place / 'results.csv'}",
                   "File too large", "unchanged")
    assert files_under(place) == {"results.csv": SENTINEL}
