"""Where things are, from a test in any folder: the checkout, the package's sources, the tests' root."""
import os
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
PACKAGE = ROOT / "lib" / "saliency_sanity"
if not (PACKAGE / "__init__.py").is_file():  # else the scans of the sources would pass on no file at all
    raise RuntimeError(f"helpers/paths.py: no package at {PACKAGE}")


def subprocess_env() -> dict[str, str]:
    """The environment of a ``python -m saliency_sanity`` subprocess that loads ``helpers.tiny_factory``:
    the tests' root on ``PYTHONPATH``, and one OpenMP thread."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}
