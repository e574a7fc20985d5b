"""Class activation maps with signed, positive or absolute aggregation of gradients.

Grad-CAM (Selvaraju et al. 2017, Eq. 1-2), Grad-CAM++ (Chattopadhay et al. 2018, Eq. 19, in the
closed form pytorch-grad-cam uses), FullGrad (Srinivas & Fleuret 2019, Eq. 5-6, post-processed as
the authors' code ``idiap/fullgrad-saliency`` does, or as pytorch-grad-cam does) and Guided Grad-CAM
(Selvaraju et al. 2017, as Captum's ``GuidedGradCam``). Khakzar et al. (2020) blame the
*positive* handling of gradients in Grad-CAM++ and FullGrad for their insensitivity to class and
parameters; the ``aggregation`` option makes each aggregator a family so that the claim can be
tested directly. With h = identity (``"signed"``), ReLU (``"positive"``) or |.| (``"absolute"``),
G = dy_c/dA the gradient of the target logit at the layer's output A [B, K, h, w], b the
(effective) bias of a layer and x the input:

* Grad-CAM:    alpha_k = mean_ij h(G_kij);  map = ReLU(sum_k alpha_k A_k)
* Grad-CAM++:  a_kij = G_kij^2 / (2 G_kij^2 + sum_ij A_kij * G_kij^3);
  alpha_k = sum_ij a_kij h(G_kij);  map = ReLU(sum_k alpha_k A_k)
  (``relu=False`` drops the final ReLU of both)
* FullGrad:    map = sum_c psi(h(x * dy_c/dx))_c + sum_layers sum_k up(psi(h(b_k * G_k)))_k
  - ``normalize="per_sample"`` (default, the authors' ``FullGrad._postProcess`` / ``saliency``):
    psi = min-max to [0, 1] per image over ALL channels and positions of one term (eps 1e-6),
    up = bilinear resize with ``align_corners=True``, no final scaling;
  - ``normalize="per_channel"`` (pytorch-grad-cam's ``FullGrad``): psi per image AND channel
    (eps 1e-7), up = bilinear with ``align_corners=False`` (as cv2.resize), and the summed map
    scaled once more by psi per image.
  ``"signed"`` replaces the min-max by a division by max|.| (see :func:`_scale`).

The original methods are Grad-CAM = signed, Grad-CAM++ = positive, FullGrad = absolute (each
method's default). The paper's own variant formulas are not public: the ones above are our
explicit choice (h applied to the gradient terms, everything else unchanged).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..models.architectures import default_cam_layer, get_layer
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


def gradcam_from(record: PassRecord, layer: str, aggregation: str = "signed", relu: bool = True,
                 mode: str = "bilinear") -> torch.Tensor:
    """ReLU(sum_k alpha_k A_k) with alpha_k = spatial mean of handle(dy_c/dA_k) (Selvaraju et al. Eq. 1-2),
    resized to the input with ``mode`` (see :func:`_interpolate`)."""
    a, g = _layer_tensors(record, layer)
    weights = handle(g, aggregation).mean(dim=(2, 3), keepdim=True)
    cam = (weights * a).sum(1)
    return _interpolate(cam.clamp(min=0) if relu else cam, record.x.shape[-2:], mode)


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


NORMALIZATIONS = ("per_sample", "per_channel")


def _scale(terms: torch.Tensor, aggregation: str, start_dim: int = 2, eps: float = 1e-7) -> torch.Tensor:
    """FullGrad's post-processing psi: min-max to [0, 1] over the dimensions from ``start_dim`` on
    (2: per image and channel, pytorch-grad-cam; 1: per image over channels and positions, the
    authors' ``_postProcess``), ``(t - min) / (max - min + eps)``.

    For ``"signed"`` terms a min-max would send the most negative value to 0, i.e. turn the
    strongest negative evidence into "no evidence" and add a per-term offset to every position;
    instead the terms are divided by max|.| (+ eps) over the same dimensions, which keeps 0 at 0 and
    every sign, maps into [-1, 1], and equals the min-max for non-negative terms whose minimum is 0.
    ``"positive"`` and ``"absolute"`` terms are non-negative and get the min-max itself.
    """
    flat = terms.flatten(start_dim)
    shape = flat.shape[:start_dim] + (1,) * (terms.dim() - start_dim)
    if aggregation == "signed":
        return terms / (flat.abs().amax(-1).view(shape) + eps)
    low = flat.amin(-1).view(shape)
    return (terms - low) / ((flat.amax(-1).view(shape) - low) + eps)


def check_normalize(normalize: str) -> str:
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; choose 'per_sample' (the FullGrad authors' "
                         "post-processing) or 'per_channel' (pytorch-grad-cam's)")
    return normalize


def _bias_terms(record: PassRecord, model: nn.Module):
    """b_k * dy/dz_k for every call of every biased Conv2d / BatchNorm2d, [B, K, h, w] each."""
    for name in biased_layers(model):
        bias = effective_bias(get_layer(model, name))
        for g in record.gradients[name]:
            yield bias.to(g).view(1, -1, 1, 1) * g


def fullgrad_from(record: PassRecord, model: nn.Module, aggregation: str = "absolute",
                  normalize: str = "per_sample") -> torch.Tensor:
    """FullGrad: sum_c psi(h(x * dy/dx))_c + sum_layers sum_k up(psi(h(b_k * dy/dz_k)))_k, [B, H, W].

    Srinivas & Fleuret (2019), Eq. 6 with their code's post-processing (``idiap/fullgrad-saliency``,
    ``FullGrad._postProcess`` and ``FullGrad.saliency``) for ``normalize="per_sample"``, or
    pytorch-grad-cam's per-channel psi and final scaling for ``"per_channel"`` (module docstring).
    """
    check_normalize(normalize)
    size = record.x.shape[-2:]
    if normalize == "per_channel":
        total = _scale(handle(record.x * record.grad_x, aggregation), aggregation).sum(1)
        for term in _bias_terms(record, model):
            total = total + upsample(_scale(handle(term, aggregation), aggregation).sum(1), size)
        return _scale(total.unsqueeze(1), aggregation).squeeze(1)
    total = _scale(handle(record.x * record.grad_x, aggregation), aggregation, 1, 1e-6).sum(1)
    for term in _bias_terms(record, model):
        # every channel is resized, then summed: resizing is linear, so summing first is the same
        summed = _scale(handle(term, aggregation), aggregation, 1, 1e-6).sum(1, keepdim=True)
        if tuple(summed.shape[-2:]) != tuple(size):
            summed = F.interpolate(summed, size=tuple(size), mode="bilinear", align_corners=True)
        total = total + summed.squeeze(1)
    return total


def _check_cam_layer(model: nn.Module, layer: str | None) -> str:
    name = layer or default_cam_layer(model)
    get_layer(model, name)
    return name


@register("gradcam", kind="cam", family="cam", shared_pass=True)
def gradcam(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, layer: str | None = None,
            aggregation: str = "signed", relu: bool = True) -> torch.Tensor:
    """Grad-CAM of ``layer`` (default: the model's CAM layer), [B, H, W] upsampled to the input."""
    handle(torch.zeros(1), aggregation)
    name = _check_cam_layer(model, layer)
    return gradcam_from(run_pass(model, x, target, seed=seed, layers=[name], input_grad=False), name, aggregation, relu)


@register("gradcam_pp", kind="cam", family="cam", shared_pass=True)
def gradcam_pp(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, layer: str | None = None,
               aggregation: str = "positive", relu: bool = True) -> torch.Tensor:
    """Grad-CAM++ of ``layer``, [B, H, W] upsampled to the input."""
    handle(torch.zeros(1), aggregation)
    name = _check_cam_layer(model, layer)
    return gradcam_pp_from(run_pass(model, x, target, seed=seed, layers=[name], input_grad=False), name,
                           aggregation, relu)


@register("fullgrad", kind="cam", family="cam", shared_pass=True)
def fullgrad(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, aggregation: str = "absolute",
             normalize: str = "per_sample") -> torch.Tensor:
    """FullGrad over the input gradient and every biased Conv2d/BatchNorm2d, [B, H, W].

    Srinivas & Fleuret (2019), Eq. 6 (full-gradient decomposition: input-gradient x input and
    bias-gradient x bias of every layer; BatchNorm's effective bias beta - mu gamma / sigma). The
    default ``normalize="per_sample"`` is the authors' post-processing (``idiap/fullgrad-saliency``,
    ``FullGrad._postProcess``: |.|, min-max per image over all channels and positions, sum over
    channels, bilinear upsampling with align_corners=True, terms added, no final scaling);
    ``"per_channel"`` reproduces pytorch-grad-cam's ``FullGrad`` (min-max per channel, cv2-style
    resize, final min-max to [0, 1]). ``aggregation="signed"`` divides each term by its max|.|
    instead of the min-max so that signs survive; ``"positive"`` min-max scales ReLU(terms) (see
    :func:`_scale`).
    """
    handle(torch.zeros(1), aggregation)
    check_normalize(normalize)
    return fullgrad_from(run_pass(model, x, target, seed=seed, layers=biased_layers(model)), model, aggregation,
                         normalize)


def _interpolate(maps: torch.Tensor, size, mode: str) -> torch.Tensor:
    """Resize [B, h, w] maps to ``size`` as Captum's ``LayerAttribution.interpolate`` does
    (``F.interpolate`` with torch's default ``align_corners``)."""
    if mode == "bilinear":
        return upsample(maps, size)
    return F.interpolate(maps.unsqueeze(1), size=tuple(size), mode=mode).squeeze(1)


INTERPOLATE_MODES = ("bilinear", "nearest", "bicubic", "area")


@register("guided_gradcam", kind="pixel", family="propagation")
def guided_gradcam(model: nn.Module, x: torch.Tensor, target, *, seed: int = 0, layer: str | None = None,
                   interpolate_mode: str = "bilinear") -> torch.Tensor:
    """Guided Grad-CAM: Guided Backprop [B, C, H, W] times the Grad-CAM of ``layer`` upsampled to the input.

    Selvaraju et al. (2017), "Guided Grad-CAM": the pointwise product of Guided Backprop and the
    Grad-CAM map L^c = ReLU(sum_k alpha_k A^k) (Eq. 1-2) upsampled to the input. Equal to
    Captum's ``GuidedGradCam(model, layer).attribute(x, target, interpolate_mode=...)``: the
    Grad-CAM map gets its ReLU before the resize, is shared by every input channel, and
    ``"bilinear"`` uses align_corners=False. The default ``"bilinear"`` is the paper's (and our
    ``gradcam``'s) resize; Captum's own default is ``"nearest"``. Two passes: a plain one for
    Grad-CAM, a guided one for the backprop part; the target is resolved once, on the first.
    Guided Backprop is positive propagation (Khakzar et al. 2020; its row in ``checks.PAPER_METHODS``).
    """
    from .propagation import _relu_modules, guided_backprop  # propagation imports nothing from here

    _relu_modules(model, "guided_gradcam")  # refuse a model without nn.ReLU modules before any pass
    if interpolate_mode not in INTERPOLATE_MODES:
        raise ValueError(f"unknown interpolate_mode {interpolate_mode!r}; choose one of {list(INTERPOLATE_MODES)}")
    name = _check_cam_layer(model, layer)
    record = run_pass(model, x, target, seed=seed, layers=[name], input_grad=False)
    cam = gradcam_from(record, name, "signed", True, interpolate_mode)
    return guided_backprop(model, x, record.target, seed=seed) * cam.unsqueeze(1)
