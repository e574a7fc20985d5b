"""Shared fixtures: small seeded models and images, and an isolated cache folder per test.

The test files in every folder import the shared helpers as ``helpers.<module>`` (``tests/helpers/``):
``pythonpath = ["tests"]`` in pyproject.toml puts ``tests/`` on ``sys.path``."""
import os
import subprocess
import sys

import pytest
import torch

pytest.register_assert_rewrite("helpers")  # before any import of it: its asserts explain their failures

from helpers.paths import ROOT  # noqa: E402
from saliency_sanity.models.architectures import build_model  # noqa: E402

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test writes its cache under its own temporary folder."""
    monkeypatch.setenv("SALIENCY_SANITY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(params=["vgg", "resnet"])
def project_model(request):
    """Each project model, seeded and in eval mode."""
    return build_model(request.param, seed=0).eval()


@pytest.fixture
def images():
    gen = torch.Generator().manual_seed(0)
    return torch.rand(3, 1, 28, 28, generator=gen)


@pytest.fixture(scope="session")
def smoke_site(tmp_path_factory):
    """The whole pipeline once per session: every notebook under the smoke profile, then the book."""
    site = tmp_path_factory.mktemp("smoke") / "site"
    env = {**os.environ, "SALIENCY_SANITY_CACHE": str(site.parent / "cache")}
    result = subprocess.run([sys.executable, "-m", "saliency_sanity", "reproduce", "--profile", "smoke",
                             "--root", str(ROOT), "--site", str(site)], capture_output=True, text=True,
                            timeout=1800, env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return site


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for tiny models: on a busy 2-core machine two threads cost several times more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
