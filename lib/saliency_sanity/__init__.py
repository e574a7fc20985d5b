"""saliency-sanity: do gradient-based saliency maps explain a network's prediction?

Methods behind one call (:func:`attribute`), the sanity checks of Adebayo et al. (2018) and
Khakzar et al. (2020), completeness/soundness of Gupta et al. (2022) and stability across
retraining seeds (after Datta et al. 2023).
"""
from .methods import METHODS, attribute, attribute_many, resolve_targets

__version__ = "0.1.0"
__all__ = ["METHODS", "attribute", "attribute_many", "resolve_targets", "__version__"]
