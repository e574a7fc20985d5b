"""eMPRT (Hedström et al. 2023): discrete entropy and the relative rise in complexity, equal to Quantus."""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from torch import nn

import saliency_sanity.checks.efficient as emprt_module
from saliency_sanity import attribute
from saliency_sanity.metrics.complexity import discrete_entropy, histogram_counts
from saliency_sanity.checks.efficient import COLUMNS, efficient_mprt
from saliency_sanity.checks.randomize import randomized

from helpers.model_state import assert_unchanged, state

quantus = pytest.importorskip("quantus")
from quantus.functions.complexity_func import discrete_entropy as quantus_discrete_entropy  # noqa: E402
from quantus.helpers.model.pytorch_model import PyTorchModel  # noqa: E402

# Entropies are float64 sums of -p log p over the same counts: only the summation order differs.
ENTROPY_TOL = dict(rtol=1e-12, atol=1e-14)
# The maps are bit-identical in both (same model, weights, inputs and batches), so the histograms are
# identical and the relative rise differs by float64 rounding of the entropies only.
QUANTUS_TOL = dict(rtol=1e-9, atol=1e-12)


pytestmark = pytest.mark.usefixtures("one_thread")


def gray_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 10 * 10, 5)).eval()


def color_net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 12, 5)).eval()


def images(n: int, shape=(1, 12, 12), seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------- discrete entropy


def _maps(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal32":
        return rng.normal(size=(4, 3, 6, 7)).astype(np.float32)
    if kind == "normal64":
        return rng.normal(size=(4, 3, 6, 7))
    if kind == "ties":  # few distinct values, many repeated
        return np.round(rng.normal(size=(4, 60)) * 2) / 3
    if kind == "ties32":
        return (np.round(rng.normal(size=(4, 60)) * 2) / 3).astype(np.float32)
    if kind == "edges":  # integer values on exact bin edges: 0..42 spans 7 bins of width 6, 100 of 0.42
        return np.tile(np.arange(43.0), (4, 2))
    if kind == "edges32":
        return np.stack([np.arange(0, 701) / 7.0, np.arange(0, 701) / 10.0]).astype(np.float32)
    raise AssertionError(kind)


@pytest.mark.parametrize("n_bins", [1, 7, 100])
@pytest.mark.parametrize("kind", ["normal32", "normal64", "ties", "ties32", "edges", "edges32"])
def test_discrete_entropy_equals_quantus_numpy_and_scipy(kind, n_bins):
    a = _maps(kind, np.random.default_rng(len(kind) + n_bins))
    t = torch.from_numpy(a)
    counts = histogram_counts(t, n_bins).numpy()
    got = discrete_entropy(t, n_bins)
    assert got.dtype == torch.float64 and got.shape == (len(a),)
    for i in range(len(a)):
        np.testing.assert_array_equal(counts[i], np.histogram(a[i], bins=n_bins)[0])  # bin for bin
        reference = scipy.stats.entropy(np.histogram(a[i], bins=n_bins)[0])
        np.testing.assert_allclose(got[i].item(), reference, **ENTROPY_TOL)
        np.testing.assert_allclose(got[i].item(), quantus_discrete_entropy(a=a[i], x=None, n_bins=n_bins),
                                   **ENTROPY_TOL)


def test_integer_maps_and_values_within_one_ulp_of_an_edge_bin_as_numpy():
    ints = torch.randint(-20, 21, (5, 3, 4), generator=torch.Generator().manual_seed(0))
    for n in (1, 7, 100):
        for i in range(len(ints)):
            np.testing.assert_array_equal(histogram_counts(ints, n)[i].numpy(), np.histogram(ints[i].numpy(), n)[0])
    # float32 values one ulp either side of every edge of [0, 1] in 10 bins
    edges = np.linspace(np.float32(0), np.float32(1), 11, dtype=np.float32)
    near = np.concatenate([np.nextafter(edges, np.float32(-1)), edges, np.nextafter(edges, np.float32(2))])
    near = np.clip(near, 0, 1).astype(np.float32)[None]
    np.testing.assert_array_equal(histogram_counts(torch.from_numpy(near), 10)[0].numpy(), np.histogram(near[0], 10)[0])


def test_constant_map_has_entropy_zero_and_equal_filling_has_log_n_bins():
    const = torch.stack([torch.zeros(3, 5), torch.full((3, 5), -2.5), torch.full((3, 5), 2.0**25)])
    h = discrete_entropy(const, 100)
    assert torch.equal(h, torch.zeros(3, dtype=torch.float64)) and not torch.signbit(h).any()
    for n in (1, 7, 100):
        # 0..n-1 over [0, n-1] in n bins: one value per bin (the last on the closed right edge), 3 times
        filled = torch.arange(n, dtype=torch.float64).repeat(3)[None]
        assert histogram_counts(filled, n).eq(3).all()
        assert discrete_entropy(filled, n).item() == pytest.approx(math.log(n), abs=1e-12)


@pytest.mark.parametrize("n_bins", [0, -3, 1.5, True, "100", None])
def test_discrete_entropy_rejects_bad_n_bins(n_bins):
    with pytest.raises(ValueError, match="n_bins must be an integer >= 1"):
        discrete_entropy(torch.rand(2, 5), n_bins)


def test_discrete_entropy_rejects_bad_maps():
    with pytest.raises(TypeError, match="torch.Tensor"):
        discrete_entropy(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"maps \[1\] contain NaN or Inf"):
        discrete_entropy(torch.tensor([[0.0, 1.0], [float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="at least one map"):
        discrete_entropy(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="at least one value"):
        discrete_entropy(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="range too small"):  # as numpy: 'Too many bins for data range'
        discrete_entropy(torch.tensor([[1.0, float(np.nextafter(np.float32(1), np.float32(2)))]]), 100)


# ----------------------------------------------------------------------------- equality with Quantus


def fully_randomized_copy(model: nn.Module, x: torch.Tensor, seed: int, **options) -> nn.Module:
    """A copy of ``model`` at the last cascading stage of the package's randomization."""
    with randomized(model, mode="cascading", seed=seed, example_input=x[:1], **options) as stages:
        for _ in stages:
            pass
        return copy.deepcopy(model)


def package_explain(model, inputs, targets, method="gradient", **kwargs):
    """Quantus explain_func: the package's raw maps (channels kept) as numpy."""
    maps = attribute(model, torch.as_tensor(inputs), torch.as_tensor(targets).long(), method, reduce=None)
    return maps.detach().numpy()


def quantus_scores(model, random_copy, x, y, method, monkeypatch, **metric_options) -> np.ndarray:
    """Quantus's EfficientMPRT whose layer generator ends on ``random_copy`` (its last yield is what it uses)."""
    def generator(self, order="bottom_up", seed=42):
        for _ in range(self.random_layer_generator_length):
            yield "randomized", random_copy

    monkeypatch.setattr(PyTorchModel, "get_random_layer_generator", generator)
    metric = quantus.EfficientMPRT(disable_warnings=True, display_progressbar=False, **metric_options)
    scores = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=package_explain,
                    explain_func_kwargs={"method": method}, batch_size=3, channel_first=True)
    return np.asarray(scores, dtype=np.float64)


@pytest.mark.parametrize("case", ["defaults", "label_abs_7bins"])
def test_scores_equal_quantus_efficient_mprt_on_the_same_random_weights(case, monkeypatch):
    model, x = gray_net(), images(5)
    labels = torch.tensor([0, 1, 2, 3, 4])
    random_copy = fully_randomized_copy(model, x, seed=3)
    if case == "defaults":  # trained model's top-1 (a fixed y_batch in Quantus), raw maps, 100 bins
        ours = efficient_mprt(model, x, ["gradient", "guided_backprop"], seed=3, batch_size=3, progress=False)
        with torch.no_grad():
            y = model(x).argmax(1)
        options = dict(complexity_func_kwargs={"n_bins": 100})
    else:
        ours = efficient_mprt(model, x, ["gradient", "guided_backprop"], explain="label", labels=labels,
                              absolute=True, n_bins=7, seed=3, batch_size=3, progress=False)
        y = labels
        options = dict(complexity_func_kwargs={"n_bins": 7}, abs=True)
    assert list(ours.columns) == COLUMNS and (ours.test == "efficient_mprt").all()
    for method in ("gradient", "guided_backprop"):
        rows = ours[ours.label == method].sort_values("image")
        assert rows.target.tolist() == y.tolist() == rows.target_randomized.tolist()
        theirs = quantus_scores(model, random_copy, x, y, method, monkeypatch, **options)
        np.testing.assert_allclose(rows.value.to_numpy(), theirs, **QUANTUS_TOL)
        # and the two entropies are those of the maps on each model
        maps = {state: attribute(m, x, y, method, reduce=None) for state, m in
                (("original", model), ("randomized", random_copy))}
        for state, m in maps.items():
            m = m.abs() if case != "defaults" else m
            np.testing.assert_allclose(rows[f"complexity_{state}"].to_numpy(),
                                       discrete_entropy(m, 100 if case == "defaults" else 7).numpy(), rtol=0, atol=0)


def test_current_top1_explains_each_models_own_argmax():
    model, x = gray_net(), images(6, seed=1)
    frame = efficient_mprt(model, x, ["gradient"], explain="current_top1", seed=5, progress=False, std=1.0)
    random_copy = fully_randomized_copy(model, x, seed=5, std=1.0)
    with torch.no_grad():
        assert frame.target.tolist() == model(x).argmax(1).tolist()
        assert frame.target_randomized.tolist() == random_copy(x).argmax(1).tolist()
    maps = attribute(random_copy, x, "top1", "gradient", reduce=None)
    np.testing.assert_array_equal(frame.complexity_randomized.to_numpy(), discrete_entropy(maps).numpy())


# ----------------------------------------------------------------------------- batches, restoration, NaN, errors


def test_same_table_for_any_batch_size_and_for_a_shard():
    model, x = color_net().double(), images(7, shape=(3, 10, 14), seed=2, dtype=torch.float64)
    methods = ["gradient", ("smoothgrad", "smoothgrad", {"n_samples": 3}), "gradcam"]

    def run(xs, batch_size, ids=None):
        return efficient_mprt(model, xs, methods, batch_size=batch_size, image_ids=ids, seed=1, progress=False)

    reference = run(x, 64)
    assert len(reference) == 3 * 7 and reference.value.notna().all()
    assert reference.label.tolist() == [lab for lab in ("gradient", "smoothgrad", "gradcam") for _ in range(7)]
    for b in (1, 3):  # float64 maps: a batch changes at most the last bits, never a bin
        pd.testing.assert_frame_equal(run(x, b), reference, check_exact=False, rtol=0, atol=1e-12)
    shard = run(x[2:5], 2, ids=[2, 3, 4])
    rows = reference[reference.image.isin([2, 3, 4])].reset_index(drop=True)
    pd.testing.assert_frame_equal(shard, rows, check_exact=False, rtol=0, atol=1e-12)


def user_model() -> nn.Module:
    """Train mode, a frozen layer, BatchNorm statistics and a user hook: all must survive."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(3 * 10 * 10, 4))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.1, 0.1)
        model[1].running_var.uniform_(0.5, 1.5)
    model.train()
    model[0].weight.requires_grad_(False)
    model[5].register_forward_hook(lambda m, i, o: None)
    return model


def test_model_restored_after_a_run_and_after_an_exception(monkeypatch):
    model, x = user_model(), images(4, seed=3)
    before = state(model)
    frame = efficient_mprt(model, x, ["gradient", "guided_backprop"], progress=False, batchnorm="reset")
    assert frame.value.notna().all()
    assert_unchanged(model, before)

    calls = []
    real = emprt_module.attribute_many

    def fail_on_randomized(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:  # the first batch on the randomized model
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(emprt_module, "attribute_many", fail_on_randomized)
    with pytest.raises(RuntimeError, match="boom"):
        efficient_mprt(model, x, ["gradient"], progress=False, batch_size=4)
    assert len(calls) == 2
    assert_unchanged(model, before)


def test_constant_original_map_gives_nan_and_a_warning():
    model, x = gray_net(), images(4, seed=4)
    with torch.no_grad():
        model[0].weight.zero_()  # the trained model ignores its input: gradient maps are all zero
    with pytest.warns(RuntimeWarning, match=r"'gradient': 4 of 4 image\(s\) have a constant map"):
        frame = efficient_mprt(model, x, ["gradient"], progress=False, std=0.5)
    assert (frame.complexity_original == 0).all() and (frame.complexity_randomized > 0).all()
    assert frame.value.isna().all() and not np.isinf(frame.value).any()


@pytest.mark.parametrize("call, error, match", [
    (lambda m, x: efficient_mprt("net", x, ["gradient"]), TypeError, "torch.nn.Module"),
    (lambda m, x: efficient_mprt(m, x[0], ["gradient"]), ValueError, "rank 4"),
    (lambda m, x: efficient_mprt(m, x, []), ValueError, "at least one method"),
    (lambda m, x: efficient_mprt(m, x, ["nope"]), ValueError, "nope"),
    (lambda m, x: efficient_mprt(m, x, ["gradient"], explain="top5"), ValueError, "unknown explain"),
    (lambda m, x: efficient_mprt(m, x, ["gradient"], explain="label"), ValueError, "needs labels"),
    (lambda m, x: efficient_mprt(m, x, ["gradient"], n_bins=0), ValueError, "n_bins must be"),
    (lambda m, x: efficient_mprt(m, x, ["gradient"], absolute="yes"), TypeError, "absolute must be"),
    (lambda m, x: efficient_mprt(m, x, ["gradient"], batch_size=0), ValueError, "batch_size must be"),
    (lambda m, x: efficient_mprt(m, x, ["gradient"], mode="independent"), TypeError, "every layer"),
    (lambda m, x: efficient_mprt(m, x, ["gradient"], shuffle=True), TypeError, "unexpected option"),
    (lambda m, x: efficient_mprt(m, x, ["gradient"], init="zeros"), ValueError, "unknown init"),
    (lambda m, x: efficient_mprt(m, x, ["gradient"], image_ids=[0]), ValueError, "one index per image"),
    (lambda m, x: efficient_mprt(nn.ReLU(), x, ["gradient"]), ValueError, "no parameters"),
])
def test_bad_inputs_raise_and_leave_the_model_as_it_was(call, error, match):
    model, x = gray_net(), images(2)
    before = state(model)
    with pytest.raises(error, match=match):
        call(model, x)
    assert_unchanged(model, before)
