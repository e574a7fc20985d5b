"""Results that survive interruptions: a config hash names them, atomic writes store them.

A run killed part-way leaves either the old file or the new one, never half a file, and a
changed parameter changes the hash, so stale results are never reused.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

# Bump when a change to the code would make old cached results wrong for the same config.
CACHE_VERSION = 1


def cache_root() -> Path:
    """``$SALIENCY_SANITY_CACHE`` if set, else ``~/.cache/saliency_sanity``."""
    root = os.environ.get("SALIENCY_SANITY_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "saliency_sanity"


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _jsonable(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot hash a config value of type {type(obj).__name__}: {obj!r}")


def config_hash(config: Any, length: int = 16) -> str:
    """A stable hex digest of a JSON-able config (dataclasses and dicts included)."""
    text = json.dumps({"cache_version": CACHE_VERSION, "config": _jsonable(config)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temporary file and a rename."""
    return _atomic(Path(path), lambda fh: torch.save(obj, fh))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    return _atomic(Path(path), lambda fh: fh.write(text.encode()))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True), path)


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only, never code."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a loadable checkpoint of tensors ({err.__class__.__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}); delete it to recompute") from err
