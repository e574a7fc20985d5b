"""Helpers shared by the tests in every folder, imported as ``helpers.<module>``.

``tests/`` is on ``sys.path`` by ``pythonpath = ["tests"]`` in pyproject.toml; subprocesses get it on
``PYTHONPATH`` from :func:`helpers.paths.subprocess_env`.

- ``model_state``: a model's weights or full state before a call, and the check that the call left it so
- ``peers``: inputs and model copies for the comparisons with Captum, Zennit and pytorch-grad-cam
- ``tiny_factory``: importable model factories for ``--model helpers.tiny_factory:tiny``
- ``figures``: the readability check of a matplotlib figure
- ``paths``: the checkout, the package's sources, the tests' root
"""
