"""Your own model for the command line: a torchvision model or any importable factory, with weights.

``torchvision:NAME`` builds ``torchvision.models.get_model(NAME)``; ``package.module:factory`` imports
the module and calls ``factory()`` without arguments. Weights: ``none`` (the constructor's random
init, seeded by ``seed``: the same model in every run and on every rank), ``DEFAULT`` (torchvision's pretrained weights through its own API, downloaded by torchvision;
torchvision models only) or the path of a state dict, loaded with ``weights_only=True``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import importlib

from torch import nn

from .._core.cache import safe_torch_load
from .._core.draws import seeded_init


@dataclass
class LoadedModel:
    model: nn.Module
    name: str
    categories: list[str] = field(default_factory=list)  # class names from the weights' metadata, if any


def _torchvision(name: str, weights: str | None) -> LoadedModel:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ValueError(f"unknown torchvision model {name!r}; torchvision classifiers include "
                         f"{[n for n in available if n.startswith(('vgg', 'resnet'))]} ...")
    if weights == "DEFAULT":
        enum = torchvision.models.get_model_weights(name).DEFAULT
        model = torchvision.models.get_model(name, weights=enum)  # torchvision downloads them
        return LoadedModel(model, f"torchvision:{name}", list(enum.meta.get("categories", [])))
    return LoadedModel(torchvision.models.get_model(name, weights=None), f"torchvision:{name}")


def _factory(spec: str) -> LoadedModel:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"model {spec!r}: use torchvision:NAME or package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"model {spec!r}: cannot import module {module_name!r} ({err}); is it on PYTHONPATH?") from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"model {spec!r}: {module_name} has no callable {attr!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {spec!r}: {attr}() returned {type(model).__name__}, not a torch.nn.Module")
    return LoadedModel(model, spec)


def load_state(model: nn.Module, path: str, spec: str) -> None:
    """Load a state dict (``weights_only=True``) into ``model``, naming the mismatch if it is another architecture's."""
    state = safe_torch_load(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a project checkpoint
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ValueError(f"weights {path}: not a state dict (a mapping of parameter names to tensors)")
    result = model.load_state_dict(state, strict=False)
    own = model.state_dict()
    wrong_shape = [k for k, v in state.items() if k in own and own[k].shape != getattr(v, "shape", None)]
    if result.missing_keys or result.unexpected_keys or wrong_shape:
        raise ValueError(f"weights {path} do not fit {spec}: missing {result.missing_keys[:5]}, unexpected "
                         f"{result.unexpected_keys[:5]}, wrong shape {wrong_shape[:5]} -- weights of another architecture?")


def load_model(spec: str, weights: str | None = "none", *, seed: int = 0) -> LoadedModel:
    """The model ``spec`` names, with ``weights`` (``none``, ``DEFAULT`` or a state-dict path), in eval mode.

    The constructor runs with torch's generator seeded from ``seed`` (and restored after), so that
    ``weights="none"`` gives the same random model in every run and on every torchrun rank.
    """
    weights = None if weights in (None, "", "none", "None") else weights
    if not spec.startswith("torchvision:") and weights == "DEFAULT":
        raise ValueError("--weights DEFAULT is torchvision's pretrained weights; for a factory model pass a "
                         "state-dict path or none")
    with seeded_init(seed):
        if spec.startswith("torchvision:"):
            loaded = _torchvision(spec.split(":", 1)[1], "DEFAULT" if weights == "DEFAULT" else None)
        else:
            loaded = _factory(spec)
    if weights not in (None, "DEFAULT"):
        load_state(loaded.model, weights, spec)
    loaded.model.eval()
    return loaded


def default_layer(model: nn.Module) -> str:
    """Grad-CAM's default layer: torchvision VGG's last feature ReLU, ResNet's ``layer4``, else the last Conv2d."""
    from .architectures import default_cam_layer

    if hasattr(model, "layer4"):
        return "layer4"
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        relus = [f"features.{name}" for name, m in features.named_children() if isinstance(m, nn.ReLU)]
        if relus:
            return relus[-1]
    return default_cam_layer(model)
