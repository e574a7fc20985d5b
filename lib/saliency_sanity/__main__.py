"""``python -m saliency_sanity``."""
import sys

from .cli import main

sys.exit(main())
