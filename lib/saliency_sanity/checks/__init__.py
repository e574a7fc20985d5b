"""The sanity checks, each a tidy table: parameter randomization (plain, smooth and efficient), class
sensitivity, data randomization, and the convergence of modified back-propagation.

Modules: ``requests`` (the paper's method catalogue and the request grammar), ``tables`` (row order,
result rows, the null beside every similarity), ``randomize`` (re-initialising weights), ``mprt``
(Adebayo et al.'s test and Hedström et al.'s smooth MPRT), ``efficient`` (efficient MPRT),
``class_pairs`` (class sensitivity), ``data_randomization``, ``convergence`` (Sixt et al.) and ``readings``
(where a randomization curve is read, and how two tests rank the methods).
"""
from .class_pairs import CLASS_PAIRS, class_sensitivity
from .convergence import PROPAGATION_METHODS, cosine_convergence
from .data_randomization import data_randomization_test
from .efficient import efficient_mprt
from .mprt import randomization_test, smooth_mprt, smooth_mprt_noise
from .randomize import randomize_layer, randomized
from .stages import randomization_stages
from ..methods.requests import method_requests
from .requests import DEFAULT_METRICS, EXPLAIN_CHOICES, PAPER_METHODS, handling, input_box, paper_methods
from .tables import canonical_order, pair_name, similarity_means

__all__ = ["CLASS_PAIRS", "DEFAULT_METRICS", "EXPLAIN_CHOICES", "PAPER_METHODS", "PROPAGATION_METHODS",
           "canonical_order", "class_sensitivity", "cosine_convergence", "data_randomization_test",
           "efficient_mprt", "handling", "input_box", "method_requests", "pair_name", "paper_methods",
           "randomization_stages", "randomization_test", "randomize_layer", "randomized", "similarity_means",
           "smooth_mprt", "smooth_mprt_noise"]
