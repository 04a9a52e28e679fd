"""The sweep file format and its expansion into runs.

A sweep file (YAML, ``configs/sweeps/*.yaml``; format in ``configs/sweeps/README.md``)
names a base config, the overrides every run shares, the rows of an ablation table (named
runs and/or axes ``KEY: [values]`` crossed as a grid or zipped), the seeds, how each run is
scored (a benchmark suite or datasets and a protocol) and the metrics to tabulate. Runs are
the product ``named runs × grid × zip groups × seeds``; each gets a stable, readable name
built from its row name, its axis values and its seed, e.g. ``rotation__fusion=mean__seed1``.

Only the file's structure is checked here; whether the keys and values fit the config is
checked by :mod:`ovrsis.sweep.resolve` before anything runs.
"""
from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ..errors import OVRSISError, close_names

REPO_ROOT = Path(__file__).resolve().parents[2]
MODES = ("train", "eval")
METRICS = ("mIoU", "mACC", "fwIoU", "s-mIoU", "u-mIoU", "h-mIoU", "fg-IoU")  # benchmark_table cells
TOP_LEVEL = ("name", "base", "mode", "overrides", "runs", "grid", "zip", "seeds", "evaluation", "metrics",
             "resources", "slurm")
EVALUATION_FIELDS = ("suite", "datasets", "protocol")
RESOURCE_FIELDS = ("gpus",)
SLURM_FIELDS = ("partition", "time", "nodes", "gpus_per_node", "cpus_per_task", "mem_gb", "account", "qos",
                "constraint", "additional")
SEPARATOR = "__"  # between the parts of a run name
_GENERIC = ("enabled", "name", "weights", "type", "size")  # labelled with their parent: dino.enabled
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class SweepError(OVRSISError):
    """A sweep file that cannot be run; the message names the file and the field or key."""


@dataclass(frozen=True)
class Axis:
    """One swept config key: ``values`` in order, shown as ``label`` in run names and tables."""

    key: str
    values: tuple[Any, ...]
    label: str

    @property
    def numeric(self) -> bool:
        """True when every value is a real number (int/float, not bool): the axis can be plotted."""
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values)


@dataclass(frozen=True)
class Run:
    """One training/evaluation job: a row of the table at one seed."""

    name: str  # stable directory name: row name + SEPARATOR + "seed<k>"
    row: str  # the table row (the name without the seed)
    seed: int
    overrides: tuple[tuple[str, Any], ...]  # sweep-wide, then the named run's, then the axes' values


@dataclass
class Sweep:
    """A parsed sweep file. ``expand()`` gives its runs."""

    path: Path
    name: str
    base: Path
    mode: str = "train"
    overrides: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: list[Axis] = field(default_factory=list)
    zips: list[list[Axis]] = field(default_factory=list)
    seeds: tuple[int, ...] = ()  # () = the base config's SEED
    suite: str | None = None
    datasets: tuple[str, ...] = ()
    protocol: str | None = None
    metrics: tuple[str, ...] = ("mIoU",)
    gpus: int | None = None  # GPUs per run (local) / per node (Slurm); None = 1 with CUDA
    slurm: dict[str, Any] = field(default_factory=dict)

    @property
    def axes(self) -> list[Axis]:
        return [*self.grid, *(axis for group in self.zips for axis in group)]

    def expand(self, default_seed: int = 0) -> list[Run]:
        """Every run, rows in file order (named runs, then grid in row-major order, then zips), each row's seeds
        together. ``default_seed`` is used when the file gives no seeds."""
        named = list(self.runs.items()) or [(None, {})]
        grid = list(itertools.product(*[[(a, v) for v in a.values] for a in self.grid]))
        zips = list(itertools.product(*[list(zip(*[[(a, v) for v in a.values] for a in group]))
                                        for group in self.zips]))
        runs: list[Run] = []
        for (run_name, run_overrides), grid_point, zip_point in itertools.product(named, grid, zips):
            point = [*grid_point, *(pair for group in zip_point for pair in group)]
            parts = ([run_name] if run_name else []) + [f"{a.label}={format_value(v)}" for a, v in point]
            row = SEPARATOR.join(parts) or "base"
            overrides = {**self.overrides, **run_overrides, **{a.key: v for a, v in point}}
            for seed in self.seeds or (default_seed,):
                runs.append(Run(f"{row}{SEPARATOR}seed{seed}", row, seed, tuple(overrides.items())))
        names = [r.name for r in runs]
        clashes = sorted({n for n in names if names.count(n) > 1})
        if clashes:
            raise SweepError(f"{self.path}: different runs get the same name {clashes}; give the axes distinct "
                             "values or labels ({name: ..., values: [...]})")
        return runs

    def add_overrides(self, opts: Sequence[str]) -> None:
        """Command-line ``KEY VALUE`` pairs for every run (e.g. weight paths), decoded as detectron2 does.

        Raises:
            SweepError: an odd count, a malformed key, or a key the sweep already sets or sweeps.
        """
        if len(opts) % 2:
            raise SweepError(f"command-line overrides come in KEY VALUE pairs, got {list(opts)}")
        taken = {*self.overrides, *(a.key for a in self.axes), *(k for r in self.runs.values() for k in r)}
        for key, value in zip(opts[::2], opts[1::2]):
            key = _check_key(key, "command-line override")
            if key in taken or key == "SEED":
                raise SweepError(f"command-line override {key}: the sweep file already sets it (or it is SEED); "
                                 "edit the sweep file instead")
            self.overrides[key] = value

    def labels(self) -> dict[str, str]:
        """Column header of every swept key: the axis label, else the key's last part(s)."""
        out = {a.key: a.label for a in self.axes}
        keys = [k for k in _varying_keys(self.runs, self.axes) if k not in out]
        out.update(_short_labels(keys, taken=set(out.values())))
        return out


def format_value(value: Any) -> str:
    """A value as it appears in a run name: ``0.0002``, ``true``, ``0-1-2-3``, ``mean``; only
    ``[A-Za-z0-9._+-]`` so it can be a folder and a Slurm job name."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = format(value, "g") if math.isfinite(value) else str(value)
    elif isinstance(value, (list, tuple)):
        text = "-".join(format_value(v) for v in value) or "none"
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "empty"


def _varying_keys(runs: Mapping[str, Mapping[str, Any]], axes: Sequence[Axis]) -> list[str]:
    keys: list[str] = []
    for overrides in runs.values():
        keys += [k for k in overrides if k not in keys]
    return keys + [a.key for a in axes if a.key not in keys]


def _short_labels(keys: Sequence[str], taken: set[str] = frozenset()) -> dict[str, str]:
    """``MODEL.COST.ROTATION_FUSION`` → ``rotation_fusion``, ``MODEL.DINO.ENABLED`` → ``dino.enabled``;
    more parts where two keys would clash."""
    labels = {}
    for key in keys:
        parts = key.lower().split(".")
        for n in range(1 + (parts[-1] in _GENERIC and len(parts) > 1), len(parts) + 1):
            label = ".".join(parts[-n:])
            clash = label in taken or any(label == ".".join(o.lower().split(".")[-n:]) for o in keys if o != key)
            if not clash:
                break
        labels[key] = label
        taken = {*taken, label}
    return labels


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Parse and structurally check a sweep file.

    Raises:
        SweepError: unreadable YAML, an unknown field, a field of the wrong type, an empty or
        unequal-length axis, a key given twice, a bad run name; the message names the field.
    """
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path}: a sweep file is a mapping of fields {list(TOP_LEVEL)}")
    where = str(path)
    data = {k: v for k, v in data.items() if not str(k).startswith("x-")}  # x-*: YAML anchors for runs to merge
    _check_fields(data, TOP_LEVEL, where)
    if "base" not in data:
        raise SweepError(f"{where}: 'base' (the config every run starts from) is missing")
    mode = data.get("mode", "train")
    if mode not in MODES:
        raise SweepError(f"{where}: mode must be one of {MODES}, got {mode!r}")
    name = str(data.get("name") or path.stem)
    if not _NAME.match(name):
        raise SweepError(f"{where}: name {name!r} may hold only letters, digits and . _ + -")

    overrides = _overrides(data.get("overrides") or {}, f"{where}: overrides")
    runs_field = data.get("runs") or {}
    if not isinstance(runs_field, dict):
        raise SweepError(f"{where}: runs must map run names to their overrides (KEY: value)")
    runs = {}
    for run_name, run_overrides in runs_field.items():
        run_name = str(run_name)
        if not _NAME.match(run_name) or SEPARATOR in run_name:
            raise SweepError(f"{where}: run name {run_name!r} may hold only letters, digits and . _ + - "
                             f"(not {SEPARATOR!r})")
        runs[run_name] = _overrides(run_overrides or {}, f"{where}: runs.{run_name}")
        for key in runs[run_name]:
            if key in overrides:
                raise SweepError(f"{where}: {key} is in both overrides and runs.{run_name}; keep it in one place")

    grid = _axes(data.get("grid") or {}, f"{where}: grid")
    zip_field = data.get("zip") or []
    zip_groups = [zip_field] if isinstance(zip_field, dict) else zip_field
    if not isinstance(zip_groups, list):
        raise SweepError(f"{where}: zip must be a mapping of axes (or a list of such mappings)")
    zips = []
    for i, group in enumerate(zip_groups):
        axes = _axes(group, f"{where}: zip[{i}]")
        lengths = {a.key: len(a.values) for a in axes}
        if len(set(lengths.values())) > 1:
            raise SweepError(f"{where}: zip[{i}] zips its axes value by value, so they need equal lengths; "
                             f"got {lengths}")
        if axes:
            zips.append(axes)
    all_axes = [*grid, *(a for g in zips for a in g)]
    seen: set[str] = set()
    for axis in all_axes:
        if axis.key in seen or axis.key in overrides or any(axis.key in r for r in runs.values()):
            raise SweepError(f"{where}: {axis.key} is swept and also set elsewhere (overrides, runs or another axis)")
        seen.add(axis.key)
    labels = _short_labels([a.key for a in all_axes if a.label == ""])
    all_axes = [a if a.label else Axis(a.key, a.values, labels[a.key]) for a in all_axes]
    grid, zips = all_axes[:len(grid)], _regroup(all_axes[len(grid):], [len(g) for g in zips])
    axis_labels = [a.label for a in all_axes]
    if len(set(axis_labels)) != len(axis_labels):
        raise SweepError(f"{where}: two axes share a label in {axis_labels}")

    seeds = data.get("seeds")
    if seeds is None:
        seeds = ()
    elif isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise SweepError(f"{where}: seeds: a count must be >= 1, got {seeds}")
        seeds = tuple(range(seeds))
    elif isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                    for s in seeds):
        if len(set(seeds)) != len(seeds):
            raise SweepError(f"{where}: seeds repeat: {seeds}")
        seeds = tuple(seeds)
    else:
        raise SweepError(f"{where}: seeds must be a count (3 = seeds 0, 1, 2) or a list of non-negative integers, "
                         f"got {seeds!r}")
    if any(k == "SEED" for k in [*overrides, *seen, *(k for r in runs.values() for k in r)]):
        raise SweepError(f"{where}: set seeds with the 'seeds' field, not the SEED key")

    evaluation = data.get("evaluation") or {}
    if not isinstance(evaluation, dict):
        raise SweepError(f"{where}: evaluation must be a mapping with {list(EVALUATION_FIELDS)}")
    _check_fields(evaluation, EVALUATION_FIELDS, f"{where}: evaluation")
    if evaluation.get("suite") and evaluation.get("datasets"):
        raise SweepError(f"{where}: evaluation: give a suite or datasets, not both")
    datasets = evaluation.get("datasets") or []
    if isinstance(datasets, str):
        datasets = [datasets]
    if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
        raise SweepError(f"{where}: evaluation.datasets must be a list of registered dataset names")

    metrics = data.get("metrics") or ["mIoU"]
    if isinstance(metrics, str):
        metrics = [metrics]
    for metric in metrics:
        if metric not in METRICS:
            raise SweepError(f"{where}: metrics: unknown metric {metric!r}{close_names(str(metric), METRICS)}; "
                             f"choose from {list(METRICS)}")

    resources = data.get("resources") or {}
    if not isinstance(resources, dict):
        raise SweepError(f"{where}: resources must be a mapping with {list(RESOURCE_FIELDS)}")
    _check_fields(resources, RESOURCE_FIELDS, f"{where}: resources")
    gpus = resources.get("gpus")
    if gpus is not None and (not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1):
        raise SweepError(f"{where}: resources.gpus must be a positive integer, got {gpus!r}")
    slurm = data.get("slurm") or {}
    if not isinstance(slurm, dict):
        raise SweepError(f"{where}: slurm must be a mapping with {list(SLURM_FIELDS)}")
    _check_fields(slurm, SLURM_FIELDS, f"{where}: slurm")

    return Sweep(path=path, name=name, base=_resolve_path(str(data["base"]), path, f"{where}: base"), mode=mode,
                 overrides=overrides, runs=runs, grid=grid, zips=zips, seeds=seeds,
                 suite=evaluation.get("suite"), datasets=tuple(datasets), protocol=evaluation.get("protocol"),
                 metrics=tuple(metrics), gpus=gpus, slurm=dict(slurm))


def _regroup(axes: list[Axis], sizes: list[int]) -> list[list[Axis]]:
    out, start = [], 0
    for size in sizes:
        out.append(axes[start:start + size])
        start += size
    return out


def _check_fields(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise SweepError(f"{where}: unknown field {key!r}{close_names(str(key), allowed)}; fields: {list(allowed)}")


def _check_key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not re.match(r"^[A-Z0-9_]+(\.[A-Z0-9_]+)*$", key):
        raise SweepError(f"{where}: {key!r} is not a config key (dotted upper case, e.g. MODEL.COST.ROTATIONS)")
    return key


def _overrides(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SweepError(f"{where} must map config keys to values (KEY: value)")
    return {_check_key(k, where): v for k, v in data.items()}


def _axes(data: Any, where: str) -> list[Axis]:
    if not isinstance(data, dict):
        raise SweepError(f"{where} must map config keys to value lists (KEY: [v1, v2] or KEY: {{name: ..., values: "
                         "[...]}})")
    axes = []
    for key, spec in data.items():
        key = _check_key(key, where)
        label = ""
        if isinstance(spec, dict):
            _check_fields(spec, ("name", "values"), f"{where}.{key}")
            label = str(spec.get("name") or "")
            if label and (not _NAME.match(label) or SEPARATOR in label or "=" in label):
                raise SweepError(f"{where}.{key}: name {label!r} may hold only letters, digits and . _ + -")
            spec = spec.get("values")
        if not isinstance(spec, list) or not spec:
            raise SweepError(f"{where}.{key}: expected a non-empty list of values, got {spec!r}")
        axes.append(Axis(key, tuple(spec), label))
    return axes


def _resolve_path(value: str, sweep_path: Path, where: str) -> Path:
    """A config path: as given (absolute or from the working directory), else from the repository
    root, else from the sweep file's folder."""
    for candidate in (Path(value), REPO_ROOT / value, sweep_path.parent / value):
        if candidate.is_file():
            return candidate.resolve()
    raise SweepError(f"{where}: config file {value!r} not found (tried the working directory, {REPO_ROOT} and "
                     f"{sweep_path.parent})")
