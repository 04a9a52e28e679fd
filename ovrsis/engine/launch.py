"""Multi-process launch: detectron2's ``launch`` on CUDA, gloo on CPU, and ``torchrun``.

detectron2 0.6's launcher asserts CUDA and hard-codes NCCL, so CPU runs (tests, laptops)
need their own path; ``torchrun`` (env://) is detected from its environment variables.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from datetime import timedelta
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

from ..errors import describe_user_error
from ..runtime import available_cpus

USER_ERROR_EXIT_CODE = 2


def report_user_errors(main_func: Callable, *args: Any) -> Any:
    """Run ``main_func(*args)``; a user error (config, data, checkpoint) is printed once, by
    rank 0, as ``ovrsis: error: ...`` without a traceback, and the process exits with status 2."""
    try:
        return main_func(*args)
    except Exception as err:  # noqa: BLE001 — re-raised unless it is a user error
        message = describe_user_error(err)
        if message is None:
            raise
        if comm.get_rank() == 0:
            print(f"ovrsis: error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(USER_ERROR_EXIT_CODE) from None


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


def threads_per_process(num_procs: int) -> int:
    """Intra-op threads for each of ``num_procs`` CPU processes on this machine: an explicit
    ``OMP_NUM_THREADS`` wins, else an equal share of the cores (at least 1). Without this
    every process starts one thread per core and N processes oversubscribe the CPU N-fold."""
    explicit = os.environ.get("OMP_NUM_THREADS", "")
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    return max(1, len(available_cpus()) // max(1, num_procs))


def _cpu_worker(local_rank: int, main_func: Callable, world_size: int, procs_per_machine: int, machine_rank: int,
                dist_url: str, args: Sequence[Any], timeout: timedelta, threads: int) -> None:
    torch.set_num_threads(threads)
    mp.set_start_method("fork", force=True)  # DataLoader workers need not re-import everything
    rank = machine_rank * procs_per_machine + local_rank
    dist.init_process_group("gloo", init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout)
    _make_local_group(machine_rank, procs_per_machine, world_size)
    comm.synchronize()
    try:
        report_user_errors(main_func, *args)
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
        if backend == "gloo":  # torchrun sets OMP_NUM_THREADS=1 only when the user did not
            torch.set_num_threads(threads_per_process(local_size))
        dist.init_process_group(backend, init_method="env://", timeout=timeout)
        world = dist.get_world_size()
        _make_local_group(dist.get_rank() // local_size, local_size, world)
        comm.synchronize()
        report_user_errors(main_func, *args)
        return
    try:
        _launch_local(main_func, num_procs_per_machine, num_machines, machine_rank, dist_url, args, timeout)
    except mp.ProcessExitedException as err:  # a worker already printed its user error
        if err.exit_code == USER_ERROR_EXIT_CODE:
            raise SystemExit(USER_ERROR_EXIT_CODE) from None
        raise


def _launch_local(main_func: Callable, num_procs_per_machine: int, num_machines: int, machine_rank: int,
                  dist_url: str, args: Sequence[Any], timeout: timedelta) -> None:
    if torch.cuda.is_available():
        d2_launch(report_user_errors, num_procs_per_machine, num_machines=num_machines, machine_rank=machine_rank,
                  dist_url=dist_url, args=(main_func, *args), timeout=timeout)
        return
    world_size = num_procs_per_machine * num_machines
    if world_size <= 1:
        report_user_errors(main_func, *args)
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("dist_url='auto' works only on one machine; pass --dist-url tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{free_port()}"
    threads = threads_per_process(num_procs_per_machine)
    # the spawned interpreters read these when OpenMP/MKL start, before _cpu_worker runs
    env = {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k not in os.environ}
    os.environ.update(env)
    # a worker's user error is printed once by rank 0; torch's "Terminating process ... via signal
    # SIGTERM" notices for the other workers would follow it, so that logger is quiet meanwhile
    spawn_logger = logging.getLogger("torch.multiprocessing.spawn")
    level = spawn_logger.level
    spawn_logger.setLevel(logging.ERROR)
    try:
        mp.start_processes(_cpu_worker, nprocs=num_procs_per_machine, start_method="spawn",
                           args=(main_func, world_size, num_procs_per_machine, machine_rank, dist_url, tuple(args),
                                 timeout, threads))
    finally:
        spawn_logger.setLevel(level)
        for key in env:
            os.environ.pop(key, None)
