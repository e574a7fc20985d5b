"""A training run killed with SIGKILL part-way resumes from its checkpoints -- and says so -- and
ends bit-identical to an uninterrupted run, leaving no temporary file; a checkpoint write that fails
(file-size limit) keeps the checkpoints already there; a changed parameter never reuses the cached run."""
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import torch

from saliency_sanity.training import train as training
from saliency_sanity._core.cache import remove_stale_temporary_files, safe_torch_load, temporary_files
from saliency_sanity.data.images import synthetic
from saliency_sanity.training.train import TrainConfig, train_model

CONFIG = TrainConfig(arch="vgg", seed=3, epochs=8, batch_size=32, n_train=None)
TRAIN, TEST = synthetic(320, seed=0), synthetic(64, seed=1)

CHILD = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(int(sys.argv[2]))  # the parent's: CPU sums depend on the thread count
    from saliency_sanity.data.images import synthetic
    from saliency_sanity.training.train import TrainConfig, train_model
    config = TrainConfig(arch="vgg", seed=3, epochs=8, batch_size=32, n_train=None)
    train_model(config, synthetic(320, seed=0), synthetic(64, seed=1), device="cpu", progress=False,
                root=__import__("pathlib").Path(sys.argv[1]))
""")


def kill_after_epoch(root, epoch: int) -> tuple[list[str], int]:
    """Start the training in a subprocess, SIGKILL it once ``epoch``'s checkpoint exists; return
    the checkpoints there and the killed process's pid."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(torch.get_num_threads())])
    deadline = time.time() + 300
    try:
        while time.time() < deadline and child.poll() is None:
            if list(root.glob(f"*/epoch_{epoch:03d}.pt")):
                child.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return sorted(p.name for p in root.glob("*/epoch_*.pt")), child.pid


def leftovers(root) -> list[str]:
    """Every file under ``root`` that is neither a checkpoint nor config.json (temporary files included,
    found by listing, not by the library's own pattern)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not (p.name == "config.json" or p.name.startswith("epoch_") and p.suffix == ".pt"))


def counting_epochs(monkeypatch) -> list[int]:
    """Record the epochs (0-based) that training really runs, independently of what it reports."""
    ran, one_epoch = [], training._one_epoch

    def counted(model, opt, images, labels, config, epoch, *args, **kwargs):
        ran.append(epoch)
        return one_epoch(model, opt, images, labels, config, epoch, *args, **kwargs)

    monkeypatch.setattr(training, "_one_epoch", counted)
    return ran


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, caplog):
    root = tmp_path / "killed"
    done, pid = kill_after_epoch(root, 2)
    assert "epoch_002.pt" in done and "epoch_008.pt" not in done
    last = int(done[-1][len("epoch_"):-len(".pt")])  # the run resumes after the last checkpoint
    assert done == [f"epoch_{e:03d}.pt" for e in range(1, last + 1)]
    for path in root.glob("*/epoch_*.pt"):  # atomic writes: every checkpoint there loads
        safe_torch_load(path)
    # SIGKILL runs no cleanup, so a temporary file is there only if the kill hit a write -- then it is the child's
    assert all(f".{pid}@" in name for name in leftovers(root)), leftovers(root)
    (directory,) = root.iterdir()
    stale = directory / f".epoch_{last + 1:03d}.pt.{pid}@{socket.gethostname()}.k1ll3d_x.tmp"
    stale.write_bytes(b"half a checkpoint")  # as if the kill had hit the next write
    ran = counting_epochs(monkeypatch)
    with caplog.at_level(logging.INFO, logger="saliency_sanity.training.train"):
        resumed = train_model(CONFIG, TRAIN, TEST, device="cpu", progress=False, root=root)
    assert ran == list(range(last, CONFIG.epochs)), "trained other epochs than those after the checkpoint"
    assert resumed.resumed_from_epoch == last and resumed.epochs_run == CONFIG.epochs - last < CONFIG.epochs
    assert f"resuming {directory} from epoch {last}/{CONFIG.epochs}" in caplog.text
    assert resumed.checkpoint(CONFIG.epochs)["resumed_from_epoch"] == last  # recorded by the resumed call
    assert resumed.checkpoint(last)["resumed_from_epoch"] == 0  # written by the killed run, from scratch
    assert not stale.exists() and leftovers(root) == [], leftovers(root)
    assert len(resumed.history) == CONFIG.epochs  # the history covers the epochs before the kill too

    ran.clear()
    clean = train_model(CONFIG, TRAIN, TEST, device="cpu", progress=False, root=tmp_path / "clean")
    assert ran == list(range(CONFIG.epochs)) and clean.resumed_from_epoch == 0 and clean.epochs_run == CONFIG.epochs
    for (name, a), b in zip(resumed.model.state_dict().items(), clean.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.history.drop(columns="seconds").equals(clean.history.drop(columns="seconds"))
    assert torch.equal(resumed.test_logits(), clean.test_logits())

    ran.clear()
    cached = train_model(CONFIG, TRAIN, TEST, device="cpu", progress=False, root=root)
    assert ran == [] and cached.resumed_from_epoch == CONFIG.epochs and cached.epochs_run == 0
    assert leftovers(root) == []


def test_only_temporary_files_of_dead_local_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    files = {"dead": f".a.pt.{dead.pid}@{host}.abc123_x.tmp", "alive": f".a.pt.{os.getpid()}@{host}.abc123_y.tmp",
             "other host": f".a.pt.{dead.pid}@not-{host}.abc123_z.tmp", "not a temp": "a.pt"}
    for name in files.values():
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in temporary_files(tmp_path)] == sorted(v for k, v in files.items() if k != "not a temp")
    assert remove_stale_temporary_files(tmp_path) == [tmp_path / files["dead"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v for k, v in files.items() if k != "dead")


LIMITED = textwrap.dedent("""
    import pathlib, resource, signal, sys, torch
    torch.set_num_threads(int(sys.argv[3]))
    from saliency_sanity.data.images import synthetic
    from saliency_sanity.training.train import TrainConfig, train_model
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit raises OSError(EFBIG), no kill
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        train_model(TrainConfig(arch="vgg", seed=3, epochs=2, batch_size=32), synthetic(64, seed=0),
                    synthetic(16, seed=1), device="cpu", progress=False, root=pathlib.Path(sys.argv[1]))
    except OSError as err:
        print(err, file=sys.stderr)
        sys.exit(3)
""")


def test_checkpoint_write_past_a_file_size_limit_keeps_the_earlier_checkpoints(tmp_path):
    config = TrainConfig(arch="vgg", seed=3, epochs=2, batch_size=32)
    train, test = synthetic(64, seed=0), synthetic(16, seed=1)
    full = train_model(config, train, test, device="cpu", progress=False, root=tmp_path)
    (full.directory / "epoch_002.pt").unlink()  # the next run resumes from epoch 1 and writes epoch 2
    before = {p.name: p.read_bytes() for p in full.directory.iterdir()}
    assert len(before["epoch_001.pt"]) > 64_000 > len(before["config.json"])
    child = subprocess.run([sys.executable, "-c", LIMITED, str(tmp_path), "64000", str(torch.get_num_threads())],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 3, child.stderr[-3000:]
    assert "File too large" in child.stderr and str(full.directory / "epoch_002.pt") in child.stderr, child.stderr
    assert {p.name: p.read_bytes() for p in full.directory.iterdir()} == before  # nothing partial, nothing lost
    again = train_model(config, train, test, device="cpu", progress=False, root=tmp_path)
    assert again.resumed_from_epoch == 1 and again.epochs_run == 1
    for (name, a), b in zip(again.model.state_dict().items(), full.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_changed_parameter_never_reuses_the_cache(tmp_path):
    first = train_model(replace(CONFIG, epochs=2), TRAIN, TEST, device="cpu", progress=False, root=tmp_path)
    other = train_model(replace(CONFIG, epochs=2, lr=CONFIG.lr / 2), TRAIN, TEST, device="cpu", progress=False,
                        root=tmp_path)
    assert first.directory != other.directory
    assert not torch.equal(first.model.state_dict()["features.conv1.weight"],
                           other.model.state_dict()["features.conv1.weight"])
    relabelled = synthetic(320, seed=5)  # other images, same config: another cache entry
    moved = train_model(replace(CONFIG, epochs=2), relabelled, TEST, device="cpu", progress=False, root=tmp_path)
    assert moved.directory != first.directory
