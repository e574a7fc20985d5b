"""The ImageNet-size randomization protocol: torchvision VGG-16 at 224x224, every method, every layer.

    python benchmarks/imagenet_protocol.py [--n-images 200] [--device auto] [--batch 32] [--csv out.csv]

Random weights (nothing can be downloaded here; the cost does not depend on them), random images,
cascading top-down randomization over every layer with parameters (13 conv + 3 linear = 16 stages
plus the original model), every gradient-based method of the registry (``sound_mask`` is an
optimisation per map and is left out), Spearman (abs) and SSIM at every stage.

Reports images/second (images x all methods x all stages per second of wall time), the total time,
and the cost of the forward+backward passes the protocol cannot avoid: per image and stage one
shared pass (gradient, Input x Gradient, Grad-CAM, Grad-CAM++, FullGrad), SmoothGrad's samples,
Integrated Gradients' steps, and one pass each for Guided Backprop, Deconvnet, RectGrad and the
three LRP rules -- timed as plain forward + input-gradient backward passes of the same batch.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from saliency_sanity.checks import randomization_test
from saliency_sanity.models.architectures import torchvision_model
from saliency_sanity._core.device import resolve_device

OPTIONS = {"smoothgrad": {"n_samples": 8, "internal_batch_size": 64},
           "integrated_gradients": {"steps": 16, "internal_batch_size": 64}}
ONE_PASS = ["guided_backprop", "deconvnet", "rectgrad", "lrp_epsilon", "lrp_alpha_beta", "lrp_zplus"]
SHARED = ["gradient", "input_x_gradient", "gradcam", "gradcam_pp", "fullgrad"]


def plain_pass(model, x) -> None:
    xi = x.clone().requires_grad_(True)
    torch.autograd.grad(model(xi).max(1).values.sum(), xi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--stages", type=int, default=None, help="evaluate only the first N stages (smoke use)")
    parser.add_argument("--methods", default=None, help="comma-separated subset (default: all)")
    parser.add_argument("--csv", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    model = torchvision_model("vgg16").to(device).eval()
    x = torch.rand(args.n_images, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    names = args.methods.split(",") if args.methods else SHARED + ["smoothgrad", "integrated_gradients"] + ONE_PASS
    requests = [(n, n, OPTIONS.get(n, {})) for n in names]
    stages = None if args.stages is None else list(range(args.stages))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    tic = time.perf_counter()
    frame = randomization_test(model, x, requests, mode="cascading", order="top_down",
                               metrics=("spearman_abs", "ssim"), init="default", batch_size=args.batch,
                               stages=stages, progress=True)
    sync()
    total = time.perf_counter() - tic
    n_stages = frame.stage.nunique()

    passes_per_image = (any(n in SHARED for n in names) + sum(n in ONE_PASS for n in names)
                        + OPTIONS["smoothgrad"]["n_samples"] * ("smoothgrad" in names)
                        + OPTIONS["integrated_gradients"]["steps"] * ("integrated_gradients" in names))
    xb = x[:args.batch]
    plain_pass(model, xb)
    sync()
    tic = time.perf_counter()
    repeats = 5
    for _ in range(repeats):
        plain_pass(model, xb)
    sync()
    per_image_pass = (time.perf_counter() - tic) / repeats / len(xb)
    passes = per_image_pass * passes_per_image * len(x) * n_stages
    row = {"model": "torchvision vgg16", "device": str(device), "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "",
           "images": len(x), "stages": n_stages, "methods": len(names), "metrics": 2,
           "total_s": total, "images_per_s": len(x) * n_stages / total,
           "maps_per_s": len(x) * n_stages * len(names) / total,
           "passes_per_image_stage": passes_per_image, "unavoidable_passes_s": passes, "total_over_passes": total / passes}
    table = pd.DataFrame([row])
    print(table.T.to_string(header=False))
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
