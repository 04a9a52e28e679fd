"""Multi-process launch: detectron2's ``launch`` on CUDA, gloo on CPU, and ``torchrun``.

detectron2 0.6's launcher asserts CUDA and hard-codes NCCL, so CPU runs (tests, laptops)
need their own path; ``torchrun`` (env://) is detected from its environment variables.
"""
from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"))


def _make_local_group(machine_rank: int, procs_per_machine: int, world_size: int) -> None:
    """detectron2's ``comm.get_local_rank`` needs the per-machine process group."""
    for i in range(world_size // procs_per_machine):
        group = dist.new_group(list(range(i * procs_per_machine, (i + 1) * procs_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _cpu_worker(local_rank: int, main_func: Callable, world_size: int, procs_per_machine: int, machine_rank: int,
                dist_url: str, args: Sequence[Any], timeout: timedelta) -> None:
    mp.set_start_method("fork", force=True)  # DataLoader workers need not re-import everything
    rank = machine_rank * procs_per_machine + local_rank
    dist.init_process_group("gloo", init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout)
    _make_local_group(machine_rank, procs_per_machine, world_size)
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def launch(main_func: Callable, num_procs_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = "auto", args: Sequence[Any] = (), timeout_minutes: float = 30) -> None:
    """Run ``main_func(*args)`` in every process of the job.

    ``num_procs_per_machine`` is GPUs per machine on CUDA and processes per machine on CPU.
    """
    timeout = timedelta(minutes=timeout_minutes)
    if launched_by_torchrun():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        local_rank, local_size = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, init_method="env://", timeout=timeout)
        world = dist.get_world_size()
        _make_local_group(dist.get_rank() // local_size, local_size, world)
        comm.synchronize()
        main_func(*args)
        return
    if torch.cuda.is_available():
        d2_launch(main_func, num_procs_per_machine, num_machines=num_machines, machine_rank=machine_rank,
                  dist_url=dist_url, args=tuple(args), timeout=timeout)
        return
    world_size = num_procs_per_machine * num_machines
    if world_size <= 1:
        main_func(*args)
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("dist_url='auto' works only on one machine; pass --dist-url tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{free_port()}"
    mp.start_processes(_cpu_worker, nprocs=num_procs_per_machine, start_method="spawn",
                       args=(main_func, world_size, num_procs_per_machine, machine_rank, dist_url, tuple(args), timeout))
