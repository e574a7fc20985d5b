"""Speed of every saliency method against its peer implementation, measured in one run.

    python benchmarks/methods.py --model vgg --batch 32 [--device auto] [--repeats 5] [--csv out.csv]
                                 [--methods gradient,gradcam,...]

For each method: maps per second for ours and for the peer (Captum, Zennit, pytorch-grad-cam) on
the same model, batch and device; the ratio (>1: ours faster); our cost in units of one plain
forward pass + backward to the input (no weight gradients: the cheapest way to get dy_c/dx); and
the shared pass of {gradient, input_x_gradient, gradcam, gradcam_pp, fullgrad} against one pass.
Ours, the peer and the plain pass run round-robin, one warm-up each, then the median of
``--repeats`` rounds, so that a busy machine slows all three alike.

To add a method: register it in ``saliency_sanity``, add its name to ``names`` in :func:`main`
and its peer callable (inputs, targets and model fixed) to the dict that :func:`peers` returns.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import pandas as pd
import torch
from torch import nn

from saliency_sanity import attribute, attribute_many
from saliency_sanity.models.architectures import build_model, default_cam_layer, get_layer, torchvision_model
from saliency_sanity._core.device import resolve_device


def timed(fns: dict, device, repeats: int) -> dict:
    """Median seconds of each callable in ``fns``, run round-robin (one call of each per round,
    after one warm-up call each) so that they share the same background load of the machine."""
    def once(fn):
        tic = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - tic

    for fn in fns.values():
        once(fn)
    times = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            times[key].append(once(fn))
    return {key: statistics.median(v) for key, v in times.items()}


def no_inplace(model: nn.Module) -> nn.Module:
    clone = copy.deepcopy(model)
    for m in clone.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return clone


def peers(model: nn.Module, x: torch.Tensor, target: torch.Tensor, steps: int) -> dict:
    """method -> a callable computing the peer's maps for the same inputs and targets."""
    from captum.attr import (Deconvolution, GuidedBackprop, InputXGradient, IntegratedGradients, LayerGradCam,
                             NoiseTunnel, Saliency)
    from pytorch_grad_cam import FullGrad, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite
    from zennit.rules import AlphaBeta, Epsilon, Norm, Pass
    from zennit.types import Activation, AvgPool

    flat = no_inplace(model)  # Captum's and Zennit's hooks need ReLUs that are not in-place
    layer = get_layer(model, default_cam_layer(model))
    targets = [ClassifierOutputTarget(int(t)) for t in target]
    one_hot = torch.eye(model(x[:1]).shape[1], device=x.device)[target]

    def zennit(rule):
        composite = LayerMapComposite([(Activation, Pass()), (AvgPool, Norm()), (nn.Conv2d, rule), (nn.Linear, rule)])

        def run():
            with Gradient(model=flat, composite=composite) as attributor:
                return attributor(x, lambda out: one_hot * out)[1]
        return run

    def grad_cam(cls):
        def run():
            with cls(model=model, target_layers=[] if cls is FullGrad else [layer]) as cam:
                return cam(input_tensor=x, targets=targets)
        return run

    xr = x.clone().requires_grad_(True)
    out = {
        "gradient": lambda: Saliency(model).attribute(xr, target=target, abs=False),
        "input_x_gradient": lambda: InputXGradient(model).attribute(xr, target=target),
        "smoothgrad": lambda: NoiseTunnel(Saliency(model)).attribute(xr, nt_type="smoothgrad", nt_samples=16,
                                                                     stdevs=0.15, target=target, abs=False),
        "integrated_gradients": lambda: IntegratedGradients(model).attribute(x, target=target, n_steps=steps),
        "guided_backprop": lambda: GuidedBackprop(flat).attribute(xr, target=target),
        "deconvnet": lambda: Deconvolution(flat).attribute(xr, target=target),
        "gradcam": lambda: LayerGradCam(model, layer).attribute(x, target=target),
        "gradcam_pp": grad_cam(GradCAMPlusPlus),
        "fullgrad": grad_cam(FullGrad),
    }
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):  # Zennit needs its canonizers for BN
        out["lrp_epsilon"] = zennit(Epsilon(0.25))  # our default epsilon
        out["lrp_alpha_beta"] = zennit(AlphaBeta(2.0, 1.0))
    return out


SHARED = ["gradient", "input_x_gradient", "gradcam", "gradcam_pp", "fullgrad"]
# the same work as the peer: pytorch-grad-cam's FullGrad scales per channel
OURS_OPTIONS = {"integrated_gradients": {"steps": 32}, "smoothgrad": {"n_samples": 16},
                "fullgrad": {"normalize": "per_channel"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg", choices=["vgg", "resnet", "vgg16", "resnet50"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--csv", default=None)
    parser.add_argument("--methods", default=None, help="comma-separated subset of the methods (default: all)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    if args.model in ("vgg", "resnet"):
        model, shape = build_model(args.model, seed=0), (1, 28, 28)
    else:
        model, shape = torchvision_model(args.model), (3, 224, 224)
    model = model.to(device).eval()
    x = torch.rand(args.batch, *shape, device=device)
    with torch.no_grad():
        target = model(x).argmax(1)

    def plain_pass():
        # the cheapest pass that yields an input gradient: no weight gradients are computed
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xi).gather(1, target[:, None]).sum(), xi)

    peer = peers(model, x, target, OURS_OPTIONS["integrated_gradients"]["steps"])
    rows = []
    names = ["gradient", "input_x_gradient", "smoothgrad", "integrated_gradients", "guided_backprop", "deconvnet",
             "rectgrad", "lrp_epsilon", "lrp_alpha_beta", "lrp_zplus", "gradcam", "gradcam_pp", "fullgrad"]
    if args.methods:
        unknown = set(args.methods.split(",")) - set(names)
        if unknown:
            parser.error(f"unknown method(s) {sorted(unknown)}; choose from {names}")
        names = [n for n in names if n in args.methods.split(",")]
    passes = []
    for name in names:
        fns = {"pass": plain_pass,
               "ours": lambda name=name: attribute(model, x, target, name, **OURS_OPTIONS.get(name, {}))}
        if name in peer:
            fns["peer"] = peer[name]
        t = timed(fns, device, args.repeats)
        theirs = t.get("peer", float("nan"))
        passes.append(t["pass"])
        rows.append({"method": name, "ours_maps_per_s": args.batch / t["ours"], "peer_maps_per_s": args.batch / theirs,
                     "speedup_vs_peer": theirs / t["ours"], "cost_in_passes": t["ours"] / t["pass"]})
    t = timed({"pass": plain_pass, "shared": lambda: attribute_many(model, x, target, SHARED),
               "separate": lambda: [attribute(model, x, target, n) for n in SHARED]}, device, args.repeats)
    passes.append(t["pass"])
    rows.append({"method": "shared pass (5 methods)", "ours_maps_per_s": 5 * args.batch / t["shared"],
                 "peer_maps_per_s": 5 * args.batch / t["separate"], "speedup_vs_peer": t["separate"] / t["shared"],
                 "cost_in_passes": t["shared"] / t["pass"]})
    one_pass = statistics.median(passes)
    table = pd.DataFrame(rows)
    print(f"model {args.model}, batch {args.batch}, device {device}, one forward + input-gradient backward {1000 * one_pass:.1f} ms (median)")
    print("(shared pass row: 'peer' = our five methods called one by one)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.csv:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
