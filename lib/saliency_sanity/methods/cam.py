"""Class activation maps with signed, positive or absolute aggregation of gradients.

Grad-CAM (Selvaraju et al. 2017, Eq. 1-2), Grad-CAM++ (Chattopadhay et al. 2018, Eq. 19, in the
closed form pytorch-grad-cam uses) and FullGrad (Srinivas & Fleuret 2019, Eq. 5-6, as
pytorch-grad-cam implements it). Khakzar et al. (2020) blame the *positive* handling of gradients
in Grad-CAM++ and FullGrad for their insensitivity to class and parameters; the ``aggregation``
option makes each aggregator a family so that the claim can be tested directly. With
h = identity (``"signed"``), ReLU (``"positive"``) or |.| (``"absolute"``), G = dy_c/dA the
gradient of the target logit at the layer's output A [B, K, h, w], b the (effective) bias of a
layer and x the input:

* Grad-CAM:    alpha_k = mean_ij h(G_kij);  map = ReLU(sum_k alpha_k A_k)
* Grad-CAM++:  a_kij = G_kij^2 / (2 G_kij^2 + sum_ij A_kij * G_kij^3);
  alpha_k = sum_ij a_kij h(G_kij);  map = ReLU(sum_k alpha_k A_k)
  (``relu=False`` drops the final ReLU of both)
* FullGrad:    map = Psi(sum_c psi(h(x_c * dy_c/dx_c)) + sum_layers sum_k up(psi(h(b_k * G_k))))
  psi = min-max to [0, 1] per image and channel (``"signed"``: division by max|.|, so that
  negative evidence stays negative), up = bilinear resize to the input, Psi = the same scaling
  of the whole map per image (pytorch-grad-cam's final scaling).

The original methods are Grad-CAM = signed, Grad-CAM++ = positive, FullGrad = absolute (each
method's default). The paper's own variant formulas are not public: the ones above are our
explicit choice (h applied to the gradient terms, everything else unchanged).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import default_cam_layer, get_layer
from .registry import register
from .shared_pass import PassRecord, biased_layers, effective_bias, run_pass

AGGREGATIONS = ("signed", "positive", "absolute")


def handle(terms: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Apply the aggregation's handling of gradient terms: identity, ReLU or abs."""
    if aggregation == "signed":
        return terms
    if aggregation == "positive":
        return terms.clamp(min=0)
    if aggregation == "absolute":
        return terms.abs()
    raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {list(AGGREGATIONS)}")


def upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of [B, h, w] maps to ``size`` (align_corners=False, like cv2.resize)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)


def _layer_tensors(record: PassRecord, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Activation and gradient of ``layer`` (its last call, if the module ran several times)."""
    a, g = record.activations[layer][-1], record.gradients[layer][-1]
    if a.dim() != 4:
        raise ValueError(f"CAM layer {layer!r} has output shape {tuple(a.shape)}; CAM methods need a "
                         "spatial [B, C, h, w] output, e.g. the last convolutional block")
    return a, g


def gradcam_from(record: PassRecord, layer: str, aggregation: str = "signed", relu: bool = True) -> torch.Tensor:
    """ReLU(sum_k alpha_k A_k) with alpha_k = spatial mean of handle(dy_c/dA_k) (Selvaraju et al. Eq. 1-2)."""
    a, g = _layer_tensors(record, layer)
    weights = handle(g, aggregation).mean(dim=(2, 3), keepdim=True)
    cam = (weights * a).sum(1)
    return upsample(cam.clamp(min=0) if relu else cam, record.x.shape[-2:])


def gradcam_pp_from(record: PassRecord, layer: str, aggregation: str = "positive", relu: bool = True) -> torch.Tensor:
    """Grad-CAM++: alpha_k = sum_ij a_ij handle(G_ij), a_ij = G^2 / (2 G^2 + sum_ij A * G^3)
    (Chattopadhay et al. Eq. 19 with exponential output, the form pytorch-grad-cam uses);
    the original is ``aggregation="positive"`` (ReLU of the gradient)."""
    a, g = _layer_tensors(record, layer)
    g2 = g * g
    denom = 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g2 * g + 1e-6
    coeff = torch.where(g != 0, g2 / denom, torch.zeros_like(g))
    weights = (coeff * handle(g, aggregation)).sum(dim=(2, 3), keepdim=True)
    cam = (weights * a).sum(1)
    return upsample(cam.clamp(min=0) if relu else cam, record.x.shape[-2:])


def _scale(terms: torch.Tensor, aggregation: str) -> torch.Tensor:
    """FullGrad's post-processing psi per image and channel: min-max to [0, 1] for non-negative terms
    (as the original); for signed terms division by max|.| so negative evidence stays negative."""
    flat = terms.flatten(2)
    if aggregation == "signed":
        return terms / (flat.abs().amax(2)[..., None, None] + 1e-7)
    low = flat.amin(2)[..., None, None]
    return (terms - low) / ((flat.amax(2)[..., None, None] - low) + 1e-7)


def fullgrad_from(record: PassRecord, model: nn.Module, aggregation: str = "absolute") -> torch.Tensor:
    """FullGrad: Psi(sum_c psi(h(x_c * dy/dx_c)) + sum_layers sum_k up(psi(h(b_k * dy/dz_k))))
    (Srinivas & Fleuret Eq. 6, with pytorch-grad-cam's per-channel psi and final scaling Psi)."""
    size = record.x.shape[-2:]
    total = _scale(handle(record.x * record.grad_x, aggregation), aggregation).sum(1)
    for name in biased_layers(model):
        bias = effective_bias(get_layer(model, name))
        for g in record.gradients[name]:
            terms = _scale(handle(bias.view(1, -1, 1, 1) * g, aggregation), aggregation)
            total = total + upsample_channels_sum(terms, size)
    return _scale(total.unsqueeze(1), aggregation).squeeze(1)


def upsample_channels_sum(terms: torch.Tensor, size) -> torch.Tensor:
    """Resize every channel to ``size`` and sum over channels (resizing is linear, so sum first)."""
    return upsample(terms.sum(1), size)


def _check_cam_layer(model: nn.Module, layer: str | None) -> str:
    name = layer or default_cam_layer(model)
    get_layer(model, name)
    return name


@register("gradcam", kind="cam", family="cam", shared_pass=True, aggregation="signed")
def gradcam(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, layer: str | None = None,
            aggregation: str = "signed", relu: bool = True) -> torch.Tensor:
    """Grad-CAM of ``layer`` (default: the model's CAM layer), [B, H, W] upsampled to the input."""
    handle(torch.zeros(1), aggregation)
    name = _check_cam_layer(model, layer)
    return gradcam_from(run_pass(model, x, target, seed=seed, layers=[name], input_grad=False), name, aggregation, relu)


@register("gradcam_pp", kind="cam", family="cam", shared_pass=True, positive=True, aggregation="positive")
def gradcam_pp(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, layer: str | None = None,
               aggregation: str = "positive", relu: bool = True) -> torch.Tensor:
    """Grad-CAM++ of ``layer``, [B, H, W] upsampled to the input."""
    handle(torch.zeros(1), aggregation)
    name = _check_cam_layer(model, layer)
    return gradcam_pp_from(run_pass(model, x, target, seed=seed, layers=[name], input_grad=False), name,
                           aggregation, relu)


@register("fullgrad", kind="cam", family="cam", shared_pass=True, positive=True, aggregation="absolute")
def fullgrad(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, aggregation: str = "absolute") -> torch.Tensor:
    """FullGrad over the input gradient and every biased Conv2d/BatchNorm2d, [B, H, W]."""
    handle(torch.zeros(1), aggregation)
    return fullgrad_from(run_pass(model, x, target, seed=seed, layers=biased_layers(model)), model, aggregation)
