"""Parameter randomization: forward order, cascading/independent stages, seeded draws, restoration."""
import pytest
import torch
from scipy import stats
from torch import nn

from saliency_sanity.models.architectures import build_model
from saliency_sanity.checks.randomize import layer_generator, randomize_layer, randomized
from saliency_sanity.checks.stages import default_blocks, randomization_stages

from helpers.model_state import assert_unchanged, changed, weights

VGG_LAYERS = ["features.conv1", "features.conv2", "features.conv3", "classifier.fc1", "classifier.fc2"]


def changed_layers(model, before):
    """Modules with at least one parameter or buffer that is not bit-identical to ``before``."""
    return {k.rsplit(".", 1)[0] for k in changed(model.state_dict(), before)}


class Scrambled(nn.Module):
    """Registration order differs from forward order; ``second`` (with parameters) and ``act`` are
    each called twice."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.second = nn.Linear(8, 8)
        self.first = nn.Linear(4, 8)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.head(self.act(self.second(self.act(self.second(self.act(self.first(x)))))))


@pytest.fixture
def vgg():
    return build_model("vgg", seed=0).eval()


@pytest.fixture
def resnet():
    return build_model("resnet", seed=0).eval()


@pytest.fixture
def x():
    return torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def test_stages_follow_forward_order_not_registration():
    model = Scrambled()
    before = weights(model)
    plan = randomization_stages(model, order="bottom_up", example_input=torch.zeros(1, 4))
    assert [s.name for s in plan] == ["original", "first", "second", "head"]  # "second" once despite reuse
    assert [s.index for s in plan] == [0, 1, 2, 3]
    assert plan[0].layers == () and plan[0].randomized_so_far == ()
    top = randomization_stages(model, example_input=torch.zeros(1, 4))
    assert [s.name for s in top] == ["original", "head", "second", "first"]
    assert top[3].randomized_so_far == ("head", "second", "first")
    assert all(s.mode == "cascading" and s.order == "top_down" for s in top)
    independent = randomization_stages(model, mode="independent", example_input=torch.zeros(1, 4))
    assert [s.randomized_so_far for s in independent[1:]] == [("head",), ("second",), ("first",)]
    assert_unchanged(model, before)  # planning changes nothing
    assert not model._forward_pre_hooks and not model.second._forward_pre_hooks


def test_traces_without_example_input_or_says_what_to_pass(vgg, x):
    assert randomization_stages(vgg) == randomization_stages(vgg, example_input=x[:1])
    linear_only = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    assert [s.name for s in randomization_stages(linear_only, order="bottom_up")] == ["original", "0", "2"]
    fixed_size = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 5 * 5, 3))  # accepts only 7x7
    with pytest.raises(ValueError, match=r"without an input.*example_input=x\[:1\]"):
        randomization_stages(fixed_size)
    assert len(randomization_stages(fixed_size, example_input=torch.zeros(1, 1, 7, 7))) == 3
    with pytest.raises(ValueError, match=r"example_input of shape \(1, 3, 28, 28\) failed"):
        randomization_stages(vgg, example_input=torch.zeros(1, 3, 28, 28))
    with pytest.raises(TypeError, match="example_input must be a torch.Tensor"):
        randomization_stages(vgg, example_input="image")


@pytest.mark.parametrize("order", ["top_down", "bottom_up"])
def test_cascading_randomizes_cumulatively(vgg, x, order):
    before = weights(vgg)
    with torch.no_grad():
        reference = vgg(x)
    expected = VGG_LAYERS[::-1] if order == "top_down" else VGG_LAYERS
    with randomized(vgg, order=order, example_input=x) as stages:
        assert len(stages) == 6
        seen = []
        for stage in stages:
            k = stage.index
            assert changed_layers(vgg, before) == set(expected[:k])  # the rest bit-identical
            assert stage.randomized_so_far == tuple(expected[:k])
            assert stage.layers == tuple(expected[k - 1:k])
            with torch.no_grad():
                out = vgg(x)
            assert torch.equal(out, reference) if k == 0 else not torch.allclose(out, reference)
            seen.append(stage.name)
    assert seen == ["original"] + expected
    assert_unchanged(vgg, before)
    with torch.no_grad():
        assert torch.equal(vgg(x), reference)


@pytest.mark.parametrize("order", ["top_down", "bottom_up"])
def test_independent_randomizes_one_layer_at_a_time(vgg, x, order):
    before = weights(vgg)
    with torch.no_grad():
        reference = vgg(x)
    expected = VGG_LAYERS[::-1] if order == "top_down" else VGG_LAYERS
    with randomized(vgg, mode="independent", order=order, example_input=x) as stages:
        for stage in stages:
            assert changed_layers(vgg, before) == set(stage.layers)
            assert stage.layers == stage.randomized_so_far == tuple(expected[stage.index - 1:stage.index])
            if stage.index:
                with torch.no_grad():
                    assert not torch.allclose(vgg(x), reference)
    assert_unchanged(vgg, before)


def test_restored_after_exception_and_break(vgg, x):
    before = weights(vgg)
    with pytest.raises(RuntimeError, match="boom"):
        with randomized(vgg, example_input=x) as stages:
            for stage in stages:
                if stage.index == 2:
                    assert changed_layers(vgg, before)
                    raise RuntimeError("boom")
    assert_unchanged(vgg, before)
    with randomized(vgg, mode="independent", example_input=x) as stages:
        for stage in stages:
            if stage.index == 1:
                break
        assert changed_layers(vgg, before) == {"classifier.fc2"}
    assert_unchanged(vgg, before)


def test_buffers_restored_and_batchnorm_policies(resnet, x):
    before = weights(resnet)
    with pytest.raises(KeyError):
        with randomized(resnet, batchnorm="reset", order="bottom_up", example_input=x) as stages:
            for stage in stages:
                if stage.name == "stem.bn":
                    bn = resnet.stem.bn
                    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
                    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
                    assert not torch.equal(bn.weight, before["stem.bn.weight"])
                if stage.index == 5:
                    raise KeyError("leave mid-way")
    assert_unchanged(resnet, before)  # running statistics and num_batches_tracked too
    with randomized(resnet, order="bottom_up", example_input=x) as stages:  # default: randomize_affine
        for stage in stages:
            if stage.name == "stem.bn":
                assert torch.equal(resnet.stem.bn.running_var, before["stem.bn.running_var"])
                assert torch.equal(resnet.stem.bn.running_mean, before["stem.bn.running_mean"])
                assert changed_layers(resnet, before) == {"stem.conv", "stem.bn"}
                break
    assert_unchanged(resnet, before)
    skip = randomization_stages(resnet, batchnorm="skip", example_input=x)
    assert not any(isinstance(resnet.get_submodule(n), nn.BatchNorm2d) for s in skip for n in s.layers)
    keep = randomization_stages(resnet, example_input=x)
    bns = [n for n, m in resnet.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert set(bns) <= {s.name for s in keep} and len(keep) == len(skip) + len(bns)


def test_model_object_hooks_flags_and_modes_untouched(vgg, x):
    params = {n: p for n, p in vgg.named_parameters()}
    vgg.features.conv1.weight.requires_grad_(False)
    vgg.train()
    vgg.classifier.eval()  # mixed modes must survive
    calls = []
    handle = vgg.classifier.fc2.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    modes = {n: m.training for n, m in vgg.named_modules()}
    flags = {n: p.requires_grad for n, p in vgg.named_parameters()}
    with randomized(vgg, example_input=x) as stages:
        assert len(calls) == 1  # the tracing pass is an ordinary forward pass
        calls.clear()
        for stage in stages:
            assert {n: p for n, p in vgg.named_parameters()}.keys() == params.keys()
            assert all(p is params[n] for n, p in vgg.named_parameters())  # same objects, changed in place
            vgg(x)
            assert {n: m.training for n, m in vgg.named_modules()} == modes
    assert len(calls) == 6  # the user's hook stayed registered and live at every stage
    handle.remove()
    assert {n: m.training for n, m in vgg.named_modules()} == modes
    assert {n: p.requires_grad for n, p in vgg.named_parameters()} == flags
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in vgg.modules())


def test_iterating_again_starts_from_the_trained_model_and_only_inside_the_block(vgg, x):
    before = weights(vgg)
    with randomized(vgg, example_input=x) as stages:
        first = [weights(vgg) for _ in stages]
        second = [(stage.index, changed_layers(vgg, before)) for stage in stages]
        assert second == [(k, set(VGG_LAYERS[::-1][:k])) for k in range(6)]
        for stage, state in zip(stages, first):  # a third pass reproduces the first bit for bit
            assert changed_layers(vgg, state) == set(), stage.name
    with pytest.raises(RuntimeError, match="inside its `with` block"):
        next(iter(stages))
    assert_unchanged(vgg, before)


def test_same_seed_same_draw_across_runs_and_modes_distinct_across_layers(vgg, x):
    def draws(seed, **kwargs):
        out = {}
        with randomized(vgg, seed=seed, example_input=x, **kwargs) as stages:
            for stage in stages:
                for layer in stage.layers:
                    out[layer] = vgg.get_submodule(layer).weight.detach().clone()
        return out

    a = draws(3)
    assert a.keys() == set(VGG_LAYERS)
    for other in (draws(3), draws(3, mode="independent", order="bottom_up")):
        assert all(torch.equal(a[k], other[k]) for k in VGG_LAYERS)
    assert all(not torch.equal(a[k], v) for k, v in draws(4).items())
    twins = nn.Sequential(nn.Linear(5, 5), nn.Linear(5, 5))
    with randomized(twins, example_input=torch.zeros(1, 5)) as stages:
        for stage in stages:
            pass
        assert not torch.equal(twins[0].weight, twins[1].weight)  # different names, different draws
    assert layer_generator(3, "a").initial_seed() == layer_generator(3, "a").initial_seed()
    assert layer_generator(3, "a").initial_seed() != layer_generator(3, "b").initial_seed()


def test_init_distributions():
    big = nn.Linear(200, 200)
    randomize_layer(big, "big", std=0.01, seed=0)
    w = big.weight.detach().double()
    # truncated at +-2 std: the std of N(0, 1) truncated to [-2, 2] is 0.8796; 40000 draws give a
    # standard error of ~3e-5 on the std, 3e-4 is 10 of them
    assert w.abs().max() <= 0.02 and w.abs().max() > 0.019
    assert abs(w.std().item() - 0.01 * stats.truncnorm(-2, 2).std()) < 3e-4
    assert abs(w.mean().item()) < 3e-4
    assert torch.equal(big.bias, torch.zeros_like(big.bias))
    randomize_layer(big, "big", init="normal", std=0.1, seed=0)
    w = big.weight.detach().double()
    assert abs(w.std().item() - 0.1) < 3e-3 and w.abs().max() > 0.3  # untruncated: 3 std occurs
    randomize_layer(big, "big", init="uniform", std=0.1, seed=0)
    w = big.weight.detach().double()
    bound = 0.1 * 3 ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound and abs(w.std().item() - 0.1) < 3e-3


def test_bias_policies_and_dtype_independence():
    trained = nn.Linear(30, 20)
    original_bias = trained.bias.detach().clone()
    results = {}
    for policy in ("zero", "init", "keep"):
        layer = nn.Linear(30, 20)
        layer.load_state_dict(trained.state_dict())
        randomize_layer(layer, "fc", bias=policy, seed=1)
        results[policy] = layer
    assert all(torch.equal(results["zero"].weight, r.weight) for r in results.values())  # weight draw unaffected
    assert torch.equal(results["zero"].bias, torch.zeros(20))
    assert torch.equal(results["keep"].bias, original_bias)
    drawn = results["init"].bias
    assert drawn.abs().max() <= 0.02 and drawn.abs().min() > 0 and not torch.equal(drawn, original_bias)
    as_double = nn.Linear(30, 20).double()
    randomize_layer(as_double, "fc", seed=1)
    assert torch.equal(as_double.weight, results["zero"].weight.double())  # float32 draw, then cast
    gen = torch.Generator().manual_seed(5)
    other = nn.Linear(30, 20)
    randomize_layer(other, init="normal", std=0.1, generator=gen)
    assert torch.equal(other.weight, torch.randn(20, 30, generator=torch.Generator().manual_seed(5)) * 0.1)


def test_default_init_uses_reset_parameters_on_a_private_cpu_rng():
    conv = nn.Conv2d(4, 6, 3)
    state = torch.get_rng_state()
    randomize_layer(conv, "conv", init="default", seed=2)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is neither used nor reseeded
    w = conv.weight.detach().clone()
    bound = 1 / (4 * 3 * 3) ** 0.5  # Conv2d.reset_parameters: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert torch.equal(conv.bias, torch.zeros(6))  # bias policy "zero" applies to reset_parameters too
    again = nn.Conv2d(4, 6, 3).double()
    randomize_layer(again, "conv", init="default", seed=2, bias="init")
    assert torch.equal(again.weight, w.double()) and again.bias.abs().max() > 0
    bn = nn.BatchNorm2d(3)
    bn.running_mean.fill_(0.5)
    randomize_layer(bn, "bn", init="default")
    assert torch.equal(bn.running_mean, torch.full((3,), 0.5)) and torch.equal(bn.weight, torch.ones(3))
    randomize_layer(bn, "bn", init="default", batchnorm="reset")
    assert torch.equal(bn.running_mean, torch.zeros(3))
    bn.running_mean.fill_(0.5)
    randomize_layer(bn, "bn", batchnorm="skip")
    assert torch.equal(bn.weight, torch.ones(3)) and torch.equal(bn.running_mean, torch.full((3,), 0.5))


def test_callable_init_gets_the_layer_generator(vgg, x):
    received = []

    def constant(module, generator):
        received.append(generator.initial_seed())
        for p in module.parameters(recurse=False):
            p.fill_(0.5)

    before = weights(vgg)
    with randomized(vgg, init=constant, bias="init", example_input=x) as stages:
        for stage in stages:
            for layer in stage.layers:
                assert torch.all(vgg.get_submodule(layer).weight == 0.5)
                assert torch.all(vgg.get_submodule(layer).bias == 0.5)
    assert received == [layer_generator(0, n).initial_seed() for n in VGG_LAYERS[::-1]]
    assert_unchanged(vgg, before)


def test_blocks_default_and_custom(resnet, vgg, x):
    blocks = randomization_stages(resnet, unit="block", order="bottom_up", example_input=x)
    assert [s.name for s in blocks] == ["original", "stem", "layer1", "layer2", "layer3", "fc"]
    assert blocks[3].layers == tuple(n for n, m in resnet.named_modules()
                                     if n.startswith("layer2.") and any(True for _ in m.parameters(recurse=False)))
    vgg_blocks = randomization_stages(vgg, unit="block", order="bottom_up", example_input=x)
    assert default_blocks(vgg) == VGG_LAYERS  # two top-level containers: the next level is used
    assert [s.name for s in vgg_blocks][1:] == VGG_LAYERS
    custom = randomization_stages(resnet, unit="block", blocks=["layer3", "fc"], example_input=x)
    assert [s.name for s in custom] == ["original", "fc", "layer3"]
    before = weights(resnet)
    with randomized(resnet, unit="block", mode="cascading", blocks=["layer1", "layer3"], example_input=x) as stages:
        for stage in stages:
            assert changed_layers(resnet, before) == set(stage.randomized_so_far)
        assert {n.split(".")[0] for n in changed_layers(resnet, before)} == {"layer1", "layer3"}
    assert_unchanged(resnet, before)


def test_torchvision_resnet50_blocks_without_example_input():
    from saliency_sanity.models.architectures import torchvision_model

    model = torchvision_model("resnet50")
    plan = randomization_stages(model, unit="block", order="bottom_up")  # traced on a dummy 1x3x28x28
    assert [s.name for s in plan][1:] == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]


def test_bad_arguments(vgg, x):
    before = weights(vgg)
    for kwargs, message in [({"mode": "parallel"}, r"unknown mode 'parallel'; choose one of \['cascading'"),
                            ({"order": "random"}, r"unknown order 'random'; choose one of \['bottom_up'"),
                            ({"unit": "neuron"}, r"unknown unit 'neuron'; choose one of \['block', 'layer'\]"),
                            ({"init": "xavier"}, r"unknown init 'xavier'; choose one of \['default'"),
                            ({"batchnorm": "freeze"}, r"unknown batchnorm 'freeze'; choose one of"),
                            ({"bias": "one"}, r"unknown bias 'one'; choose one of \['init', 'keep', 'zero'\]"),
                            ({"std": 0}, "std must be > 0"), ({"std": float("nan")}, "std must be > 0"),
                            ({"unit": "block", "blocks": ["layer9"]}, r"unknown block\(s\) \['layer9'\]"),
                            ({"unit": "block", "blocks": ["features", "features.conv1"]}, "overlap"),
                            ({"unit": "block", "blocks": ["features.pool1"]}, "hold no parameters"),
                            ({"unit": "block", "blocks": []}, "blocks is empty"),
                            ({"blocks": ["features"]}, "only used with unit='block'")]:
        with pytest.raises(ValueError, match=message):
            with randomized(vgg, example_input=x, **kwargs):
                pytest.fail("the body must not run")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        randomization_stages("vgg")
    with pytest.raises(ValueError, match="no submodule with parameters"):
        randomization_stages(nn.Sequential(nn.ReLU()), example_input=x)
    with pytest.raises(ValueError, match="needs generator"):
        randomize_layer(vgg.features.conv1)
    with pytest.raises(ValueError, match="no reset_parameters"):
        randomize_layer(nn.Module(), "plain", init="default")
    assert_unchanged(vgg, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cpu_and_gpu_draw_identical_weights(x):
    cpu = build_model("resnet", seed=0).eval()
    gpu = build_model("resnet", seed=0).eval().cuda()
    cuda_rng = torch.cuda.get_rng_state()
    for init in ("truncated_normal", "default"):
        with randomized(cpu, init=init, example_input=x) as a, randomized(gpu, init=init, example_input=x.cuda()) as b:
            for _ in zip(a, b):
                for (k, u), v in zip(cpu.state_dict().items(), gpu.state_dict().values()):
                    assert torch.equal(u, v.cpu()), k
    assert torch.equal(torch.cuda.get_rng_state(), cuda_rng)  # draws never touch the CUDA generator
