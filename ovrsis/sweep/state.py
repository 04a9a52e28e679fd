"""A run's folder and its state file: what a rerun of the sweep may skip, resume or must refuse.

``<output>/<run name>/`` holds ``sweep_config.yaml`` (the resolved config the run uses),
``sweep_run.json`` (plan + state, below), ``sweep.log`` (the run's console output), the training
outputs (checkpoints, ``metrics.json``, ``config.yaml``, TensorBoard events) and ``benchmark/``
(the benchmark runner's per-dataset results and table).

``sweep_run.json`` fields: name, row, seed, overrides, identity (hash of the resolved config),
mode, suite/datasets/protocol, evaluation (hash of the evaluation), status (``queued``,
``running``, ``finished``, ``failed``), trained, results ({dataset: {metrics, protocol}}),
error, seconds, job_id, updated.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

STATE_FILE = "sweep_run.json"
CONFIG_FILE = "sweep_config.yaml"
LOG_FILE = "sweep.log"

# What a rerun does with a run, from its stored state (see classify).
NEW, FINISHED, EVALUATE, INTERRUPTED, FAILED, CHANGED, QUEUED = (
    "new", "finished", "evaluate", "interrupted", "failed", "changed", "queued")


def evaluation_key(datasets: tuple[str, ...] | list[str], protocol: str | None) -> str:
    """Hash of what a run is scored on; a finished run scored on other datasets is evaluated again."""
    return hashlib.sha1(json.dumps([list(datasets), protocol]).encode()).hexdigest()


def state_path(run_dir: str) -> str:
    return os.path.join(run_dir, STATE_FILE)


def read_state(run_dir: str) -> dict[str, Any] | None:
    """The stored state, or None when the run never started (or its file is unreadable)."""
    try:
        with open(state_path(run_dir)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_state(run_dir: str, state: dict[str, Any]) -> None:
    """Atomic write (temporary file + rename): a killed sweep never leaves a half-written state."""
    os.makedirs(run_dir, exist_ok=True)
    state = {**state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tmp = f"{state_path(run_dir)}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2, default=str)
    os.replace(tmp, state_path(run_dir))


def update_state(run_dir: str, **fields: Any) -> dict[str, Any]:
    state = {**(read_state(run_dir) or {}), **fields}
    write_state(run_dir, state)
    return state


def classify(stored: dict[str, Any] | None, identity: str, evaluation: str) -> str:
    """What a rerun does with a run whose folder holds ``stored``:

    * ``new``: never started; ``changed``: made with another resolved config (never mixed: the
      sweep stops unless told to discard it);
    * ``finished``: same config and evaluation, skipped; ``evaluate``: trained with the same config
      but scored on other datasets/protocol, only evaluated;
    * ``queued``: submitted to Slurm and not known to have ended;
    * ``interrupted`` / ``failed``: run again, from scratch or, with ``--resume``, from the last checkpoint.
    """
    if stored is None:
        return NEW
    if stored.get("identity") != identity:
        return CHANGED
    status = stored.get("status")
    if status == "finished":
        return FINISHED if stored.get("evaluation") == evaluation else EVALUATE
    if stored.get("trained") and status != "queued":
        return EVALUATE
    if status == "queued":
        return QUEUED
    return FAILED if status == "failed" else INTERRUPTED


def collect_results(run_dir: str, datasets: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per-dataset ``{metrics, protocol}`` from the benchmark runner's ``benchmark/results/<dataset>.json``.

    Raises:
        FileNotFoundError: a dataset has no result file (the evaluation did not finish).
    """
    results = {}
    for name in datasets:
        path = os.path.join(run_dir, "benchmark", "results", f"{name}.json")
        with open(path) as f:
            saved = json.load(f)
        results[name] = {"metrics": saved["metrics"], "protocol": saved["protocol"]}
    return results


def log_tail(run_dir: str, lines: int = 15) -> str:
    """The last lines of the run's log, where a traceback's message is."""
    try:
        with open(os.path.join(run_dir, LOG_FILE), errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return ""
