"""Models: a VGG-style CNN without BatchNorm and a small ResNet with BatchNorm for 1x28x28 input,
plus torchvision's vgg16 / resnet50 for users who bring ImageNet-size images.

The small models name their layers (``features.conv1``, ``classifier.fc1``, ...) so that per-layer
randomization and Grad-CAM have clear handles; ``CAM_LAYER`` names their default Grad-CAM layer.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class VGGNet(nn.Module):
    """VGG-style CNN for 28x28 images: conv-ReLU blocks with max pooling, then two linear layers.

    No BatchNorm, so LRP rules and FullGrad apply without merging normalisation layers.
    """

    CAM_LAYER = "features.relu3"

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, hidden: int = 128):
        super().__init__()
        w = width
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, w, 3, padding=1)), ("relu1", nn.ReLU(inplace=True)),
            ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(w, 2 * w, 3, padding=1)), ("relu2", nn.ReLU(inplace=True)),
            ("pool2", nn.MaxPool2d(2)),
            ("conv3", nn.Conv2d(2 * w, 2 * w, 3, padding=1)), ("relu3", nn.ReLU(inplace=True)),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(2 * w * 7 * 7, hidden)), ("relu4", nn.ReLU(inplace=True)),
            ("fc2", nn.Linear(hidden, num_classes)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Add(nn.Module):
    """A residual sum as a module, so that LRP can split relevance between the summands."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3x3 conv-BN, identity or 1x1 projection skip."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(cin, cout, 1, stride, bias=False)), ("bn", nn.BatchNorm2d(cout))]))
        self.add = Add()
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(self.add(out, self.shortcut(x)))


class SmallResNet(nn.Module):
    """A small ResNet for 28x28 images: stem, three stages of basic blocks, global pooling, linear."""

    CAM_LAYER = "layer3"

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        w = width
        self.stem = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(in_channels, w, 3, 1, 1, bias=False)), ("bn", nn.BatchNorm2d(w)),
            ("relu", nn.ReLU(inplace=True))]))
        self.layer1 = BasicBlock(w, w)
        self.layer2 = BasicBlock(w, 2 * w, stride=2)
        self.layer3 = BasicBlock(2 * w, 4 * w, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


ARCHITECTURES = {"vgg": VGGNet, "resnet": SmallResNet}
# Default Grad-CAM layers of torchvision models: the last spatial feature map.
TORCHVISION_CAM_LAYERS = {"vgg16": "features.29", "resnet50": "layer4"}


def build_model(arch: str, *, in_channels: int = 1, num_classes: int = 10, seed: int | None = None,
                **kwargs) -> nn.Module:
    """A freshly initialised project model (``"vgg"`` or ``"resnet"``), seeded if ``seed`` is given."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ARCHITECTURES[arch](in_channels=in_channels, num_classes=num_classes, **kwargs)
    return ARCHITECTURES[arch](in_channels=in_channels, num_classes=num_classes, **kwargs)


def torchvision_model(name: str, weights: str | None = None) -> nn.Module:
    """torchvision ``vgg16`` or ``resnet50``; ``weights="DEFAULT"`` asks torchvision for ImageNet weights.

    Weights are downloaded by torchvision (needs network); ``None`` gives random weights. The
    model gets a ``CAM_LAYER`` attribute naming its default Grad-CAM layer.
    """
    import torchvision

    if name not in TORCHVISION_CAM_LAYERS:
        raise ValueError(f"unknown torchvision model {name!r}; choose one of {sorted(TORCHVISION_CAM_LAYERS)}")
    model = getattr(torchvision.models, name)(weights=weights)
    model.CAM_LAYER = TORCHVISION_CAM_LAYERS[name]
    return model


def default_cam_layer(model: nn.Module) -> str:
    """The layer Grad-CAM reads by default: ``model.CAM_LAYER`` if set, else the last Conv2d."""
    name = getattr(model, "CAM_LAYER", None)
    if name:
        return name
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer, so CAM methods have no default layer; "
                         "pass layer='<module name>' naming a layer with a spatial [B, C, H, W] output")
    return convs[-1]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (as in ``model.named_modules()``), with a helpful error."""
    modules = dict(model.named_modules())
    if name not in modules:
        near = [n for n in modules if n and (name in n or n in name)][:8]
        raise ValueError(f"layer {name!r} not found in {type(model).__name__}"
                         + (f"; did you mean one of {near}?" if near else
                            f"; available layers: {[n for n in modules if n][:20]}"))
    return modules[name]
