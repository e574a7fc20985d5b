"""Shared fixtures: small seeded models and images, and an isolated cache folder per test."""
import pytest
import torch

from saliency_sanity.models import build_model

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
