"""Speed of the cascading randomization test against Quantus' MPRT, measured in one run.

    python benchmarks/randomization.py --model vgg --n-images 64 [--device auto] [--repeats 3] [--csv out.csv]

Same model (seeded random init of the project model, or the trained one from the cache with
``--trained``), same images (Fashion-MNIST test images; random images when the dataset is absent),
same methods, same explained classes (the true labels, fixed over the stages), same layer order
(top-down, every layer with parameters, re-initialised with PyTorch's default init as Quantus does).

(a) one method (the gradient) with Spearman rank correlation of absolute maps;
(b) the suite: every method Quantus can explain through Captum (gradient, input x gradient,
    integrated gradients with Quantus' fixed 10-step trapezoid rule, deconvnet, Grad-CAM) plus
    guided backprop through a Captum explain_func of our own (``quantus.explain`` has none), each
    with Spearman and SSIM at every stage. Quantus needs one MPRT call per (method, metric) and
    recomputes the maps in each; ours computes every map once per stage and shares one
    forward/backward among the methods that can share it.

Differences we cannot configure away: Quantus scores SSIM on the *flattened* maps (a 1-D signal,
window 7) with the data range of the pair, ours is the 2-D Gaussian-weighted SSIM of Adebayo et al.;
Quantus also explains the original model twice. Both are part of what its users pay for.

Also reported: our per-stage cost against the forward+backward passes the suite cannot avoid at
each stage (one plain pass per pass group: the shared pass, guided backprop, deconvnet, and one
pass over the 10 IG path points of every image).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from methods import no_inplace, timed  # noqa: E402  (benchmarks/ is not a package)

from saliency_sanity.checks import randomization_test  # noqa: E402
from saliency_sanity.models import build_model, default_cam_layer  # noqa: E402
from saliency_sanity.training import resolve_device  # noqa: E402

IG = {"steps": 10, "rule": "riemann_trapezoid"}  # Quantus' fixed IG settings
SUITE = ["gradient", "input_x_gradient", "integrated_gradients", "guided_backprop", "deconvnet", "gradcam"]


def images(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded Fashion-MNIST test images and labels; random ones when the data is absent."""
    try:
        from saliency_sanity.data import load_fashion_mnist

        data = load_fashion_mnist("test").subset(n, seed=0)
        return data.images.to(device), data.labels.to(device)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"Fashion-MNIST not found ({type(err).__name__}); using random images", file=sys.stderr)
        gen = torch.Generator().manual_seed(0)
        return torch.rand(n, 1, 28, 28, generator=gen).to(device), torch.randint(0, 10, (n,), generator=gen).to(device)


def quantus_call(model, x, y, method: str, metric: str, cam_layer, device) -> list:
    """One MPRT run of Quantus for one method and one similarity function."""
    import quantus
    from captum.attr import GuidedBackprop

    if metric == "spearman":
        similarity = quantus.similarity_func.correlation_spearman
    else:  # quantus' ssim returns a list, which its MPRT cannot take (it calls .tolist())
        def similarity(a, b, batched=False, **kwargs):
            return np.asarray(quantus.similarity_func.ssim(a, b, batched=batched, **kwargs))
    mprt = quantus.MPRT(similarity_func=similarity, layer_order="top_down", seed=0, abs=True, normalise=True,
                        disable_warnings=True, display_progressbar=False)
    if method == "guided_backprop":
        def explain(model, inputs, targets, **kwargs):
            inputs = torch.as_tensor(inputs, device=device)
            targets = torch.as_tensor(targets, device=device)
            return GuidedBackprop(model).attribute(inputs, target=targets).sum(1).detach().cpu().numpy()
        func, kwargs = explain, {}
    else:
        func = quantus.explain
        kwargs = {"method": {"gradient": "Gradient", "input_x_gradient": "InputXGradient",
                             "integrated_gradients": "IntegratedGradients", "deconvnet": "Deconvolution",
                             "gradcam": "LayerGradCam"}[method], "device": str(device)}
        if method == "gradcam":
            # a string that Quantus evaluates against the model it explains: MPRT explains deep
            # copies, on which a module object of the original model would never fire
            kwargs.update(gc_layer=f"model.{cam_layer}", interpolate=tuple(x.shape[-2:]))
    return mprt(model=model, x_batch=x.cpu().numpy(), y_batch=y.cpu().numpy(), a_batch=None, explain_func=func,
                explain_func_kwargs=kwargs, device=str(device), batch_size=len(x))


def ours_call(model, x, y, methods, metrics):
    requests = [(m, m, IG) if m == "integrated_gradients" else m for m in methods]
    return randomization_test(model, x, requests, mode="cascading", order="top_down", metrics=metrics,
                              explain="label", labels=y, init="default", seed=0, batch_size=len(x), progress=False)


def plain_pass(model, x, y):
    xi = x.clone().requires_grad_(True)
    torch.autograd.grad(model(xi).gather(1, y[:, None]).sum(), xi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vgg", choices=["vgg", "resnet"])
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--csv", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    warnings.filterwarnings("ignore")
    model = build_model(args.model, seed=0).to(device).eval()
    peer_model = no_inplace(model)
    x, y = images(args.n_images, device)
    cam_layer = default_cam_layer(peer_model)

    frame = ours_call(model, x, y, ["gradient"], ["spearman_abs"])
    n_stages = int(frame.stage.max())  # re-initialised layers; stage 0 is the original model
    rows = []
    xs, ys = x.repeat(IG["steps"], 1, 1, 1), y.repeat(IG["steps"])
    for case, methods, metrics in [("(a) gradient, Spearman", ["gradient"], ["spearman"]),
                                   ("(b) suite, Spearman + SSIM", SUITE, ["spearman", "ssim"])]:
        ours_metrics = ["spearman_abs" if m == "spearman" else m for m in metrics]
        fns = {"ours": lambda: ours_call(model, x, y, methods, ours_metrics),
               "quantus": lambda: [quantus_call(peer_model, x, y, m, metric, cam_layer, device)
                                   for m in methods for metric in metrics],
               "pass": lambda: plain_pass(model, x, y)}
        if methods != ["gradient"]:
            fns["ig_pass"] = lambda: plain_pass(model, xs, ys)
        t = timed(fns, device, args.repeats)
        # the shared pass, guided backprop and deconvnet: one plain pass each; IG: its path points
        floor = t["pass"] if methods == ["gradient"] else 3 * t["pass"] + t["ig_pass"]
        per_stage = t["ours"] / (n_stages + 1)
        rows.append({"case": case, "images": len(x), "stages": n_stages, "ours_s": t["ours"],
                     "quantus_s": t["quantus"], "speedup_vs_quantus": t["quantus"] / t["ours"],
                     "ours_per_stage_s": per_stage, "unavoidable_passes_per_stage_s": floor,
                     "per_stage_over_passes": per_stage / floor})
    # the two measure the same thing: the mean Spearman of the last stage (draws differ: Quantus
    # reseeds with seed + 1 before every layer, we draw each layer from its own seed)
    last = ours_call(model, x, y, ["gradient"], ["spearman_abs"])
    theirs = quantus_call(peer_model, x, y, "gradient", "spearman", cam_layer, device)
    print(f"mean Spearman (abs) after randomizing every layer: ours {last[last.stage == n_stages].value.mean():.3f}, "
          f"Quantus {np.mean(list(theirs.values())[-1]):.3f}")
    table = pd.DataFrame(rows)
    print(f"model {args.model}, device {device}, {len(x)} images, {n_stages} randomized layers (+ original)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        table.assign(model=args.model, device=str(device)).to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
