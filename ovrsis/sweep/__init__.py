"""Ablation sweeps: sweep files (spec), resolved and validated run configs (resolve), run folders and
their state (state), local and Slurm execution (execute, worker) and the results table (table).
The command line is ``eval_scripts/sweep.py``; the file format is in ``configs/sweeps/README.md``."""
from .spec import Axis, Run, Sweep, SweepError, format_value, load_sweep

__all__ = ["Axis", "Run", "Sweep", "SweepError", "format_value", "load_sweep"]
