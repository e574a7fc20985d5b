"""Helpers for comparing against peer libraries (Captum, Zennit, pytorch-grad-cam)."""
import copy

from torch import nn


def without_inplace(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without in-place ReLUs: Captum's and Zennit's backward hooks refuse them."""
    clone = copy.deepcopy(model)
    for m in clone.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return clone
