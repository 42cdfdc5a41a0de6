"""Data-parallel training on PyTorch's own engine: the process group a ``torchrun`` launch sets up.

Owns reading torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), initialising
the process group once (``nccl`` for CUDA tensors and ``gloo`` for CPU ones when a GPU is
present, ``gloo`` alone otherwise), the rank queries (:func:`rank`, :func:`world_size`,
:func:`is_main`), :func:`barrier`, :func:`main_first` (rank 0 does a block first, the others
wait and then run it against its files), summing numbers over ranks (:func:`all_reduce_sum`)
and handing rank 0's Python objects to every rank (:func:`broadcast_object`).

In a single process (no torchrun environment) every function is a no-op that returns the
single-process answer without importing torch, so single-process runs are unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from edgeemo.errors import TrainingError

# collectives wait this long for the slowest rank (e.g. rank 0 alone training the GAN or building caches)
TIMEOUT_ENV = "EDGEEMO_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 4 * 3600


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise TrainingError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from None


def world_size() -> int:
    """Number of processes in this training job (1 outside torchrun)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    """This process's global rank (0 outside torchrun)."""
    return _env_int("RANK", 0)


def local_rank() -> int:
    """This process's rank on its machine: the GPU it drives."""
    return _env_int("LOCAL_RANK", 0)


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes the run's files."""
    return rank() == 0


def init() -> bool:
    """Initialise the process group once (when ``WORLD_SIZE`` > 1); True when running distributed."""
    if not is_distributed():
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return True
    if not 0 <= rank() < world_size():
        raise TrainingError(f"RANK {rank()} is outside WORLD_SIZE {world_size()}")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    timeout = timedelta(seconds=_env_int(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    dist.init_process_group(backend=backend, timeout=timeout)
    return True


def barrier() -> None:
    """Wait until every rank gets here."""
    if init():
        import torch.distributed as dist

        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first; the other ranks wait, then run it (reading what rank 0 wrote)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def all_reduce_sum(values: list[float]) -> list[float]:
    """``values`` summed over all ranks, element-wise (unchanged in a single process)."""
    if not init():
        return list(values)
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects; unchanged in a single process)."""
    if not init():
        return obj
    import torch.distributed as dist

    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard_indices(order: list[int], world: int, rank_: int) -> list[int]:
    """Rank ``rank_``'s share of ``order``: every ``world``-th item, padded by wrapping round so every rank
    gets the same count (as DistributedSampler does). Rank r's k-th batch of size B is then drawn from
    ``order[k*B*world:(k+1)*B*world]``, the same items a single process takes in its k-th batch of B*world."""
    if world <= 1:
        return list(order)
    if not order:
        return []
    total = -(-len(order) // world) * world
    padded = list(order) + [order[i % len(order)] for i in range(total - len(order))]
    return padded[rank_::world]


def local_device_name(name: str) -> str:
    """The device this rank trains on: ``cuda`` (or ``auto`` with a GPU) becomes ``cuda:LOCAL_RANK``."""
    if not is_distributed():
        return name
    import torch

    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return f"cuda:{local_rank() % max(1, torch.cuda.device_count())}"
    return name


def destroy() -> None:
    """Tear the process group down at the end of a run (nothing when none was set up)."""
    if not is_distributed():
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
