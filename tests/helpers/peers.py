"""Helpers for comparing against peer libraries (Captum, Zennit, pytorch-grad-cam)."""
import copy

import torch
from torch import nn

from saliency_sanity.models.architectures import build_model

# Shapes the peers have not seen in the 1x28x28 tests: 3 channels, non-square. Pooling floors 22x30
# to 5x7 (VGG) and the ResNet's strides to 6x8, so CAMs are upsampled by unequal, non-integer factors
# and a swapped (H, W) anywhere shows as a shape error or a different map.
RGB_SHAPE = (2, 3, 22, 30)


def without_inplace(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without in-place ReLUs: Captum's and Zennit's backward hooks refuse them."""
    clone = copy.deepcopy(model)
    for m in clone.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return clone


def random_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (a non-zero effective bias), so that
    merging them (LRP) and their bias terms (FullGrad) are tested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
    return model


def rgb_model(arch: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A narrow project model for RGB_SHAPE images, in eval mode: the VGG with its first linear layer
    sized for the 5x7 feature map, the ResNet (global pooling, any size) with random BatchNorm."""
    if arch == "vgg":
        model = build_model("vgg", in_channels=3, seed=0, width=8, hidden=32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            model.classifier.fc1 = nn.Linear(16 * 5 * 7, 32)
    else:
        model = random_batchnorm(build_model("resnet", in_channels=3, seed=0, width=8))
    return model.to(dtype).eval()


def rgb_images(dtype: torch.dtype = torch.float32, seed: int = 3) -> torch.Tensor:
    return torch.rand(RGB_SHAPE, generator=torch.Generator().manual_seed(seed), dtype=dtype)
