"""Local instability across retraining: label entropy, churn, probability spread, map stability.

After Datta et al. (2023), "Measuring and Mitigating Local Instability in Deep Neural Networks":
the per-sample label entropy LE(x) = -sum_c p_c log p_c, p_c the fraction of N retraining runs
predicting class c (natural log), the same across the epochs of one run (temporal label
entropy), and churn, the fraction of samples on which two runs disagree. Carried to saliency
maps: the mean pairwise similarity of one image's maps across runs (cf. Arun et al. 2021,
"repeatability") and the pixel-wise spread of the normalised maps, with every run's model
explaining its own top-1 class or one fixed class per image, e.g. the true label
(:func:`run_maps`), so that on unstable images the maps of different classes are not compared.

Prediction metrics take tensors or arrays and return the same kind (torch in, torch out on the
same device; anything else in, numpy out), float64. Map metrics take and return tensors.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .similarity import similarity

# ----------------------------------------------------------------------------- input checks

def _as_tensor(x: object, name: str) -> tuple[torch.Tensor, bool]:
    """``x`` as a tensor, and whether the caller gave a tensor (to answer in the same kind)."""
    if isinstance(x, torch.Tensor):
        return x, True
    try:
        return torch.as_tensor(np.asarray(x)), False
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__} ({err})") from err


def _answer(x: torch.Tensor, as_torch: bool):
    return x if as_torch else x.cpu().numpy()


def _predictions(x: object, name: str, runs_name: str = "runs") -> tuple[torch.Tensor, bool]:
    """Validate class indices [N_runs, N_samples] (integers >= 0)."""
    p, as_torch = _as_tensor(x, name)
    if p.is_floating_point() or p.is_complex() or p.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {p.dtype}; "
                        "take logits.argmax(-1) of each run")
    if p.dim() != 2 or p.shape[0] < 1 or p.shape[1] < 1:
        raise ValueError(f"{name} must have shape [N_{runs_name}, N_samples] with both >= 1, got {tuple(p.shape)}")
    if (p < 0).any():
        raise ValueError(f"{name} must hold class indices >= 0, got a minimum of {int(p.min())}")
    return p.long(), as_torch


# ----------------------------------------------------------------------------- prediction metrics

def _entropy_of_votes(p: torch.Tensor) -> torch.Tensor:
    """Entropy of the per-column class frequencies of integer votes [R, N] -> float64 [N]."""
    r, n = p.shape
    counts = torch.zeros(n, int(p.max()) + 1, dtype=torch.float64, device=p.device)
    counts.scatter_add_(1, p.T, torch.ones(n, r, dtype=torch.float64, device=p.device))
    freq = counts / r
    # 0 log 0 = 0: classes nobody predicted contribute nothing
    return -(freq * torch.log(torch.where(freq > 0, freq, torch.ones_like(freq)))).sum(1)


def label_entropy(predictions):
    """Per-sample label entropy across retraining runs: predictions [N_runs, N_samples] -> [N_samples].

    Datta et al. (2023): LE(x) = -sum_c p_c log p_c with p_c the fraction of runs that
    predict class c for x (natural log). 0 when all runs agree, log N_runs when all differ.
    """
    p, as_torch = _predictions(predictions, "predictions")
    return _answer(_entropy_of_votes(p), as_torch)


def temporal_label_entropy(per_epoch_predictions, from_epoch: int = 1):
    """Label entropy across the epochs of ONE run: predictions [N_epochs, N_samples] -> [N_samples].

    The within-run estimate of Datta et al. (2023): the formula of :func:`label_entropy`
    over the checkpoints of one training run, using epochs ``from_epoch``..N_epochs (1-based), so
    that the first, still-random epochs can be skipped.
    """
    p, as_torch = _predictions(per_epoch_predictions, "per_epoch_predictions", "epochs")
    if isinstance(from_epoch, bool) or not isinstance(from_epoch, int) or not 1 <= from_epoch <= p.shape[0]:
        raise ValueError(f"from_epoch must be an integer in [1, {p.shape[0]}] (1-based, the number of epochs "
                         f"given), got {from_epoch!r}")
    return _answer(_entropy_of_votes(p[from_epoch - 1:]), as_torch)


def churn(pred_a, pred_b) -> float:
    """Fraction of samples on which two runs predict different classes (symmetric, in [0, 1]).

    Prediction churn (Milani Fard et al. 2016), as used by Datta et al. (2023).
    """
    a, _ = _as_tensor(pred_a, "pred_a")
    b, _ = _as_tensor(pred_b, "pred_b")
    if a.dim() != 1 or a.shape != b.shape or len(a) == 0:
        raise ValueError(f"pred_a and pred_b must be two 1-D class-index vectors of the same non-zero length, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    _predictions(torch.stack([a, b.to(a.device)]), "pred_a and pred_b")
    return (a != b.to(a.device)).double().mean().item()


def pairwise_churn(predictions, runs: Sequence | None = None) -> pd.DataFrame:
    """Churn of every pair of runs: predictions [N_runs, N_samples] -> DataFrame (run_a, run_b, churn).

    One row per unordered pair a < b; ``runs`` names the runs (default 0..N_runs-1).
    """
    p, _ = _predictions(predictions, "predictions")
    r = p.shape[0]
    names = list(range(r)) if runs is None else list(runs)
    if len(names) != r:
        raise ValueError(f"runs names {len(names)} runs but predictions has {r}")
    disagree = (p[:, None, :] != p[None, :, :]).double().mean(-1)  # [R, R]
    ia, ib = torch.triu_indices(r, r, offset=1)
    return pd.DataFrame({"run_a": [names[i] for i in ia.tolist()], "run_b": [names[i] for i in ib.tolist()],
                         "churn": disagree[ia, ib].cpu().numpy()})


def _probabilities(probabilities, labels):
    q, as_torch = _as_tensor(probabilities, "probabilities")
    y, _ = _as_tensor(labels, "labels")
    if q.dim() != 3 or not q.is_floating_point():
        raise ValueError(f"probabilities must be a floating array [N_runs, N_samples, N_classes], got "
                         f"{tuple(q.shape)} of {q.dtype}")
    y = y.to(q.device)
    if y.dim() != 1 or len(y) != q.shape[1] or y.is_floating_point():
        raise ValueError(f"labels must be integer class indices [N_samples={q.shape[1]}], got {tuple(y.shape)} "
                         f"of {y.dtype}")
    if len(y) and (y.min() < 0 or y.max() >= q.shape[2]):
        raise ValueError(f"labels must lie in [0, {q.shape[2] - 1}], got [{int(y.min())}, {int(y.max())}]")
    if q.numel() and ((q < 0).any() or not torch.allclose(q.sum(-1).double(), torch.ones((), dtype=torch.float64,
                                                                                         device=q.device), atol=1e-3)):
        raise ValueError("probabilities must be >= 0 and sum to 1 over classes; these look like logits: "
                         "apply logits.softmax(-1) first")
    return q, y.long(), as_torch


def true_class_probability(probabilities, labels):
    """p_y(x) of every run: probabilities [N_runs, N_samples, K], labels [N_samples] -> [N_runs, N_samples]."""
    q, y, as_torch = _probabilities(probabilities, labels)
    return _answer(q.double().gather(2, y.view(1, -1, 1).expand(q.shape[0], -1, 1)).squeeze(2), as_torch)


def true_class_probability_std(probabilities, labels, ddof: int = 0):
    """Per-sample standard deviation across runs of the true class's probability -> [N_samples].

    Datta et al. (2023)'s spread of p_y(x) over retraining runs:
    sqrt(sum_r (p_y^r(x) - mean_r p_y^r(x))^2 / (N_runs - ddof)); ``ddof=0`` (default) the
    population std, ``ddof=1`` the sample std (needs two runs).
    """
    q, y, as_torch = _probabilities(probabilities, labels)
    if ddof not in (0, 1) or q.shape[0] <= ddof:
        raise ValueError(f"ddof must be 0 or 1 and smaller than the number of runs {q.shape[0]}, got {ddof}")
    p_true = true_class_probability(q, y)
    return _answer(p_true.std(0, correction=ddof), as_torch)


# ----------------------------------------------------------------------------- map metrics

def _map_runs(maps: object) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"maps must be a torch.Tensor [N_runs, N_images, H, W], got {type(maps).__name__}")
    if maps.dim() not in (4, 5) or maps.shape[0] < 2 or maps.shape[1] < 1:
        raise ValueError(f"maps must have shape [N_runs >= 2, N_images, H, W] (or with channels [.., C, H, W]), "
                         f"got {tuple(maps.shape)}; stack the maps of every run along a new first dimension")
    if not maps.is_floating_point():
        raise TypeError(f"maps must be floating, got {maps.dtype}")
    return maps


def map_stability(maps: torch.Tensor, metric: str = "spearman_abs", *, normalize: str = "default",
                  **options) -> torch.Tensor:
    """Per-image mean pairwise similarity of one image's maps across runs -> Tensor[N_images].

    maps [N_runs, N_images, H, W] (or [N_runs, N_images, C, H, W]): the map of image i by the model
    of run r. For every unordered pair of runs, :func:`saliency_sanity.metrics.similarity.similarity` with
    ``metric``, ``normalize`` and ``options``; the mean over the N_runs (N_runs - 1) / 2 pairs
    (cf. Arun et al. 2021, repeatability). An undefined pair (a constant map) makes the image NaN.
    """
    maps = _map_runs(maps)
    r = maps.shape[0]
    total = None
    for a in range(r):
        for b in range(a + 1, r):
            value = similarity(maps[a], maps[b], metric, normalize=normalize, **options)
            total = value if total is None else total + value
    return total / (r * (r - 1) // 2)


def pixel_dispersion(maps: torch.Tensor) -> torch.Tensor:
    """Per-image mean over pixels of the std across runs of the max|.|-normalised maps -> Tensor[N_images].

    Each map is divided by its own max|.| (an all-zero map stays zero), then the population std
    over runs is taken pixel by pixel and averaged over the image: 0 for identical maps, at most 1.
    """
    maps = _map_runs(maps)
    flat = maps.flatten(2)
    scale = flat.abs().amax(2, keepdim=True)
    flat = flat / torch.where(scale > 0, scale, torch.ones_like(scale))
    return flat.std(0, correction=0).mean(1)


def map_stability_table(maps: torch.Tensor, metrics: Sequence[str] = ("spearman_abs", "ssim"), *,
                        normalize: str = "default", samples=None, target: str | None = None,
                        **options) -> pd.DataFrame:
    """Tidy table of map stability: one row per image x metric (sample, metric, value).

    Every metric of :func:`map_stability` plus ``"pixel_dispersion"``; joins :func:`instability_table`
    on ``sample`` (``samples``: the images' indices there, default 0..N_images-1). With ``target``
    (e.g. ``"top1"`` or ``"true label"``: which class the maps explain, see :func:`run_maps`), a
    column ``target`` holds it, so that tables of both targets can be stacked and compared.
    """
    maps = _map_runs(maps)
    index = np.arange(maps.shape[1]) if samples is None else np.asarray(samples).reshape(-1)
    if len(index) != maps.shape[1]:
        raise ValueError(f"samples names {len(index)} images but maps has {maps.shape[1]}")
    rows = [pd.DataFrame({"sample": index, "metric": m,
                          "value": map_stability(maps, m, normalize=normalize, **options).double().cpu().numpy()})
            for m in metrics]
    rows.append(pd.DataFrame({"sample": index, "metric": "pixel_dispersion",
                              "value": pixel_dispersion(maps).double().cpu().numpy()}))
    table = pd.concat(rows, ignore_index=True)
    if target is not None:
        table.insert(0, "target", target)
    return table


def run_maps(runs: Sequence, x: torch.Tensor, methods, target="top1", *, device=None) -> dict[str, torch.Tensor]:
    """The maps of the same images by every run's model: ``{label: maps [N_runs, N_images, H, W]}``.

    ``runs``: trained runs (anything with a ``model``: ``TrainedModel``, ``MitigatedRun``) or
    modules; ``methods``: as for :func:`saliency_sanity.methods.many.attribute_many` (names or
    ``(label, name, options)``). ``target``: ``"top1"`` (default), every model explaining its own
    top-1 class, which differs between runs exactly on the images whose prediction is unstable; or
    a fixed class per image (an int or a LongTensor [N_images], e.g. the true labels), the same for
    every run, so that :func:`map_stability` compares maps of one class. ``device``: where the
    maps are returned (default: the images'); each model is evaluated where it is and left as it was.
    """
    from ..methods.many import attribute_many  # methods import heavy deps: load on use

    runs = list(runs)
    if len(runs) < 2:
        raise ValueError(f"run_maps needs at least two runs to compare, got {len(runs)}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be images [N_images, C, H, W], got {getattr(x, 'shape', type(x).__name__)}")
    if isinstance(target, str) and target != "top1":
        raise ValueError(f"target must be 'top1' or fixed class indices (int or LongTensor[N_images]), got {target!r}")
    device = x.device if device is None else torch.device(device)
    x = x.to(device)
    per_run = []
    for run in runs:
        model = run if isinstance(run, torch.nn.Module) else getattr(run, "model", None)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"runs must be modules or runs with a .model, got {type(run).__name__}")
        # the caller's model stays where and as it is (attribute_many evaluates it in eval mode and restores it)
        on = next(model.parameters()).device
        maps = attribute_many(model, x.to(on), target if isinstance(target, str) else torch.as_tensor(target).to(on),
                              methods)
        per_run.append({label: m.to(device) for label, m in maps.items()})
    return {label: torch.stack([r[label] for r in per_run]) for label in per_run[0] if label != "target"}


# ----------------------------------------------------------------------------- from trained runs

def run_probabilities(runs: Sequence, epoch: int | None = None) -> torch.Tensor:
    """Test-set probabilities [N_runs, N_samples, K] of trained runs (``TrainedModel``s), after ``epoch``."""
    return torch.stack([run.test_logits(epoch).double().softmax(-1) for run in runs])


def epoch_predictions(runs: Sequence, from_epoch: int = 1) -> torch.Tensor:
    """Test-set predictions of every epoch of every run: [N_runs, N_epochs, N_samples]."""
    return torch.stack([run.epoch_logits("test", from_epoch).argmax(-1) for run in runs])


def instability_table(probabilities, labels, *, classes: Sequence[str] | None = None,
                      per_epoch_predictions=None, from_epoch: int = 1, ddof: int = 0) -> pd.DataFrame:
    """Per-sample prediction instability as one tidy DataFrame (one row per sample).

    After Datta et al. (2023). ``probabilities`` [N_runs, N_samples, K] of N retraining runs;
    ``per_epoch_predictions`` [N_epochs, N_samples] of one run or [N_runs, N_epochs, N_samples] of
    each (optional). Columns: ``sample``, ``label``, ``class_name``, ``label_entropy`` (across runs),
    ``temporal_label_entropy`` (within a run, from ``from_epoch``; with several runs the mean of
    their values), ``true_class_prob_mean``, ``true_class_prob_std`` (``ddof``), ``majority``
    (the most frequent prediction, lowest class on ties), ``agreement`` (fraction of runs predicting
    the majority) and ``accuracy`` (fraction of runs predicting the label).
    """
    q, y, _ = _probabilities(probabilities, labels)
    pred = q.argmax(-1)  # [R, N]
    p_true = true_class_probability(q, y)
    votes = torch.zeros(q.shape[1], q.shape[2], dtype=torch.float64, device=q.device)
    votes.scatter_add_(1, pred.T, torch.ones(pred.T.shape, dtype=torch.float64, device=q.device))
    majority = votes.argmax(1)
    names = classes if classes is not None else [str(c) for c in range(q.shape[2])]
    if len(names) != q.shape[2]:
        raise ValueError(f"classes names {len(names)} classes but probabilities have {q.shape[2]}")
    frame = pd.DataFrame({
        "sample": np.arange(q.shape[1]),
        "label": y.cpu().numpy(),
        "class_name": [names[c] for c in y.tolist()],
        "label_entropy": _entropy_of_votes(pred).cpu().numpy(),
    })
    if per_epoch_predictions is not None:
        e, _ = _as_tensor(per_epoch_predictions, "per_epoch_predictions")
        e = e.unsqueeze(0) if e.dim() == 2 else e
        if e.dim() != 3 or e.shape[-1] != q.shape[1]:
            raise ValueError(f"per_epoch_predictions must be [N_epochs, N_samples] or [N_runs, N_epochs, N_samples] "
                             f"with N_samples={q.shape[1]}, got {tuple(e.shape)}")
        frame["temporal_label_entropy"] = torch.stack(
            [temporal_label_entropy(run, from_epoch) for run in e]).mean(0).cpu().numpy()
    frame["true_class_prob_mean"] = p_true.mean(0).cpu().numpy()
    frame["true_class_prob_std"] = true_class_probability_std(q, y, ddof).cpu().numpy()
    frame["majority"] = majority.cpu().numpy()
    frame["agreement"] = (votes.amax(1) / q.shape[0]).cpu().numpy()
    frame["accuracy"] = (pred == y).double().mean(0).cpu().numpy()
    return frame


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """The model-ignoring control: the Sobel gradient magnitude of the image, summed over channels -> [B, H, W].

    Adebayo et al. (2018), Sec. 3 use an edge detector to show what a map that never looks at the
    model looks like: perfectly stable across retraining and blind to randomization.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be images [B, C, H, W], got {getattr(x, 'shape', type(x).__name__)}")
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernels = torch.stack([kx, kx.T]).unsqueeze(1)  # [2, 1, 3, 3]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    g = torch.nn.functional.conv2d(flat, kernels, padding=1)
    return g.pow(2).sum(1).sqrt().reshape(x.shape).sum(1)


def max_label_entropy(n_runs: int, n_classes: int) -> float:
    """The largest possible label entropy, log min(N_runs, K): for scaling plots and thresholds."""
    return math.log(min(n_runs, n_classes))
