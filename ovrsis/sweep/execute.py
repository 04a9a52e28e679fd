"""Running a sweep's runs: one worker process per run, locally or as Slurm jobs through submitit.

* :class:`RunTask` runs one run: it starts ``eval_scripts/sweep.py _worker RUN_DIR`` (train
  through ``train_net.py``, then the benchmark runner), sends its output to ``RUN_DIR/sweep.log``
  and records the outcome in ``RUN_DIR/sweep_run.json``; a failure is recorded, never raised, so
  the other runs go on. The worker dies with the process that started it (Linux
  ``PR_SET_PDEATHSIG``), so a killed sweep leaves no orphan writing into a run folder.
* :func:`run_local`: sequentially or several runs at once, each on its own subset of the GPUs
  (``CUDA_VISIBLE_DEVICES``), or CPU processes without CUDA.
* :func:`submit_slurm`: one submitit job per run (``nodes`` × ``gpus_per_node``, one task per node,
  each task starting the project's launcher for its machine rank); a job stopped by its time limit
  or preempted is requeued and resumes from its last checkpoint (``RunTask.checkpoint``).
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from .spec import REPO_ROOT, SweepError
from .state import LOG_FILE, collect_results, log_tail, read_state, update_state

SWEEP_SCRIPT = REPO_ROOT / "eval_scripts" / "sweep.py"


@dataclass(frozen=True)
class RunTask:
    """One run to execute (picklable: submitit ships it to the compute node)."""

    name: str
    run_dir: str
    datasets: tuple[str, ...]
    num_gpus: int = 1  # per machine; CPU: processes
    num_machines: int = 1
    resume: bool = False
    python: str = sys.executable
    cwd: str = field(default_factory=os.getcwd)  # relative paths in the config mean what they meant here

    def command(self, machine_rank: int = 0, dist_url: str = "auto") -> list[str]:
        cmd = [self.python, str(SWEEP_SCRIPT), "_worker", self.run_dir, "--num-gpus", str(self.num_gpus),
               "--num-machines", str(self.num_machines), "--machine-rank", str(machine_rank), "--dist-url", dist_url]
        return cmd + (["--resume"] if self.resume else [])

    def __call__(self, env: dict[str, str] | None = None) -> str:
        """Run here; returns the final status (``finished`` or ``failed``). Under submitit with several
        nodes every node's task calls this with its own machine rank; only rank 0 records the state."""
        machine_rank, dist_url = 0, "auto"
        if self.num_machines > 1:
            machine_rank, dist_url = _submitit_rendezvous()
        main = machine_rank == 0
        start = time.time()
        if main:
            update_state(self.run_dir, status="running", host=os.uname().nodename, started=time.time(),
                         job_id=os.environ.get("SLURM_JOB_ID", ""))
        with open(os.path.join(self.run_dir, LOG_FILE), "a") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.command(machine_rank, dist_url))}\n")
            log.flush()
            code = subprocess.call(self.command(machine_rank, dist_url), stdout=log, stderr=subprocess.STDOUT,
                                   cwd=self.cwd, env=env, preexec_fn=_die_with_parent)
        if not main:
            return "finished" if code == 0 else "failed"
        seconds = round(time.time() - start, 1)
        if code == 0:
            try:
                results = collect_results(self.run_dir, self.datasets)
            except (OSError, ValueError, KeyError) as exc:
                update_state(self.run_dir, status="failed", seconds=seconds, error=f"no results: {exc}")
                return "failed"
            update_state(self.run_dir, status="finished", seconds=seconds, results=results, error="")
            return "finished"
        reason = f"signal {-code}" if code < 0 else f"exit status {code}"
        update_state(self.run_dir, status="failed", seconds=seconds,
                     error=f"worker ended with {reason}; last lines of {os.path.join(self.run_dir, LOG_FILE)}:\n"
                           f"{log_tail(self.run_dir)}")
        return "failed"

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit: on timeout or preemption, requeue this run resuming from its last checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(replace(self, resume=True))


def _die_with_parent() -> None:  # pragma: no cover (runs in the child)
    """Linux: the worker gets SIGKILL when the thread that started it dies (e.g. a killed sweep)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def _submitit_rendezvous() -> tuple[int, str]:
    """Machine rank and ``tcp://`` address of node 0 inside a multi-node submitit job."""
    import submitit

    env = submitit.JobEnvironment()
    digits = "".join(c for c in str(env.job_id).split("_")[0] if c.isdigit()) or "0"
    port = 20000 + int(digits) % 20000
    return env.node, f"tcp://{env.hostnames[0]}:{port}"


# ---------------------------------------------------------------------------- locks
class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<output>/.locks/<run>.lock`` held while a run executes
    here, so two sweep processes never run the same run; released when the holder dies."""

    def __init__(self, output: str, name: str) -> None:
        os.makedirs(os.path.join(output, ".locks"), exist_ok=True)
        self.path = os.path.join(output, ".locks", f"{name}.lock")
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# ---------------------------------------------------------------------------- local backend
def check_backend(backend: str, cluster: str = "slurm") -> None:
    """A backend's prerequisites, checked before the runs are validated (building every row's model
    takes minutes in a large sweep), so a sweep that cannot run stops at once and touches no run folder.

    ``local`` needs nothing here (GPU counts: :func:`gpu_slots`, also before validation); ``slurm``
    needs the submitit package and, for the real cluster (``cluster="slurm"``; not submitit's
    ``local``/``debug`` test executors), the Slurm commands submitit calls: ``sbatch`` and ``srun``.

    Raises:
        SweepError: what is missing and what to do instead.
    """
    if backend != "slurm":
        return
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise SweepError("--backend slurm needs the submitit package (pip install submitit)") from None
    if cluster == "slurm":
        import shutil

        missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
        if missing:
            raise SweepError(f"--backend slurm: no Slurm here ({' and '.join(missing)} not found on PATH). Run the "
                             "sweep on the cluster's login node, or here with --backend local")


def gpu_slots(gpus: Sequence[str], gpus_per_run: int, jobs: int) -> list[tuple[str, ...] | None]:
    """Disjoint GPU subsets for runs executing at once: ``len(gpus) // gpus_per_run`` of them (at
    most ``jobs``); without GPUs, ``jobs`` CPU slots (None).

    Raises:
        ValueError: fewer GPUs than one run needs.
    """
    if not gpus:
        return [None] * max(1, jobs)
    if gpus_per_run > len(gpus):
        raise ValueError(f"a run needs {gpus_per_run} GPUs but only {len(gpus)} are available ({', '.join(gpus)})")
    count = min(max(1, jobs), len(gpus) // gpus_per_run)
    return [tuple(gpus[i * gpus_per_run:(i + 1) * gpus_per_run]) for i in range(count)]


def visible_gpus() -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` entries, else the indices of the GPUs torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def run_local(tasks: Sequence[RunTask], output: str, slots: Sequence[tuple[str, ...] | None],
              report: Callable[[str, RunTask, dict[str, Any] | None], None]) -> dict[str, str]:
    """Execute ``tasks``, ``len(slots)`` at a time, each slot a GPU subset (or the CPU); returns
    {run name: finished | failed | busy}. ``report(event, task, state)`` is called on start and end."""
    pending: "queue.Queue[RunTask]" = queue.Queue()
    for task in tasks:
        pending.put(task)
    outcome: dict[str, str] = {}
    guard = threading.Lock()

    def worker(slot: tuple[str, ...] | None) -> None:
        env = dict(os.environ)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(slot)
        while True:
            try:
                task = pending.get_nowait()
            except queue.Empty:
                return
            lock = RunLock(output, task.name)
            if not lock.acquire():
                with guard:
                    outcome[task.name] = "busy"
                    report("busy", task, None)
                continue
            try:
                with guard:
                    report("start", task, None)
                status = task(env=env)
            finally:
                lock.release()
            with guard:
                outcome[task.name] = status
                report(status, task, read_state(task.run_dir))

    threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in slots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


# ---------------------------------------------------------------------------- Slurm backend (submitit)
SLURM_DEFAULTS = {"time": 4320, "nodes": 1, "gpus_per_node": 1, "cpus_per_task": 10}


def parse_minutes(value: Any) -> int:
    """Slurm time as minutes: ``90``, ``"90"``, ``"1:30:00"`` (H:MM:SS) or ``"2-00:00:00"`` (D-HH:MM:SS).

    Raises:
        ValueError: anything else.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    text = str(value).strip()
    days = 0
    try:
        if "-" in text:
            day_text, text = text.split("-", 1)
            days = int(day_text)
        parts = [int(p) for p in text.split(":")] if text else []
    except ValueError:
        parts = []
    if not parts or len(parts) > 3 or any(p < 0 for p in parts):
        raise ValueError(f"time {value!r}: give minutes, H:MM:SS or D-HH:MM:SS")
    if len(parts) == 1 and not days:
        minutes = parts[0]
    else:
        parts = [0] * (3 - len(parts)) + parts
        minutes = days * 1440 + parts[0] * 60 + parts[1] + (1 if parts[2] else 0)
    if minutes <= 0:
        raise ValueError(f"time {value!r} must be positive")
    return minutes


def slurm_parameters(settings: dict[str, Any], job_name: str) -> dict[str, Any]:
    """submitit ``AutoExecutor.update_parameters`` keyword arguments for one run's job.

    ``settings``: partition, time (minutes or H:MM:SS), nodes, gpus_per_node, cpus_per_task, mem_gb,
    account, qos, constraint, additional ({sbatch option: value}); missing ones take
    :data:`SLURM_DEFAULTS`. One task per node: each starts the launcher for its machine rank.
    """
    s = {**SLURM_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    params: dict[str, Any] = {
        "name": job_name,
        "timeout_min": parse_minutes(s["time"]),
        "nodes": int(s["nodes"]),
        "gpus_per_node": int(s["gpus_per_node"]),
        "tasks_per_node": 1,
        "cpus_per_task": int(s["cpus_per_task"]),
    }
    if s.get("mem_gb"):
        params["mem_gb"] = float(s["mem_gb"])
    for key in ("partition", "account", "qos", "constraint"):
        if s.get(key):
            params[f"slurm_{key}"] = str(s[key])
    if s.get("additional"):
        params["slurm_additional_parameters"] = dict(s["additional"])
    return params


def submit_slurm(tasks: Sequence[RunTask], folder: str, settings: dict[str, Any], sweep_name: str,
                 cluster: str = "slurm") -> list[Any]:
    """Submit one job per task; ``cluster`` ``local``/``debug`` runs them with submitit's local executors
    (testing without Slurm). Records each job id in the run's state; returns the submitit jobs."""
    import submitit

    executor = submitit.AutoExecutor(folder=os.path.join(folder, "%j"), cluster=cluster)
    jobs = []
    for task in tasks:
        executor.update_parameters(**slurm_parameters(settings, f"{sweep_name}/{task.name}"))
        update_state(task.run_dir, status="queued", job_id="", backend=cluster)  # before the job can start
        job = executor.submit(task)
        update_state(task.run_dir, job_id=str(job.job_id))
        jobs.append(job)
    return jobs


def job_finished(job_id: str, folder: str) -> bool | None:
    """Whether a recorded Slurm job has ended (True), is pending/running (False), or cannot be asked (None)."""
    try:
        import submitit

        state = submitit.SlurmJob(folder=os.path.join(folder, "%j"), job_id=job_id).state
    except Exception:  # no sacct here: unknown
        return None
    if state in ("UNKNOWN", "") or state is None:
        return None
    return state not in ("PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                         "COMPLETING", "RESIZING", "SUSPENDED", "STAGE_OUT")
