"""The command line: the book's reproduction and the checks on a user's own model, on one or
many processes.
"""
from .commands import main  # noqa: E402,F401  the console script saliency-sanity = saliency_sanity.cli:main
