"""The same seed gives the same tables twice on the CPU, and the book's numbers do not move
between two smoke executions."""
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch

from saliency_sanity.checks import class_sensitivity, data_randomization_test, randomization_test
from saliency_sanity.models.architectures import build_model

METHODS = ["gradient", "smoothgrad", "guided_backprop", "lrp_epsilon", "gradcam", "fullgrad"]


def test_checks_give_identical_tables_twice():
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    runs = []
    for _ in range(2):
        model = build_model("resnet", seed=2).eval()
        options = [(m, m, {"n_samples": 3} if m == "smoothgrad" else {}) for m in METHODS]
        runs.append((randomization_test(model, x, options, unit="block", seed=5, progress=False),
                     class_sensitivity(model, x, options, seed=5, progress=False),
                     data_randomization_test(model, build_model("resnet", seed=9).eval(), x, options,
                                             progress=False)))
    for first, second in zip(*runs):
        pd.testing.assert_frame_equal(first, second)


def glued(path: Path) -> dict:
    """The glued values of an executed notebook: {name: text}."""
    values = {}
    for cell in nbformat.read(path, 4).cells:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:  # myst-nb stores the value under a papermill-record MIME type ending in text/plain
                values[name] = next(v for k, v in out["data"].items() if k.endswith("text/plain"))
    return values


@pytest.mark.parametrize("notebook", ["04_positive_handling.ipynb", "06_instability.ipynb"])
def test_book_numbers_are_the_same_in_a_second_smoke_execution(smoke_site, tmp_path, notebook):
    """The sanity-check summary and the whole instability chapter (its retraining runs come from the
    checkpoint cache the first execution filled) give the same glued numbers again."""
    first = glued(smoke_site / "book" / "generated" / notebook)
    assert len(first) > 10
    env = {**os.environ, "SALIENCY_SANITY_CACHE": str(smoke_site.parent / "cache")}  # the build's trained models
    again = tmp_path / notebook
    result = subprocess.run([sys.executable, "-m", "papermill", str(smoke_site / "notebooks" / notebook), str(again),
                             "-p", "profile", "smoke", "-p", "figures_dir", str(tmp_path / "figures"),
                             "--cwd", str(smoke_site)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert glued(again) == first
