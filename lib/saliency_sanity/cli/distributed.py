"""Split the images of a check across torchrun processes and gather one result table.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the checks run on a contiguous
slice of whole batches of images per rank (keeping the global image index in the ``image`` column) and rank 0
receives every rank's rows: the same table as one process, row for row. gloo on the CPU, nccl on
GPUs (one per rank, ``LOCAL_RANK``).
"""
from __future__ import annotations

from dataclasses import dataclass
import os

import pandas as pd
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "auto") -> tuple[Ranks, torch.device]:
    """Join the process group when launched by torchrun; the ranks and this process's device."""
    from .._core.device import resolve_device

    if not launched_by_torchrun():
        return Ranks(), resolve_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = resolve_device(device)
    if wanted.type == "cuda":
        torch.cuda.set_device(local_rank)
        wanted = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if wanted.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank), wanted


def shard(n: int, ranks: Ranks, block: int = 1) -> range:
    """The contiguous slice of ``n`` items that ``ranks.rank`` works on: whole ``block``s (batches)
    split as evenly as possible, so that every rank count computes the very same batches as one
    process and the floating-point sums, hence the maps, are identical bit for bit."""
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    blocks = -(-n // block)
    base, extra = divmod(blocks, ranks.world)
    first = ranks.rank * base + min(ranks.rank, extra)
    count = base + (ranks.rank < extra)
    return range(min(n, first * block), min(n, (first + count) * block))


def gather(frame: pd.DataFrame, ranks: Ranks) -> pd.DataFrame | None:
    """Every rank's rows on rank 0, in rank order (None on the other ranks)."""
    if ranks.world == 1:
        return frame
    parts = [None] * ranks.world if ranks.is_main else None
    dist.gather_object(frame, parts, dst=0)
    return pd.concat(parts, ignore_index=True) if ranks.is_main else None


def finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
