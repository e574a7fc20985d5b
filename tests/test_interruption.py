"""A training run killed with SIGKILL part-way resumes from its checkpoints and ends bit-identical
to an uninterrupted run; a changed parameter never reuses the cached run."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import torch

from saliency_sanity.cache import safe_torch_load
from saliency_sanity.data import synthetic
from saliency_sanity.training import TrainConfig, train_model

CONFIG = TrainConfig(arch="vgg", seed=3, epochs=8, batch_size=32, n_train=None)
TRAIN, TEST = synthetic(320, seed=0), synthetic(64, seed=1)

CHILD = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(int(sys.argv[2]))  # the parent's: CPU sums depend on the thread count
    from saliency_sanity.data import synthetic
    from saliency_sanity.training import TrainConfig, train_model
    config = TrainConfig(arch="vgg", seed=3, epochs=8, batch_size=32, n_train=None)
    train_model(config, synthetic(320, seed=0), synthetic(64, seed=1), device="cpu", progress=False,
                root=__import__("pathlib").Path(sys.argv[1]))
""")


def kill_after_epoch(root, epoch: int) -> list[str]:
    """Start the training in a subprocess, SIGKILL it once ``epoch``'s checkpoint exists."""
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
    return sorted(p.name for p in root.glob("*/epoch_*.pt"))


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    done = kill_after_epoch(tmp_path / "killed", 2)
    assert "epoch_002.pt" in done and "epoch_008.pt" not in done
    for path in (tmp_path / "killed").glob("*/epoch_*.pt"):  # atomic writes: every checkpoint there loads
        safe_torch_load(path)
    resumed = train_model(CONFIG, TRAIN, TEST, device="cpu", progress=False, root=tmp_path / "killed")
    clean = train_model(CONFIG, TRAIN, TEST, device="cpu", progress=False, root=tmp_path / "clean")
    for (name, a), b in zip(resumed.model.state_dict().items(), clean.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.history.drop(columns="seconds").equals(clean.history.drop(columns="seconds"))
    assert torch.equal(resumed.test_logits(), clean.test_logits())


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
