"""CPU work on shared machines: intra-op threads that follow the free cores, and OpenMP's
wait policy, both set for every process that imports ``ovrsis``.

The failure they fix (docs/performance.md, "CPU under load"): PyTorch's CPU kernels run on GNU
OpenMP (libgomp), whose threads meet at a barrier after each of the thousands of small parallel
regions of a training step and *spin* there (up to 300 000 iterations, ~3 ms) before they
sleep. When a job has more threads than the cores other processes leave free, one of its threads
is always waiting for the scheduler and its partner burns its own time slice spinning for it:
the issue saw the quickstart 50× slower next to other work, where a fair share of the cores
would have made it 3–6× slower; measured here, up to 10.7× the fair share.

* **Adaptive threads** (default on Linux): :class:`ThreadGovernor` measures, every 0.5 s of
  network calls, the cores the other processes use (``/proc/stat``) and keeps this process's
  intra-op threads at the free cores (at most a container's CPU quota, at least one, never more
  than it started with). Each thread then has a core, so libgomp's short spin is the fastest way
  to wait, and nothing else is set. Measured on the 2-core VM next to 1, 2, 4 busy processes:
  1.05 / 1.08 / 1.28 × the fair share for a training step, no cost on a quiet machine. Thread counts change the order of float
  reductions, so CPU results may differ in the last bits with the load;
  ``OVRSIS_ADAPTIVE_THREADS=0`` keeps the count fixed (the tests do).
* **Fixed threads** (``OVRSIS_ADAPTIVE_THREADS=0``, or no ``/proc/stat``): ``OMP_WAIT_POLICY=PASSIVE``
  is set, so a waiting thread sleeps at once: no collapse (1.7–1.9 × the fair share), but small
  parallel regions must wake sleeping threads (the tiny quickstart model: 1.5× per training step
  on a quiet machine).

libgomp reads its environment when it is loaded, i.e. when ``torch`` is first imported, so
:func:`apply_cpu_defaults` runs from ``ovrsis/__init__.py`` — every entry point (``train_net.py``,
``tools/``, ``eval_scripts/``, the tests' ``conftest.py``) imports ``ovrsis`` before ``torch``, and
child processes (launcher workers, DataLoader workers) inherit the environment. Variables the
user set are left alone; ``OVRSIS_CPU_DEFAULTS=0`` turns both off (the libraries' own defaults).
The ceiling comes from elsewhere: the CPU launcher gives each of N processes 1/N of the cores
(:func:`ovrsis.engine.launch.threads_per_process`), and PyTorch gives each DataLoader worker one
thread.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Callable, Dict, Iterable, List, Mapping, MutableMapping, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

ADAPTIVE_THREADS_VARIABLE = "OVRSIS_ADAPTIVE_THREADS"
# set when the thread count is fixed: sleeping at once is what keeps fixed threads from collapsing
FIXED_THREADS_DEFAULTS: Dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}


def adaptive_threads_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether :func:`adapt_threads` acts: not with ``OVRSIS_ADAPTIVE_THREADS=0`` nor
    ``OVRSIS_CPU_DEFAULTS=0``, and only where ``/proc/stat`` exists (Linux)."""
    return (environ.get(ADAPTIVE_THREADS_VARIABLE, "1") != "0" and environ.get("OVRSIS_CPU_DEFAULTS", "1") != "0"
            and os.path.exists("/proc/stat"))


def apply_cpu_defaults(environ: MutableMapping[str, str] = os.environ) -> Dict[str, str]:
    """With a fixed thread count (adaptive threads off), set each of
    :data:`FIXED_THREADS_DEFAULTS` the environment does not set; returns what was set (empty
    with adaptive threads or ``OVRSIS_CPU_DEFAULTS=0``). Takes effect only if torch (libgomp) is
    not loaded yet in this process; children started later inherit it either way."""
    if environ.get("OVRSIS_CPU_DEFAULTS", "1") == "0" or adaptive_threads_enabled(environ):
        return {}
    applied = {k: v for k, v in FIXED_THREADS_DEFAULTS.items() if k not in environ}
    environ.update(applied)
    return applied


# ---------------------------------------------------------------- adaptive intra-op threads
def threads_for_free_cores(free_cores: float, max_threads: int) -> int:
    """Intra-op threads for a job that may use up to ``max_threads`` when ``free_cores`` cores
    are left by other processes: the free cores rounded to the nearest whole core, at least 1.

    A job whose threads meet at barriers runs at the pace of its slowest thread; with more
    threads than free cores one of them is always waiting for the scheduler, so a job of T
    threads next to busy processes is slower than one of fewer threads that each get a core
    (docs/performance.md, "CPU under load")."""
    return max(1, min(int(max_threads), int(free_cores + 0.5)))


def available_cpus() -> List[int]:
    """The CPUs this process may run on (its affinity mask, else all of ``os.cpu_count()``)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def cpu_quota(root: str = "/sys/fs/cgroup") -> Optional[float]:
    """Cores this process's cgroup may use per second (a container's ``--cpus``, a CFS quota):
    ``cpu.max`` (cgroup v2) or ``cpu/cpu.cfs_quota_us`` ÷ ``cpu.cfs_period_us`` (v1); ``None``
    where there is no quota or no such file. PyTorch does not read quotas: in a 2-CPU container
    on a 64-core host it starts 64 threads."""
    try:
        with open(os.path.join(root, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for folder in ("cpu", "cpu,cpuacct"):
        try:
            with open(os.path.join(root, folder, "cpu.cfs_quota_us")) as f:
                quota = int(f.read())
            with open(os.path.join(root, folder, "cpu.cfs_period_us")) as f:
                period = int(f.read())
        except (OSError, ValueError):
            continue
        return None if quota <= 0 or period <= 0 else quota / period
    return None


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def busy_core_seconds(cpus: Iterable[int], stat_path: str = "/proc/stat") -> Optional[float]:
    """Seconds all processes spent running on ``cpus`` since boot (``/proc/stat``: user, nice,
    system, irq, softirq and steal; idle and iowait left out); ``None`` where the file does not
    exist or names none of ``cpus`` (not Linux, a restricted container)."""
    wanted = {f"cpu{c}" for c in cpus}
    ticks = 0
    found = False
    try:
        with open(stat_path) as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] in wanted:
                    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
                    ticks += sum(values) - values[3] - values[4]
                    found = True
    except OSError:
        return None
    return ticks / _clock_ticks() if found else None


def own_core_seconds() -> float:
    """CPU seconds of this process, every thread (user + system)."""
    t = os.times()
    return t.user + t.system


def take_sample(read_busy: Callable[[], Optional[float]], read_own: Callable[[], float] = own_core_seconds,
                clock: Callable[[], float] = time.monotonic) -> Optional[Tuple[float, float, float]]:
    """``(clock, busy core-seconds, own CPU seconds)`` now, or ``None`` without a busy reading."""
    busy = read_busy()
    return None if busy is None else (clock(), busy, read_own())


class ThreadGovernor:
    """Keeps this process's intra-op thread count at the cores other processes leave free.

    Every :meth:`update` at least ``interval`` seconds after the previous sample measures, over
    that interval, the cores the *other* processes used on this process's CPUs (their busy time
    from ``/proc/stat`` minus this process's own CPU time, per second of wall time) and sets
    ``torch.set_num_threads(threads_for_free_cores(cores - others, max_threads))`` (the free cores
    capped at the cgroup's ``quota``). It never exceeds the count it found (``OMP_NUM_THREADS``,
    the launcher's share, ``torch.set_num_threads``): when something else changes the count, that
    becomes the new ceiling. Children (DataLoader workers) count as other processes: they compete
    for the same cores.

    ``cpus``: the CPUs this process may run on; ``quota``: the cores its cgroup may use
    (:func:`cpu_quota`), which caps the free cores (``None``: no quota); ``first_sample``: a
    ``(clock, busy, own)`` reading taken earlier (:data:`IMPORT_SAMPLE`), so that the first
    :meth:`update` already decides. Readings (replaceable for tests): ``read_busy()`` → busy
    core-seconds of those CPUs or ``None`` (default :func:`busy_core_seconds`); ``read_own()`` →
    this process's CPU seconds; ``clock()`` → wall seconds. Intra-op threads are per calling
    thread in OpenMP, so :meth:`update` must run on the thread that computes (the model's forward).
    """

    def __init__(self, cpus: Sequence[int], quota: Optional[float] = None, interval: float = 0.5,
                 first_sample: Optional[Tuple[float, float, float]] = None,
                 read_busy: Optional[Callable[[], Optional[float]]] = None,
                 read_own: Callable[[], float] = own_core_seconds, clock: Callable[[], float] = time.monotonic,
                 get_threads: Optional[Callable[[], int]] = None,
                 set_threads: Optional[Callable[[int], None]] = None) -> None:
        import torch

        self.cores = len(cpus)
        self.quota = quota
        self.interval = interval
        self._read_busy = read_busy or (lambda: busy_core_seconds(cpus))
        self._read_own = read_own
        self._clock = clock
        self._get_threads = get_threads or torch.get_num_threads
        self._set_threads = set_threads or torch.set_num_threads
        self.max_threads = self._get_threads()
        self.threads = self.max_threads
        self._sample = first_sample  # (clock, busy, own) taken earlier, e.g. at import: decide on the first update
        self.changes = 0

    def update(self) -> int:
        """Re-decide when ``interval`` has passed since the last sample; returns the thread count."""
        now = self._clock()
        if self._sample is not None and now - self._sample[0] < self.interval:
            return self.threads
        current = self._get_threads()
        if current != self.threads:  # set by someone else since: their count is the new ceiling
            self.max_threads = self.threads = current
        sample = take_sample(self._read_busy, self._read_own, self._clock)
        if sample is None:
            return self.threads
        if self._sample is not None:
            wall = sample[0] - self._sample[0]
            others = max(0.0, (sample[1] - self._sample[1]) - (sample[2] - self._sample[2])) / wall
            free = self.cores - others
            if self.quota is not None:  # whole cores within the quota: a thread over it is throttled
                free = min(free, max(1, math.floor(self.quota)))
            threads = threads_for_free_cores(free, self.max_threads)
            if threads != self.threads:
                self._set_threads(threads)
                log = logger.info if self.changes == 0 else logger.debug
                log("%.1f of %d cores are used by other processes%s: %d intra-op thread%s (of at most %d; "
                    "%s=0 keeps the count fixed)", others, self.cores,
                    "" if self.quota is None else f", this cgroup may use {self.quota:g}", threads,
                    "" if threads == 1 else "s", self.max_threads, ADAPTIVE_THREADS_VARIABLE)
                self.threads = threads
                self.changes += 1
        self._sample = sample
        return self.threads




# taken when ovrsis is imported: the first network call then judges the load from the seconds
# spent building the model, instead of running one more interval with every thread
IMPORT_CPUS = available_cpus()
IMPORT_SAMPLE = take_sample(lambda: busy_core_seconds(IMPORT_CPUS)) if adaptive_threads_enabled() else None

_GOVERNOR: Optional[ThreadGovernor] = None
_GOVERNOR_OFF = False
_GOVERNED_THREAD: Optional[int] = None  # the thread that first computed: the only one governed


def adapt_threads(device) -> None:
    """Called where a model's network starts (each forward, tile batch or window batch): on
    the CPU, lets this process's :class:`ThreadGovernor` re-decide its intra-op thread count
    (at most every 0.5 s, a clock read otherwise). Only the thread that called it first is
    governed (a server's worker threads keep their counts). Does nothing on other devices or when
    :func:`adaptive_threads_enabled` is false."""
    global _GOVERNOR, _GOVERNOR_OFF, _GOVERNED_THREAD
    if _GOVERNOR_OFF or getattr(device, "type", device) != "cpu":
        return
    if _GOVERNOR is None:
        if not adaptive_threads_enabled():
            _GOVERNOR_OFF = True
            return
        cpus = available_cpus()
        _GOVERNOR = ThreadGovernor(cpus, cpu_quota(), first_sample=IMPORT_SAMPLE if cpus == IMPORT_CPUS else None)
        _GOVERNED_THREAD = threading.get_ident()
    if threading.get_ident() == _GOVERNED_THREAD:  # thread counts are per calling thread in OpenMP
        _GOVERNOR.update()
