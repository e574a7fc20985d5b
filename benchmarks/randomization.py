"""Speed of the cascading randomization test and of its two repairs against Quantus' MPRT,
SmoothMPRT and EfficientMPRT, measured in one run.

    python benchmarks/randomization.py --model vgg --n-images 64 [--device auto] [--repeats 3] [--csv out.csv]
        [--smooth-samples 10] [--cases plain,smooth,efficient]

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

The repaired tests (``--cases smooth,efficient``; ``plain`` is (a) and (b)), bottom-up, every layer
re-initialised with PyTorch's default init, biases and BatchNorm included (``bias="init",
batchnorm="reset"``: the distribution of Quantus' ``reset_parameters``), the true labels explained:

(c) smooth MPRT of the gradient: ``saliency_sanity.checks.smooth_mprt`` against ``quantus.SmoothMPRT``,
    each map the average over ``--smooth-samples`` copies of the input (the last one noise-free) with
    noise magnitude 0.1, Spearman of the absolute maps at every stage;
(d) smooth MPRT of the suite without guided backprop: ``SmoothMPRT`` calls ``quantus.explain`` for
    every noisy copy itself, ignoring the ``explain_func`` it is given, so the explainer of our own
    cannot enter; one ``SmoothMPRT`` call per method against one ``smooth_mprt`` call for all;
(e), (f) efficient MPRT of the gradient and of the suite: ``saliency_sanity.efficient_mprt`` against
    ``quantus.EfficientMPRT`` (``skip_layers=True``: it randomizes the layers one by one but explains
    only the original and the fully randomized model; discrete entropy in 100 bins), one
    ``EfficientMPRT`` call per method against one ``efficient_mprt`` call for all.

The two draw different noise (ours keyed by image, Quantus' ``np.random.randn`` at every call) and
different random weights (ours keyed by layer name, Quantus' ``reset_parameters`` after reseeding):
the same work, not the same numbers, which is all a timing needs (the tests check that the scores
agree given the same draws). Quantus again explains the original model twice in both. The
unavoidable passes: for the smooth MPRT ``--smooth-samples`` times a stage's plain passes at every
evaluated stage (the original model and each randomized layer); for the efficient MPRT the maps on
two models, so its "per stage" is per explained model.
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

from saliency_sanity import efficient_mprt  # noqa: E402
from saliency_sanity.checks import randomization_test, smooth_mprt  # noqa: E402
from saliency_sanity.models.architectures import build_model, default_cam_layer  # noqa: E402
from saliency_sanity._core.device import resolve_device  # noqa: E402

IG = {"steps": 10, "rule": "riemann_trapezoid"}  # Quantus' fixed IG settings
SUITE = ["gradient", "input_x_gradient", "integrated_gradients", "guided_backprop", "deconvnet", "gradcam"]
# SmoothMPRT explains every noisy copy with quantus.explain itself, which has no guided backprop
SMOOTH_SUITE = [m for m in SUITE if m != "guided_backprop"]
CASES = ("plain", "smooth", "efficient")


def images(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded Fashion-MNIST test images and labels; random ones when the data is absent."""
    try:
        from saliency_sanity.data.images import load_fashion_mnist

        data = load_fashion_mnist("test").subset(n, seed=0)
        return data.images.to(device), data.labels.to(device)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"Fashion-MNIST not found ({type(err).__name__}); using random images", file=sys.stderr)
        gen = torch.Generator().manual_seed(0)
        return torch.rand(n, 1, 28, 28, generator=gen).to(device), torch.randint(0, 10, (n,), generator=gen).to(device)


def quantus_explain(method: str, cam_layer, x, device) -> tuple:
    """Quantus' ``explain_func`` and ``explain_func_kwargs`` for one method."""
    import quantus
    from captum.attr import GuidedBackprop

    if method == "guided_backprop":
        def explain(model, inputs, targets, **kwargs):
            inputs = torch.as_tensor(inputs, device=device)
            targets = torch.as_tensor(targets, device=device)
            return GuidedBackprop(model).attribute(inputs, target=targets).sum(1).detach().cpu().numpy()
        return explain, {}
    kwargs = {"method": {"gradient": "Gradient", "input_x_gradient": "InputXGradient",
                         "integrated_gradients": "IntegratedGradients", "deconvnet": "Deconvolution",
                         "gradcam": "LayerGradCam"}[method], "device": str(device)}
    if method == "gradcam":
        # a string that Quantus evaluates against the model it explains: MPRT explains deep
        # copies, on which a module object of the original model would never fire
        kwargs.update(gc_layer=f"model.{cam_layer}", interpolate=tuple(x.shape[-2:]))
    return quantus.explain, kwargs


def quantus_call(model, x, y, method: str, metric: str, cam_layer, device) -> list:
    """One MPRT run of Quantus for one method and one similarity function."""
    import quantus

    if metric == "spearman":
        similarity = quantus.similarity_func.correlation_spearman
    else:  # quantus' ssim returns a list, which its MPRT cannot take (it calls .tolist())
        def similarity(a, b, batched=False, **kwargs):
            return np.asarray(quantus.similarity_func.ssim(a, b, batched=batched, **kwargs))
    mprt = quantus.MPRT(similarity_func=similarity, layer_order="top_down", seed=0, abs=True, normalise=True,
                        disable_warnings=True, display_progressbar=False)
    func, kwargs = quantus_explain(method, cam_layer, x, device)
    return mprt(model=model, x_batch=x.cpu().numpy(), y_batch=y.cpu().numpy(), a_batch=None, explain_func=func,
                explain_func_kwargs=kwargs, device=str(device), batch_size=len(x))


def quantus_smooth_call(model, x, y, method: str, n_samples: int, cam_layer, device) -> dict:
    """One SmoothMPRT run of Quantus for one method (Spearman of the absolute averaged maps)."""
    import quantus

    if method == "guided_backprop":
        raise ValueError("SmoothMPRT calls quantus.explain itself, which has no guided backprop")
    smooth = quantus.SmoothMPRT(nr_samples=n_samples, noise_magnitude=0.1, layer_order="bottom_up", seed=0,
                                disable_warnings=True, display_progressbar=False)
    func, kwargs = quantus_explain(method, cam_layer, x, device)
    return smooth(model=model, x_batch=x.cpu().numpy(), y_batch=y.cpu().numpy(), a_batch=None, explain_func=func,
                  explain_func_kwargs=kwargs, device=str(device), batch_size=len(x))


def quantus_efficient_call(model, x, y, method: str, cam_layer, device) -> list:
    """One EfficientMPRT run of Quantus for one method (discrete entropy in 100 bins)."""
    import quantus

    efficient = quantus.EfficientMPRT(layer_order="bottom_up", seed=0, disable_warnings=True,
                                      display_progressbar=False, complexity_func_kwargs={"n_bins": 100})
    func, kwargs = quantus_explain(method, cam_layer, x, device)
    return efficient(model=model, x_batch=x.cpu().numpy(), y_batch=y.cpu().numpy(), a_batch=None,
                     explain_func=func, explain_func_kwargs=kwargs, device=str(device), batch_size=len(x))


def requests(methods):
    return [(m, m, IG) if m == "integrated_gradients" else m for m in methods]


def ours_call(model, x, y, methods, metrics):
    return randomization_test(model, x, requests(methods), mode="cascading", order="top_down", metrics=metrics,
                              explain="label", labels=y, init="default", seed=0, batch_size=len(x), progress=False)


def ours_smooth_call(model, x, y, methods, n_samples):
    return smooth_mprt(model, x, requests(methods), n_samples=n_samples, noise_magnitude=0.1, order="bottom_up",
                       explain="label", labels=y, init="default", bias="init", batchnorm="reset",
                       metrics=("spearman_abs",), normalize="none", seed=0, batch_size=len(x), progress=False)


def ours_efficient_call(model, x, y, methods):
    return efficient_mprt(model, x, requests(methods), explain="label", labels=y, init="default", bias="init",
                          batchnorm="reset", order="bottom_up", seed=0, batch_size=len(x), progress=False)


def kept(results: dict, key: str, fn):
    """``fn`` as a callable that keeps its last result in ``results[key]``."""
    def run():
        results[key] = fn()
    return run


def plain_pass(model, x, y):
    xi = x.clone().requires_grad_(True)
    torch.autograd.grad(model(xi).gather(1, y[:, None]).sum(), xi)


def case_list(text: str) -> list[str]:
    cases = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown or not cases:
        raise argparse.ArgumentTypeError(f"--cases takes a comma-separated subset of {','.join(CASES)}, got {text!r}")
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vgg", choices=["vgg", "resnet"])
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--csv", default=None)
    parser.add_argument("--smooth-samples", type=int, default=10,
                        help="noisy copies per map in the smooth MPRT, ours and Quantus' (default 10)")
    parser.add_argument("--cases", type=case_list, default=list(CASES),
                        help="comma-separated subset of plain (MPRT), smooth (smooth MPRT), efficient "
                             "(efficient MPRT); default all")
    args = parser.parse_args()
    if args.smooth_samples < 1:
        parser.error("--smooth-samples must be >= 1")
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

    def passes(methods) -> dict:
        fns = {"pass": lambda: plain_pass(model, x, y)}
        if methods != ["gradient"]:
            fns["ig_pass"] = lambda: plain_pass(model, xs, ys)
        return fns

    def floor(t: dict, methods) -> float:
        """One stage's unavoidable passes without noise: the shared pass, guided backprop and deconvnet
        one plain pass each, IG its path points."""
        if methods == ["gradient"]:
            return t["pass"]
        return (2 + ("guided_backprop" in methods)) * t["pass"] + t["ig_pass"]

    def add_row(case: str, t: dict, per_stage: float, unavoidable: float) -> None:
        rows.append({"case": case, "images": len(x), "stages": n_stages, "ours_s": t["ours"],
                     "quantus_s": t["quantus"], "speedup_vs_quantus": t["quantus"] / t["ours"],
                     "ours_per_stage_s": per_stage, "unavoidable_passes_per_stage_s": unavoidable,
                     "per_stage_over_passes": per_stage / unavoidable})

    if "plain" in args.cases:
        for case, methods, metrics in [("(a) gradient, Spearman", ["gradient"], ["spearman"]),
                                       ("(b) suite, Spearman + SSIM", SUITE, ["spearman", "ssim"])]:
            ours_metrics = ["spearman_abs" if m == "spearman" else m for m in metrics]
            fns = {"ours": lambda: ours_call(model, x, y, methods, ours_metrics),
                   "quantus": lambda: [quantus_call(peer_model, x, y, m, metric, cam_layer, device)
                                       for m in methods for metric in metrics],
                   **passes(methods)}
            t = timed(fns, device, args.repeats)
            add_row(case, t, t["ours"] / (n_stages + 1), floor(t, methods))
        # the two measure the same thing: the mean Spearman of the last stage (draws differ: Quantus
        # reseeds with seed + 1 before every layer, we draw each layer from its own seed)
        last = ours_call(model, x, y, ["gradient"], ["spearman_abs"])
        theirs = quantus_call(peer_model, x, y, "gradient", "spearman", cam_layer, device)
        print(f"mean Spearman (abs) after randomizing every layer: ours "
              f"{last[last.stage == n_stages].value.mean():.3f}, Quantus {np.mean(list(theirs.values())[-1]):.3f}")

    n = args.smooth_samples
    if "smooth" in args.cases:
        for case, methods in [("(c) smooth MPRT, gradient", ["gradient"]),
                              ("(d) smooth MPRT, suite without guided backprop", SMOOTH_SUITE)]:
            out: dict = {}
            fns = {"ours": kept(out, "ours", lambda: ours_smooth_call(model, x, y, methods, n)),
                   "quantus": kept(out, "quantus", lambda: [quantus_smooth_call(peer_model, x, y, m, n, cam_layer,
                                                                                device) for m in methods]),
                   **passes(methods)}
            t = timed(fns, device, args.repeats)
            # every stage (the original and each randomized layer) explains n copies of every image
            add_row(case, t, t["ours"] / (n_stages + 1), n * floor(t, methods))
            if methods == ["gradient"]:
                ours, theirs = out["ours"], out["quantus"][0]
                print(f"smooth MPRT ({n} samples), mean Spearman (abs) after randomizing every layer: ours "
                      f"{ours[ours.stage == n_stages].value.mean():.3f}, "
                      f"Quantus {np.mean(list(theirs.values())[-1]):.3f}")

    if "efficient" in args.cases:
        for case, methods in [("(e) efficient MPRT, gradient", ["gradient"]),
                              ("(f) efficient MPRT, suite", SUITE)]:
            out = {}
            fns = {"ours": kept(out, "ours", lambda: ours_efficient_call(model, x, y, methods)),
                   "quantus": kept(out, "quantus", lambda: [quantus_efficient_call(peer_model, x, y, m, cam_layer,
                                                                                   device) for m in methods]),
                   **passes(methods)}
            t = timed(fns, device, args.repeats)
            # two explained models (the original and the fully randomized one): "per stage" is per model
            add_row(case, t, t["ours"] / 2, floor(t, methods))
            if methods == ["gradient"]:
                print(f"efficient MPRT, mean relative rise in entropy: ours {out['ours'].value.mean():.3f}, "
                      f"Quantus {np.mean(out['quantus'][0]):.3f}")

    table = pd.DataFrame(rows)
    print(f"model {args.model}, device {device}, {len(x)} images, {n_stages} randomized layers (+ original), "
          f"smooth MPRT with {n} samples")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        table.assign(model=args.model, device=str(device)).to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
