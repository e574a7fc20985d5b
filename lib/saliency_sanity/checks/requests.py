"""Which methods a check runs: the paper's catalogue (label, method, options, handling of gradients)
and the request grammar every check accepts.
"""
from __future__ import annotations

from typing import Sequence

from ..methods import get_method
from ..methods.requests import MethodRequest
from ..metrics.similarity import _check_options as _metric_options

DEFAULT_METRICS = ("spearman_abs", "spearman", "ssim", "hog")


EXPLAIN_CHOICES = ("current_top1", "original_top1", "label")




# Every method of the paper with its handling of gradients (after Khakzar et al. 2020's abstract): label,
# registry name, options, handling. The original methods are the rows without a "/variant" label
# suffix, except the aggregation variants that Khakzar et al. introduce to isolate the cause.
PAPER_METHODS: tuple[tuple[str, str, dict, str], ...] = (
    ("gradient", "gradient", {}, "signed propagation"),
    ("input_x_gradient", "input_x_gradient", {}, "signed propagation"),
    ("smoothgrad", "smoothgrad", {}, "signed propagation"),
    ("integrated_gradients", "integrated_gradients", {}, "signed propagation"),
    ("deconvnet", "deconvnet", {}, "signed propagation"),
    ("guided_backprop", "guided_backprop", {}, "positive propagation"),
    ("guided_gradcam", "guided_gradcam", {}, "positive propagation"),
    ("rectgrad", "rectgrad", {}, "positive propagation"),
    ("lrp_epsilon", "lrp_epsilon", {}, "signed propagation"),
    ("lrp_alpha2_beta1", "lrp_alpha_beta", {"alpha": 2.0, "beta": 1.0}, "signed propagation"),
    ("lrp_alpha1_beta0", "lrp_alpha_beta", {"alpha": 1.0, "beta": 0.0}, "positive propagation"),
    ("lrp_zplus", "lrp_zplus", {}, "positive propagation"),
    ("lrp_composite", "lrp_composite", {}, "signed propagation"),
    ("gradcam", "gradcam", {"aggregation": "signed"}, "signed aggregation"),
    ("gradcam/positive", "gradcam", {"aggregation": "positive"}, "positive aggregation"),
    ("gradcam/absolute", "gradcam", {"aggregation": "absolute"}, "absolute aggregation"),
    ("gradcam_pp/signed", "gradcam_pp", {"aggregation": "signed"}, "signed aggregation"),
    ("gradcam_pp", "gradcam_pp", {"aggregation": "positive"}, "positive aggregation"),
    ("gradcam_pp/absolute", "gradcam_pp", {"aggregation": "absolute"}, "absolute aggregation"),
    ("fullgrad/signed", "fullgrad", {"aggregation": "signed"}, "signed aggregation"),
    ("fullgrad/positive", "fullgrad", {"aggregation": "positive"}, "positive aggregation"),
    ("fullgrad", "fullgrad", {"aggregation": "absolute"}, "absolute aggregation"),
)


def paper_methods(labels: Sequence[str] | None = None, **per_method_options) -> list[MethodRequest]:
    """The :data:`PAPER_METHODS` requests (all, or those ``labels``), with extra options per registry
    name, e.g. ``paper_methods(integrated_gradients={"steps": 16})``."""
    known = {row[0]: row for row in PAPER_METHODS}
    if labels is not None:
        unknown = [lab for lab in labels if lab not in known]
        if unknown:
            raise ValueError(f"unknown method label(s) {unknown}; choose from {list(known)}")
    rows = [known[lab] for lab in labels] if labels is not None else list(PAPER_METHODS)
    return [(lab, name, {**opts, **per_method_options.get(name, {})}) for lab, name, opts, _ in rows]


def handling(label: str) -> str:
    """The gradient handling class of a :data:`PAPER_METHODS` label."""
    return {row[0]: row[3] for row in PAPER_METHODS}.get(label, "other")


def _variant(name: str, options: dict) -> str:
    spec = get_method(name)
    aggregation = options.get("aggregation", spec.defaults.get("aggregation"))
    extra = {k: v for k, v in options.items() if k != "aggregation"}
    text = aggregation or "default"
    return text + "".join(f", {k}={v}" for k, v in sorted(extra.items()))


def input_box(name: str, options: dict | None = None) -> tuple[float, float] | None:
    """The pixel box [low, high] a method needs its inputs to lie in (LRP's z^B rule on the first layer,
    Montavon et al. 2017), or None: noisy inputs (the smooth MPRT) leave the box."""
    defaults = get_method(name).defaults
    if "low" not in defaults or "high" not in defaults:
        return None
    merged = {**defaults, **(options or {})}
    return float(merged["low"]), float(merged["high"])


def _check_normalize(metrics: tuple[str, ...], normalize: str) -> None:
    """``normalize`` known and able to serve every metric without options (the checks pass none)."""
    try:
        _metric_options(metrics, normalize, {})
    except ValueError as err:
        if "data_range" not in str(err):
            raise
        raise ValueError(f"{err}; the checks pass no metric options: choose normalize='default' for these "
                         "metrics") from None


def _refuse_batch_draws(requests: list[MethodRequest]) -> None:
    """Refuse methods whose random draws are made per batch (``sound_mask``): a check's table must not
    depend on ``batch_size``."""
    for label, name, _ in requests:
        if name == "sound_mask":
            raise TypeError(f"method {label!r} (sound_mask) draws its fills for the whole batch, so its maps would "
                            "depend on batch_size; it is refused in the randomization tests (run it through "
                            "saliency_sanity.attribute)")
