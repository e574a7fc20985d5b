"""The smooth MPRT (Hedström et al. 2023): equal to Quantus's SmoothMPRT on the same weights, noise and maps;
the plain randomization test when nothing is smoothed; one table for any batch size; clear refusals."""
import copy
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from saliency_sanity import attribute
from saliency_sanity.checks import randomization_test, smooth_mprt, smooth_mprt_noise
from saliency_sanity._core.draws import image_seeds
from saliency_sanity.checks.randomize import randomized

from helpers.model_state import assert_unchanged, weights
from helpers.tiny_factory import tiny

# the fully randomized tiny model's Grad-CAM is constant (0 after its ReLU): NaN, warned, by design
pytestmark = pytest.mark.filterwarnings("ignore:similarity undefined:RuntimeWarning")
EXTRA = ["test", "n_samples", "noise_magnitude"]
CLOSE = dict(check_exact=False, rtol=0, atol=1e-6)


def gray_net() -> nn.Module:
    """A seeded one-channel CNN (its Gradient and Input x Gradient maps have one channel, as Quantus compares)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 9 * 11, 5)).eval()


@pytest.fixture(scope="module")
def gray():
    return gray_net(), torch.rand(3, 1, 20, 24, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def rgb():
    return tiny().eval(), torch.rand(3, 3, 20, 24, generator=torch.Generator().manual_seed(1))


class _NoiseFromPackage:
    """Stands in for ``numpy`` in Quantus's smooth_mprt module: ``np.random.randn`` returns the package's
    standard normals ``z[k]`` of the k-th noisy sample (Quantus draws samples 0..n-2 in order at every
    explanation pass, one batch per pass here); everything else is numpy's."""

    def __init__(self, z: torch.Tensor):
        self.z, self.calls = z, 0
        self.random = SimpleNamespace(randn=self.randn)

    def randn(self, *shape):
        k = self.calls % (len(self.z) - 1)
        self.calls += 1
        assert shape == tuple(self.z[k].shape)
        return self.z[k].numpy()  # float32, as the package's draws: x + z * std in float32 on both sides

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.mark.parametrize("method", ["gradient", "input_x_gradient", "guided_backprop", "gradcam/absolute"])
def test_equals_quantus_smooth_mprt_per_image_and_layer(gray, method, monkeypatch):
    """Quantus 0.6.0's SmoothMPRT on the same model, the same randomized weights (its layer generator
    replaced by the package's bottom-up cascading stages on a copy), the same noise (its randn fed the
    package's draws) and the same maps (quantus.explain calls the package's attribute): the Spearman of
    the smoothed absolute maps agrees per image and layer to 1e-6 (scipy vs torch ranks in float64 from
    the same float32 maps; Quantus's normalisation is a positive rescaling, which keeps the ranks)."""
    quantus = pytest.importorskip("quantus")
    from quantus.helpers.model.pytorch_model import PyTorchModel
    import quantus.metrics.randomisation.smooth_mprt as qmodule

    model, x = gray
    n, magnitude, seed = 4, 0.2, 3
    options = dict(init="default", bias="init", std=0.01)  # Quantus's reset_parameters(), keyed draws
    ours = smooth_mprt(model, x, [method], n_samples=n, noise_magnitude=magnitude, seed=seed, progress=False,
                       **options)

    def package_stages(self, order="top_down", seed_=42, **_):
        assert order == "bottom_up"
        copy_ = copy.deepcopy(self.model)
        with randomized(copy_, mode="cascading", order="bottom_up", seed=seed, example_input=x[:1], **options) as st:
            for stage in st:
                if stage.index:
                    yield stage.name, copy_

    def explain(model_, inputs, targets, **kwargs):
        name, _, aggregation = kwargs["method"].partition("/")
        maps = attribute(model_, torch.from_numpy(np.asarray(inputs)), torch.as_tensor(targets).long(), name,
                         reduce=None, seed=image_seeds(seed, range(len(inputs))),
                         **({"aggregation": aggregation} if aggregation else {}))
        return maps.detach().numpy()

    monkeypatch.setattr(PyTorchModel, "get_random_layer_generator", package_stages)
    monkeypatch.setattr(quantus, "explain", explain)
    noise = _NoiseFromPackage(smooth_mprt_noise(x, n, seed=seed))
    monkeypatch.setattr(qmodule, "np", noise)
    with torch.no_grad():
        y = model(x).argmax(1).numpy()
    metric = quantus.SmoothMPRT(nr_samples=n, noise_magnitude=magnitude, layer_order="bottom_up",
                                disable_warnings=True)
    with np.errstate(all="ignore"):
        theirs = metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=None, explain_func=explain,
                        explain_func_kwargs={"method": method}, batch_size=len(x), device="cpu")
    layers = ours.drop_duplicates("stage").sort_values("stage").layer.tolist()
    assert list(theirs) == layers == ["original", "0", "2", "5"]
    assert noise.calls == (n - 1) * (len(layers) + 1)  # Quantus's passes: the a_batch, then every stage
    for stage, layer in enumerate(layers):
        got = ours[ours.stage == stage].sort_values("image")
        assert got.target.tolist() == y.tolist()
        np.testing.assert_allclose(got.value.to_numpy(), np.asarray(theirs[layer], dtype=float), rtol=0,
                                   atol=1e-6, equal_nan=True)
    assert np.isfinite(ours.value).all() and ours[ours.stage == 3].value.abs().max() < 0.99


def test_noise_is_keyed_by_image_and_last_sample_is_noise_free(rgb):
    _, x = rgb
    z = smooth_mprt_noise(x, 4, seed=5)
    assert z.shape == (4, *x.shape) and z.dtype == torch.float32
    assert (z[-1] == 0).all() and z[:-1].std().item() == pytest.approx(1, abs=0.05)
    torch.testing.assert_close(smooth_mprt_noise(x[1:], 4, seed=5, image_ids=[1, 2]), z[:, 1:], rtol=0, atol=0)
    assert not torch.equal(smooth_mprt_noise(x, 4, seed=6), z)
    assert smooth_mprt_noise(x, 1).abs().sum() == 0


METHODS = ["gradient", "gradcam", ("smoothgrad", "smoothgrad", {"n_samples": 2})]


@pytest.mark.parametrize("explain", ["original_top1", "current_top1"])
def test_one_sample_or_no_noise_is_the_plain_randomization_test(rgb, explain):
    model, x = rgb
    plain = randomization_test(model, x, METHODS, order="bottom_up", explain=explain, metrics=["spearman_abs"],
                               normalize="none", progress=False)
    for options in ({"n_samples": 1}, {"n_samples": 5, "noise_magnitude": 0.0}):
        smooth = smooth_mprt(model, x, METHODS, explain=explain, progress=False, **options)
        assert (smooth.test == "smooth_mprt").all() and (smooth.n_samples == options["n_samples"]).all()
        pd.testing.assert_frame_equal(smooth.drop(columns=EXTRA), plain)


def test_current_top1_resolves_the_noise_free_class_at_every_stage(rgb):
    model, x = rgb
    plain = randomization_test(model, x, ["gradient"], order="bottom_up", explain="current_top1",
                               metrics=["spearman_abs"], progress=False)
    smooth = smooth_mprt(model, x, ["gradient"], n_samples=3, noise_magnitude=0.5, explain="current_top1",
                         progress=False)
    assert smooth.target.tolist() == plain.target.tolist()
    top1 = plain.pivot(index="image", columns="stage", values="target")
    assert (top1.ne(top1[0], axis=0)).any().any()  # the class changes with the stage: the test is not vacuous
    changed = smooth.merge(plain, on=["stage", "image"], suffixes=("", "_plain"))
    assert (changed.value - changed.value_plain).abs()[changed.stage > 0].max() > 1e-3  # smoothing mattered


def test_one_table_for_any_batch_size_and_split(rgb):
    model, x = rgb
    model, x = copy.deepcopy(model).double(), x.double()

    def run(images, **kw):
        return smooth_mprt(model, images, METHODS, n_samples=3, metrics=["spearman_abs", "spearman"],
                           stages=[0, 1, -1], progress=False, **kw)

    reference = run(x)
    pd.testing.assert_frame_equal(run(x, batch_size=2), reference, **CLOSE)
    shard = run(x[1:], image_ids=[1, 2], batch_size=1)
    pd.testing.assert_frame_equal(shard, reference[reference.image.isin([1, 2])].reset_index(drop=True), **CLOSE)


def test_model_left_as_it_was(rgb, monkeypatch):
    model, x = rgb
    model = copy.deepcopy(model).train()
    before = weights(model)
    frame = smooth_mprt(model, x, ["gradient"], n_samples=2, stages=[0, -1], progress=False)
    assert sorted(frame.stage.unique()) == [0, 3] and model.training
    assert_unchanged(model, before)
    import saliency_sanity.checks.mprt as checks

    real, calls = checks.attribute_many, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # a noisy copy at a randomized stage
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(checks, "attribute_many", flaky)
    with pytest.raises(RuntimeError, match="injected failure"):
        smooth_mprt(model, x, ["gradient"], n_samples=2, progress=False)
    assert model.training
    assert_unchanged(model, before)


@pytest.mark.parametrize("bad", [0, -1, 2.0, 1.5, True, "3", None])
def test_bad_n_samples_is_refused(rgb, bad):
    model, x = rgb
    with pytest.raises(ValueError, match="n_samples must be an int >= 1"):
        smooth_mprt(model, x, ["gradient"], n_samples=bad, progress=False)


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, True, "0.1", None])
def test_bad_noise_magnitude_is_refused(rgb, bad):
    model, x = rgb
    with pytest.raises(ValueError, match="noise_magnitude must be a finite number >= 0"):
        smooth_mprt(model, x, ["gradient"], noise_magnitude=bad, progress=False)


def test_other_bad_inputs_are_refused(rgb):
    model, x = rgb
    with pytest.raises(TypeError, match="sound_mask.*batch_size"):
        smooth_mprt(model, x, ["sound_mask"], n_samples=2, progress=False)
    with pytest.raises(TypeError, match="sound_mask.*batch_size"):
        randomization_test(model, x, ["sound_mask"], progress=False)
    with pytest.raises(ValueError, match="needs an explicit data_range.*normalize='default'"):
        smooth_mprt(model, x, ["gradient"], metrics=["ssim"], progress=False)
    with pytest.raises(ValueError, match="unknown normalize"):
        smooth_mprt(model, x, ["gradient"], normalize="zscore", progress=False)
    with pytest.raises(ValueError, match="needs labels"):
        smooth_mprt(model, x, ["gradient"], explain="label", progress=False)
    with pytest.raises(ValueError, match="unknown order"):
        smooth_mprt(model, x, ["gradient"], order="sideways", progress=False)
    with pytest.raises(ValueError, match="n_samples must be"):
        smooth_mprt_noise(x, 0)


def test_methods_with_a_pixel_box_are_refused_before_any_work():
    from saliency_sanity.checks import input_box

    assert input_box("lrp_zplus") == (0.0, 1.0) and input_box("lrp_composite", {"low": -1.0}) == (-1.0, 1.0)
    assert input_box("gradient") is None
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\['lrp_zplus'\] use LRP's z\^B rule"):
        smooth_mprt(model, x, ["gradient", "lrp_zplus"], n_samples=3, progress=False)
    # without noise every copy is the input itself: allowed
    frame = smooth_mprt(model, x, ["lrp_zplus"], n_samples=3, noise_magnitude=0.0, progress=False)
    assert frame.value.notna().all()
