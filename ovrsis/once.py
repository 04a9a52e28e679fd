"""Messages shown once per run, across every process of the run.

A run has several processes: DDP ranks (``--num-gpus N``), the data-loader workers of each rank,
the pre-flight pool. An in-process "already logged" set warns once *per process* — the same
clipping warning four times with two workers. Here the main process of a program makes a marker
folder when it imports this module and publishes it in ``$OVRSIS_ONCE_DIR``; the processes it
starts with multiprocessing inherit the variable (another program started from it makes its own),
and :func:`first_time` claims a key by creating a marker file with ``O_EXCL``, which exactly one
process wins. The folder is removed when its creator exits.
"""
from __future__ import annotations

import atexit
import hashlib
import logging
import multiprocessing
import os
import shutil
import tempfile
from typing import Any, Set

ENV = "OVRSIS_ONCE_DIR"
_local: Set[str] = set()  # fallback when the marker folder cannot be used


def _folder(fresh: bool = False) -> str:
    folder = os.environ.get(ENV, "")
    if fresh or not folder or not os.path.isdir(folder):
        folder = tempfile.mkdtemp(prefix="ovrsis-once-")
        os.environ[ENV] = folder
        owner = os.getpid()
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))
    return folder


def first_time(key: str) -> bool:
    """True for exactly one call with ``key`` per run (every process of it), False afterwards."""
    if key in _local:
        return False
    _local.add(key)
    marker = os.path.join(_folder(), hashlib.sha1(key.encode("utf-8")).hexdigest())
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    except OSError:  # no usable temporary folder: once per process
        return True
    return True


def log_once(logger: logging.Logger, key: str, level: int, message: str, *args: Any) -> None:
    """``logger.log(level, message, *args)`` the first time ``key`` is seen in this run."""
    if first_time(key):
        logger.log(level, message, *args)


# A program's main process starts a run (a fresh folder, even if a parent program exported one); the
# processes it starts with multiprocessing (ranks, workers) join it before they can log anything.
_folder(fresh=multiprocessing.parent_process() is None)
