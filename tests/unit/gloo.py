"""Run a function in N spawned processes joined by a real gloo process group."""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Callable

import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn: Callable, args: tuple, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    # Pickled by value: torch's queue pickler shares tensors through a file descriptor that
    # vanishes when this process exits, which can happen before the parent reads it.
    queue.put((rank, pickle.dumps(fn(rank, world, *args))))
    dist.barrier()
    dist.destroy_process_group()


def run_in_gloo_workers(fn: Callable, world: int, *args) -> list:
    """fn(rank, world, *args) on every rank (fn must be importable); results in rank order."""
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    port = _free_port()
    processes = [
        context.Process(target=_entry, args=(rank, world, port, fn, args, queue))
        for rank in range(world)
    ]
    for process in processes:
        process.start()
    results = {rank: pickle.loads(payload) for rank, payload in (queue.get() for _ in processes)}
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return [results[rank] for rank in range(world)]
