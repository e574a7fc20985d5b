"""saliency-sanity: do gradient-based saliency maps explain a network's prediction?

Methods behind one call (:func:`attribute`), the sanity checks of Adebayo et al. (2018) and
Khakzar et al. (2020) with the repaired tests of Hedström et al. (2023), completeness/soundness of Gupta et al. (2022) and stability across
retraining seeds (after Datta et al. 2023).
"""
from .checks.class_pairs import class_sensitivity
from .checks.convergence import cosine_convergence
from .checks.efficient import efficient_mprt
from .checks.mprt import randomization_test, smooth_mprt
from .methods import METHODS, attribute, attribute_many, resolve_targets
from .metrics.complexity import discrete_entropy

__version__ = "0.1.0"
__all__ = ["METHODS", "attribute", "attribute_many", "class_sensitivity", "cosine_convergence", "discrete_entropy",
           "efficient_mprt", "randomization_test", "resolve_targets", "smooth_mprt", "__version__"]
