"""From a sweep's run to its resolved config, and every check that must pass before anything runs.

``resolve_config`` merges the base config and the run's overrides key by key, so a missing key
or a value of the wrong type is reported with the key's name. ``check_config`` then builds the
model once per distinct model config (on the CPU, random initialisation skipped), which runs
every construction-time check of the registered parts (``MODEL.COST.ROTATION_FUSION 'foo'``,
guidance sources without their stream, ...), and checks the datasets, the evaluation suite or
datasets, the protocol and the weight files.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
from typing import Any, Iterator

import torch
from detectron2.config import CfgNode

from ..config import flatten_config
from ..engine.setup import merge_overrides, new_config
from ..imports import import_modules
from ..errors import OVRSISError, close_names
from .spec import Run, Sweep, SweepError

# Keys that do not change the experiment: excluded from a run's identity (the sweep sets OUTPUT_DIR; the
# device follows where the run executes, so a table can be written on a login node without GPUs).
IDENTITY_EXCLUDED = ("OUTPUT_DIR", "MODEL.DEVICE")
_MISSING = object()


def base_config(sweep: Sweep) -> CfgNode:
    """ovrsis defaults + the sweep's base config file (unfrozen), after importing the modules its
    ``IMPORTS`` (or the sweep's ``overrides: {IMPORTS: [...]}``) name: their keys and parts exist
    for every run (:mod:`ovrsis.imports`)."""
    imports = ["IMPORTS", sweep.overrides["IMPORTS"]] if "IMPORTS" in sweep.overrides else []
    try:
        return new_config(str(sweep.base), imports)
    except Exception as exc:  # a broken base config is the sweep's problem too
        raise SweepError(f"{sweep.path}: base config {sweep.base}: {exc}") from None


def base_sets_device(sweep: Sweep) -> bool:
    """Whether the base config file (or one of its ``_BASE_`` files) sets MODEL.DEVICE."""
    return _file_sets_device(str(sweep.base))


@functools.lru_cache(maxsize=None)
def _file_sets_device(path: str) -> bool:
    data = CfgNode.load_yaml_with_base(path, allow_unsafe=True)
    return "DEVICE" in (data.get("MODEL") or {})


def resolve_config(sweep: Sweep, run: Run, output_dir: str, base: CfgNode | None = None,
                   device: str | None = None) -> CfgNode:
    """The run's full config: base config, ``device`` (where the run will execute; ignored when the
    base config file sets MODEL.DEVICE — the ovrsis default is the *submitting* machine's device),
    then its overrides (sweep-wide, named run, axes), its seed and ``OUTPUT_DIR``.

    Raises:
        SweepError: a key that is not in the config (with close matches) or a value whose type does
        not fit the key, naming the run and the key.
    """
    cfg = (base if base is not None else base_config(sweep)).clone()
    cfg.defrost()
    if device is not None and not base_sets_device(sweep):
        cfg.MODEL.DEVICE = device
    for key, value in run.overrides:
        register_entry = key.startswith("DATASETS.REGISTER.")  # config-only dataset fields may be new
        if not register_entry and _get(cfg, key, _MISSING) is _MISSING:
            raise SweepError(f"{sweep.path}: run {run.row}: config key {key} does not exist"
                             f"{close_names(key, list(flatten_config(cfg)))} (keys: ovrsis/config.py)")
        try:
            merge_overrides(cfg, [key, value])
        except (ValueError, TypeError, AssertionError, KeyError) as exc:
            raise SweepError(f"{sweep.path}: run {run.row}: {key}: value {value!r} does not fit the key "
                             f"(current value {_get(cfg, key)!r}): {exc}") from None
    try:  # the run folder rebuilds the model from anywhere: absolute paths
        cfg.IMPORTS = import_modules(cfg.IMPORTS)
    except OVRSISError as exc:
        raise SweepError(f"{sweep.path}: run {run.row}: {exc}") from None
    cfg.SEED = int(run.seed)
    cfg.OUTPUT_DIR = output_dir
    return cfg


def config_identity(cfg: CfgNode) -> str:
    """SHA-1 of the resolved config without :data:`IDENTITY_EXCLUDED`: two runs with the same
    identity compute the same thing; a stored run with another identity is a different experiment."""
    data = yaml_data(cfg)
    for key in IDENTITY_EXCLUDED:
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def yaml_data(cfg: CfgNode) -> dict[str, Any]:
    """The config as plain data (what ``cfg.dump()`` writes)."""
    import yaml

    return yaml.safe_load(cfg.dump())


def check_config(cfg: CfgNode, where: str, built: dict[str, str] | None = None) -> None:
    """Everything about one resolved config that can fail before training, without data or a GPU.

    ``built`` caches model checks by model config (runs differing only in seed, solver or data
    build one model). Raises :class:`SweepError` with ``where`` and the offending key.
    """
    from ..data import register_datasets_from_config
    from ..engine.setup import check_config_paths, check_datasets_registered

    try:
        check_config_paths(cfg)
        register_datasets_from_config(cfg)
        check_datasets_registered(cfg)
    except OVRSISError as exc:
        raise SweepError(f"{where}: {exc}") from None

    model_cfg = cfg.clone()
    model_cfg.defrost()
    model_cfg.MODEL.DEVICE = "cpu"
    # structure only: weights are checked for existence above, loading them is the run's job
    model_cfg.MODEL.CLIP.PRETRAINED = ""
    for key in flatten_config(model_cfg.MODEL, "MODEL."):
        if key.endswith(".WEIGHTS") and key != "MODEL.WEIGHTS":
            model_cfg.merge_from_list([key, ""])
    key = hashlib.sha1((model_cfg.MODEL.dump() + model_cfg.TEST.dump() + str(model_cfg.DATASETS.TRAIN[:1])
                        + str(model_cfg.DATASETS.TEST[:1])).encode()).hexdigest()
    if built is not None and key in built:
        if built[key]:
            raise SweepError(f"{where}: {built[key]}")
        return
    error = ""
    try:
        import logging

        from detectron2.modeling import META_ARCH_REGISTRY

        import ovrsis.modeling  # noqa: F401  (registers the meta-architecture and parts)

        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)  # random-weight warnings of a structure-only build
        try:
            with skipped_initialisation():
                META_ARCH_REGISTRY.get(model_cfg.MODEL.META_ARCHITECTURE)(model_cfg)
        finally:
            logging.disable(previous)
    except Exception as exc:  # any construction-time failure stops the sweep before it starts
        error = f"the model cannot be built: {exc}"
    if built is not None:
        built[key] = error
    if error:
        raise SweepError(f"{where}: {error}")


@contextlib.contextmanager
def skipped_initialisation() -> Iterator[None]:
    """Make ``torch.nn.init`` initialisers and in-place random fills no-ops for a structure-only
    build (3-5x faster for ViT-B/L models); restored on exit. Not thread-safe: validation only."""
    init_names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved_init = {n: getattr(torch.nn.init, n) for n in init_names}
    tensor_names = [n for n in ("normal_", "uniform_", "trunc_normal_") if hasattr(torch.Tensor, n)]
    saved_tensor = {n: getattr(torch.Tensor, n) for n in tensor_names}

    def keep(tensor, *args, **kwargs):
        return tensor

    try:
        for name in init_names:
            setattr(torch.nn.init, name, keep)
        for name in tensor_names:
            setattr(torch.Tensor, name, keep)
        yield
    finally:
        for name, fn in saved_init.items():
            setattr(torch.nn.init, name, fn)
        for name, fn in saved_tensor.items():
            setattr(torch.Tensor, name, fn)


def check_evaluation(sweep: Sweep, cfg: CfgNode) -> None:
    """The sweep's evaluation suite/datasets and protocol exist (datasets after the config's registration)."""
    from detectron2.data import DatasetCatalog

    from ..data.benchmarks import PROTOCOLS, SUITES

    if sweep.suite and sweep.suite not in SUITES:
        raise SweepError(f"{sweep.path}: evaluation.suite: unknown suite {sweep.suite!r}"
                         f"{close_names(sweep.suite, SUITES)}; suites: {sorted(SUITES)}")
    registered = DatasetCatalog.list()
    for name in sweep.datasets:
        if name not in registered:
            raise SweepError(f"{sweep.path}: evaluation.datasets: dataset {name!r} is not registered"
                             f"{close_names(name, registered)}")
    choices = sorted(PROTOCOLS) + ["config"]
    if sweep.protocol is not None and sweep.protocol not in choices:
        raise SweepError(f"{sweep.path}: evaluation.protocol: unknown protocol {sweep.protocol!r}"
                         f"{close_names(str(sweep.protocol), choices)}; protocols: {choices}")
    if not (sweep.suite or sweep.datasets or cfg.DATASETS.TEST):
        raise SweepError(f"{sweep.path}: nothing to evaluate: give evaluation.suite or evaluation.datasets, or "
                         "DATASETS.TEST in the config")
    if sweep.mode == "eval" and not cfg.MODEL.WEIGHTS:
        raise SweepError(f"{sweep.path}: mode eval evaluates given weights: set MODEL.WEIGHTS (in overrides, "
                         "per run or as an axis)")


def evaluation_datasets(sweep: Sweep, cfg: CfgNode) -> tuple[str, ...]:
    """The datasets a run is scored on: the suite's, the sweep's list, else the config's DATASETS.TEST."""
    if sweep.suite:
        from ..data.benchmarks import SUITES

        return tuple(SUITES[sweep.suite].datasets)
    return tuple(sweep.datasets) or tuple(cfg.DATASETS.TEST)


def _get(cfg: CfgNode, key: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            return default
        node = node[part]
    return copy.deepcopy(node)
