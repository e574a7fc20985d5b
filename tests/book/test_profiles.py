"""Profiles and the type checks of notebook parameters."""
import pytest

from saliency_sanity.book.profiles import PROFILES, get_profile


def test_profiles_grow():
    s, d, f = (PROFILES[n] for n in ("smoke", "default", "full"))
    assert s.n_images < d.n_images < f.n_images and len(s.seeds) < len(d.seeds) < len(f.seeds)


def test_overrides_and_errors():
    assert get_profile("smoke", epochs=3).epochs == 3
    assert get_profile("smoke", seeds=3).seeds == (0, 1, 2)
    assert get_profile("smoke", epochs=None) is PROFILES["smoke"]
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        get_profile("fast")
    with pytest.raises(TypeError, match="epochs must be an integer"):
        get_profile("smoke", epochs="two")
    with pytest.raises(TypeError, match="seeds must be a list of integers"):
        get_profile("smoke", seeds=[0.5])
    with pytest.raises(ValueError, match="unknown profile parameter 'lr'"):
        get_profile("smoke", lr=3)
    with pytest.raises(ValueError, match=">= 1"):
        get_profile("smoke", n_images=0)
