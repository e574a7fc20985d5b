"""Results that survive interruptions: a config hash names them, atomic writes store them.

A run killed part-way leaves either the old file or the new one, never half a file, and a
changed parameter changes the hash, so stale results are never reused.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
import re
import socket
import tempfile
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


# Temporary files of an atomic write: ".<name>.<pid>@<host>.<random>.tmp" in the target's folder. The pid
# and host say whose they are, so that a later run can remove those of a writer killed mid-write
# (SIGKILL, power loss: no ``finally`` runs) without touching those of a writer still running.
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>.*)\.[A-Za-z0-9_]+\.tmp$")


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}@{socket.gethostname()}."


def temporary_files(directory: str | os.PathLike) -> list[Path]:
    """The temporary files of atomic writes in ``directory`` (not recursive), whoever's they are."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _TEMP.match(p.name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporary_files(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that a killed writer left in ``directory``; return them.

    A write that completes or raises removes its own temporary file; only a process killed
    mid-write (SIGKILL, OOM killer, power loss) leaves one behind. A temporary file is stale when
    its writer ran on this host and its process no longer exists; those of live processes and of
    other hosts (a shared file system) are kept, so concurrent writers are never disturbed.
    """
    host, removed = socket.gethostname(), []
    for path in temporary_files(directory):
        match = _TEMP.match(path.name)
        if match["host"] == host and not _alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check_writable(path: str | os.PathLike) -> Path:
    """Raise a one-line error now if an atomic write to ``path`` would fail for its folder.

    Checks that the folder exists, is a folder, that ``path`` is not a folder, and that a file can
    really be created there: a probe file (named like the temporary files) is created and removed.
    Permission bits alone would not do: ``os.access`` and chmod say nothing for root, who writes
    through them, while a read-only mount or a full quota stops everybody. Space or a file-size
    limit hit later, while writing, is not detected here; the atomic write then leaves the previous
    file in place. Returns ``path``.
    """
    path = Path(path)
    folder = path.parent
    if not folder.exists():
        raise FileNotFoundError(f"cannot write {path}: the folder {folder} does not exist (create it first)")
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {folder} is not a folder")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; give a file name")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(path), suffix=".tmp")
    except OSError as err:
        raise PermissionError(err.errno, f"cannot write {path}: cannot create a file in {folder} "
                                         f"({err.strerror or err})") from err
    os.close(fd)
    os.unlink(probe)
    return path


def _atomic(path: Path, write) -> Path:
    """Write ``path`` through a temporary file in its folder, fsync'ed, then ``os.replace``d over it.

    On any error the temporary file is removed and the previous file at ``path`` (if any) is left
    as it was; an ``OSError`` without a file name (a full disk, a file-size limit: ``EFBIG``) is
    raised again naming ``path``. The folder is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temporary file and a rename.

    Serialised in memory first, then written in one go: torch's zip writer, writing to the file
    directly, turns a failed write (full disk, file-size limit) into an obscure ``RuntimeError``
    ("unexpected pos ..."); this way it is an ``OSError`` naming ``path``. Costs one copy of the
    checkpoint in memory while it is written.
    """
    def write(fh):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        fh.write(buffer.getbuffer())

    return _atomic(Path(path), write)


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


def source_hash(length: int = 16) -> str:
    """A digest of the package's own source files: a cached result computed by other code is stale."""
    package = Path(__file__).resolve().parents[1]  # the whole package, not just _core
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:length]


def cached_table(name: str, key: Any, compute) -> "pandas.DataFrame":
    """The DataFrame ``compute()`` returns, kept as CSV under the cache root and reused while ``key``
    and the package's source are unchanged (one experiment's table, shared by several notebooks)."""
    import pandas as pd

    path = cache_root() / "tables" / f"{name}-{config_hash({'key': key, 'source': source_hash()})}.csv"
    if not path.is_file():
        frame = compute()
        # CSV keeps the cache readable and free of pickled code; floats are written with every digit
        _atomic(path, lambda fh: fh.write(frame.to_csv(index=False, float_format="%.17g").encode()))
    # read back also when just computed, so a first run and a rerun see the same dtypes
    return pd.read_csv(path)
