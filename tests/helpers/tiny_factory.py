"""Importable model factories for the command-line tests (``--model helpers.tiny_factory:tiny``)."""
import torch
from torch import nn


def tiny() -> nn.Module:
    """A seeded 3-channel CNN with a conv feature extractor and a 5-class head."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(96, 5))


def not_a_model():
    return "oops"


def unseeded() -> nn.Module:
    """A 3-layer CNN left to torch's global generator, as most users' factories are."""
    return nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(96, 5))
