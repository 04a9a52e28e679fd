"""Process defaults for CPU work on shared machines, applied once when ``ovrsis`` is imported.

Why: PyTorch's CPU kernels run on GNU OpenMP (libgomp), whose threads *spin* (busy-wait, up to
300 000 iterations) at every barrier before they sleep. On a machine where other processes
also want the cores, a spinning thread burns the time slice its partner needs to reach the
barrier, and every one of the thousands of small parallel regions of a training step waits
for a descheduled thread: measured on the 2-core development VM with other work running, the
quickstart's training step took 8.4 s instead of 0.70 s with passive waiting (12×; the issue
saw 50× at load average 6–12; docs/performance.md, "CPU under load"). With passive waiting
(``OMP_WAIT_POLICY=PASSIVE``) a waiting thread sleeps at once and the job degrades to its fair
share (1.7–2.0× of it next to 1–4 busy processes; docs/performance.md). On a quiet machine
it costs the tiny quickstart model 1.5× per training step (measured; small parallel regions wake
sleeping threads), which is why ``OVRSIS_CPU_DEFAULTS=0`` exists for benchmarking on a machine of one's own.

libgomp reads its environment when it is loaded, i.e. when ``torch`` is first imported, so
this runs from ``ovrsis/__init__.py`` — every entry point (``train_net.py``, ``tools/``,
``eval_scripts/``, the tests' ``conftest.py``) imports ``ovrsis`` before ``torch``, and child
processes (launcher workers, DataLoader workers) inherit the environment. Variables the user
set are left alone; ``OVRSIS_CPU_DEFAULTS=0`` keeps the libraries' own defaults. Thread
counts are set elsewhere: the CPU launcher gives each of N processes 1/N of the cores
(:func:`ovrsis.engine.launch.threads_per_process`), and PyTorch gives each DataLoader worker
one thread.
"""
from __future__ import annotations

import os
from typing import Dict, MutableMapping

CPU_DEFAULTS: Dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}


def apply_cpu_defaults(environ: MutableMapping[str, str] = os.environ) -> Dict[str, str]:
    """Set each of :data:`CPU_DEFAULTS` the environment does not set; returns what was set
    (empty when ``OVRSIS_CPU_DEFAULTS=0``). Takes effect only if torch (libgomp) is not loaded
    yet in this process; children started later inherit it either way."""
    if environ.get("OVRSIS_CPU_DEFAULTS", "1") == "0":
        return {}
    applied = {k: v for k, v in CPU_DEFAULTS.items() if k not in environ}
    environ.update(applied)
    return applied
