"""Tables cached by their settings and the package's source: computed once, reused, never stale."""
import numpy as np
import pandas as pd
import pytest

from saliency_sanity._core import cache


def test_cached_table_computes_once_and_reads_back_the_same_values(tmp_path, monkeypatch):
    monkeypatch.setenv("SALIENCY_SANITY_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"label": ["a", "b"], "value": [1 / 3, np.nan], "stage": [0, 1]})

    first = cache.cached_table("t", {"n": 1}, compute)
    second = cache.cached_table("t", {"n": 1}, compute)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first, second)
    assert first.value[0] == 1 / 3 and np.isnan(first.value[1])  # every digit and NaN survive the CSV
    cache.cached_table("t", {"n": 2}, compute)  # other settings: computed anew
    assert len(calls) == 2


def test_cached_table_is_stale_when_the_source_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("SALIENCY_SANITY_CACHE", str(tmp_path))
    calls = []
    compute = lambda: calls.append(1) or pd.DataFrame({"x": [1]})  # noqa: E731
    cache.cached_table("t", {}, compute)
    monkeypatch.setattr(cache, "source_hash", lambda length=16: "other source")
    cache.cached_table("t", {}, compute)
    assert len(calls) == 2


def test_source_hash_is_stable_and_covers_the_package():
    assert cache.source_hash() == cache.source_hash()
    assert len(cache.source_hash()) == 16


def test_a_failed_computation_leaves_no_table(tmp_path, monkeypatch):
    monkeypatch.setenv("SALIENCY_SANITY_CACHE", str(tmp_path))

    def broken():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.cached_table("t", {}, broken)
    assert not list(tmp_path.rglob("*.csv"))
