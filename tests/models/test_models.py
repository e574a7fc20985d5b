"""Model shapes, layer names and torchvision constructors."""
import pytest
import torch
from torch import nn

from saliency_sanity.models.architectures import build_model, default_cam_layer, get_layer, torchvision_model


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_output_shape_and_cam_layer(arch, images):
    model = build_model(arch, seed=0).eval()
    assert model(images).shape == (3, 10)
    layer = get_layer(model, default_cam_layer(model))
    out = {}
    handle = layer.register_forward_hook(lambda m, i, o: out.setdefault("o", o.clone()))
    model(images)
    handle.remove()
    assert out["o"].dim() == 4 and out["o"].shape[-1] == 7


def test_vgg_has_no_batchnorm_and_resnet_has():
    assert not any(isinstance(m, nn.BatchNorm2d) for m in build_model("vgg").modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in build_model("resnet").modules())


def test_seeded_construction_is_reproducible_and_leaves_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("vgg", seed=5)
    after = torch.rand(1)
    b = build_model("vgg", seed=5)
    assert torch.equal(before, after)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_unknown_arch_and_layer():
    with pytest.raises(ValueError, match="unknown architecture 'lenet'"):
        build_model("lenet")
    with pytest.raises(ValueError, match="layer 'features.conv9' not found"):
        get_layer(build_model("vgg"), "features.conv9")


def test_default_cam_layer_without_conv():
    with pytest.raises(ValueError, match="no Conv2d layer"):
        default_cam_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


@pytest.mark.parametrize("name,layer", [("vgg16", "features.29"), ("resnet50", "layer4")])
def test_torchvision_models_random_weights(name, layer):
    model = torchvision_model(name)
    assert default_cam_layer(model) == layer
    get_layer(model, layer)
    with pytest.raises(ValueError, match="unknown torchvision model"):
        torchvision_model("alexnet")
