"""Several processes embedding one source: torch.distributed, launched by ``torchrun`` or by ``--devices N``.

``torchrun`` (any number of nodes, under SLURM or not) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
and ``MASTER_PORT`` for each process; :func:`local_launch` does the same for N processes on this machine through
``torch.multiprocessing`` (spawn). Each process joins the process group (NCCL when it runs on a GPU, gloo on the
CPU) and uses a gloo group for the little coordination embedding needs: a broadcast of the set-up outcome and the
barriers before and after the work. Ranks never exchange rows: each writes its own shards.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from vfmkit.errors import VfmError

BARRIER_TIMEOUT = timedelta(days=7)
"""How long a rank that finished its shards waits for the slowest one (a rank's share can take days)."""


@dataclass
class Ranks:
    """This process's place in a run: ``rank`` of ``world_size``, ``local_rank`` on its node, and the gloo group
    used for coordination (None when running alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: object | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank arrives (a no-op alone)."""
        if self.group is not None:
            dist.barrier(group=self.group)

    def broadcast(self, value: object) -> object:
        """Rank 0's ``value``, on every rank (``value`` itself alone)."""
        if self.group is None:
            return value
        payload = [value]
        dist.broadcast_object_list(payload, src=0, group=self.group)
        return payload[0]


def env_ranks() -> tuple[int, int, int] | None:
    """``(rank, world size, local rank)`` from torchrun's environment variables, None when they are not set."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as exc:
        raise VfmError(f"torchrun environment variables are not integers: {exc}") from None
    return rank, world, local


def join(use_cuda: bool) -> Ranks:
    """Join the run torchrun (or :func:`local_launch`) set up; alone when no environment says otherwise.

    A process on a GPU selects ``cuda:LOCAL_RANK`` and the group uses NCCL; on the CPU, gloo.
    """
    found = env_ranks()
    if found is None or found[1] == 1:
        return Ranks()
    rank, world, local = found
    if use_cuda:
        torch.cuda.set_device(local % max(torch.cuda.device_count(), 1))
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=BARRIER_TIMEOUT)
    group = (
        dist.new_group(backend="gloo", timeout=BARRIER_TIMEOUT) if dist.get_backend() != "gloo" else dist.group.WORLD
    )
    return Ranks(rank, world, local, group)


def leave(ranks: Ranks) -> None:
    """Leave the process group (when one was joined)."""
    if ranks.group is not None and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child(local_rank: int, world: int, port: int, errors: str, function: Callable, kwargs: dict) -> None:
    os.environ.update(
        RANK=str(local_rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(local_rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        result = function(**kwargs)
        if local_rank == 0:
            Path(errors, "result.pickle").write_bytes(pickle.dumps(result))
    except VfmError as exc:
        Path(errors, f"rank{local_rank}.txt").write_text(str(exc), encoding="utf-8")
        sys.exit(exc.exit_code)


def local_launch(devices: int, function: Callable, kwargs: dict) -> object:
    """Run ``function(**kwargs)`` in ``devices`` spawned processes on this machine, as ranks 0..devices-1; returns
    rank 0's result.

    Raises:
        VfmError: a rank failed with a user error (its message), or died (its exit code).
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="vfm-ranks-") as errors:
        try:
            mp.start_processes(
                _child,
                args=(devices, free_port(), errors, function, kwargs),
                nprocs=devices,
                join=True,
                start_method="spawn",
            )
        except mp.ProcessException as exc:
            messages = sorted(Path(errors).glob("rank*.txt"))
            if messages:
                raise VfmError(messages[0].read_text(encoding="utf-8")) from None
            raise VfmError(f"rank {exc.error_index} of --devices {devices} failed: {str(exc).strip()[-500:]}") from None
        return pickle.loads(Path(errors, "result.pickle").read_bytes())
