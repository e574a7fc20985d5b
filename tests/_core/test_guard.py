"""The guard that restores the user's model: ``preserved(..., frozen=True)`` freezes every parameter
inside the block and gives the caller's flags back afterwards, also after an exception."""
import pytest
import torch
from torch import nn

from saliency_sanity._core.guard import preserved


def _model():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model[2].bias.requires_grad_(False)  # a caller's own frozen parameter must stay frozen, the rest trainable
    return model.train()


@pytest.mark.parametrize("raises", [False, True])
def test_frozen_block_needs_no_weight_gradient_and_restores_the_flags(raises):
    model = _model()
    before = [p.requires_grad for p in model.parameters()]
    x = torch.rand(5, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="inside") if raises else torch.enable_grad():
        with preserved(model, frozen=True):
            assert not any(p.requires_grad for p in model.parameters()) and not model.training
            model(x).sum().backward()  # the input's gradient only
            assert x.grad is not None and all(p.grad is None for p in model.parameters())
            if raises:
                raise RuntimeError("inside the block")
    assert [p.requires_grad for p in model.parameters()] == before == [True, True, True, False]
    assert model.training


def test_not_frozen_by_default():
    model = _model()
    with preserved(model):
        assert [p.requires_grad for p in model.parameters()] == [True, True, True, False]
