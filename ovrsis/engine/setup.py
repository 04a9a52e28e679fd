"""Config assembly and run set-up shared by train_net.py, eval scripts and tools.

* Command-line overrides: every key, including the config-only dataset entries
  (``DATASETS.REGISTER "{my_set: {IMAGE_ROOT: ..., ...}}"`` or
  ``DATASETS.REGISTER.my_set.IMAGE_ROOT imgs``); a misspelt key is an error listing close keys.
* Checks before anything is built: every dataset a run names is registered (close names are
  suggested), path-like keys point to what they should (:func:`ovrsis.errors.check_path`).
* Logs a person can read: a short header on the console (no 445-line config dump, no colour
  codes unless the output is a terminal); the resolved config goes to ``OUTPUT_DIR/config.yaml``
  and the environment report to ``OUTPUT_DIR/env.txt``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Optional, Sequence

import torch
import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog
from detectron2.utils import comm
from detectron2.utils.collect_env import collect_env_info
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from ..config import PATH_KEYS, add_ovrsis_config
from ..data import register_datasets_from_config
from ..errors import ConfigError, DatasetError, SuppressUserErrorTracebacks, check_path, close_names
from ..imports import KEY as KEY_IMPORTS
from ..imports import add_imported_config, config_imports, import_modules, parse_entries
from ..modeling.precision import check_precision, set_tf32

logger = logging.getLogger("ovrsis")

_REGISTER = "DATASETS.REGISTER"


def _all_keys(node: CfgNode, prefix: str = "") -> list:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CfgNode) and full != _REGISTER:
            keys.extend(_all_keys(v, full + "."))
    return keys


def merge_overrides(cfg: CfgNode, opts: Sequence[str]) -> None:
    """``cfg.merge_from_list`` that also takes ``DATASETS.REGISTER`` entries and names close keys.

    ``DATASETS.REGISTER`` takes a YAML mapping of entries (merged into the existing ones);
    ``DATASETS.REGISTER.<name>.<KEY> value`` sets one field of one entry (creating it).
    Raises :class:`ConfigError` for an odd number of items or an unknown key.
    """
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"config overrides come in KEY VALUE pairs; got an odd number of items: {opts}")
    plain = []
    for key, value in zip(opts[0::2], opts[1::2]):
        if key == _REGISTER or key.startswith(_REGISTER + "."):
            parsed = yaml.safe_load(value) if isinstance(value, str) else value
            path = key.split(".")[2:]
            if not path:
                if not isinstance(parsed, dict):
                    raise ConfigError(f"{_REGISTER} on the command line takes a YAML mapping, e.g. "
                                      "\"{my_set: {IMAGE_ROOT: imgs, MASK_ROOT: masks, CLASS_NAMES: [a, b]}}\"")
                update = parsed
            else:
                update = parsed
                for part in reversed(path):
                    update = {part: update}
            cfg.DATASETS.REGISTER.set_new_allowed(True)  # recursively: entries from files gain fields too
            cfg.DATASETS.REGISTER.merge_from_other_cfg(CfgNode(update, new_allowed=True))
        elif key == KEY_IMPORTS:  # a YAML list on the command line, e.g. "[my_fusion.py, my_lab.heads]"
            cfg.IMPORTS = parse_entries(value)
        else:
            plain += [key, value]
    with _config_errors(cfg, "the command line"):
        cfg.merge_from_list(plain)


@contextlib.contextmanager
def _config_errors(cfg: CfgNode, source: str):
    """yacs' KeyError/AssertionError (unknown key) and ValueError (type mismatch) as ConfigError."""
    try:
        yield
    except (KeyError, AssertionError) as err:
        message = str(err).strip("'\"")
        if " was renamed to " in message:  # yacs' renamed key (add_ovrsis_config registers them)
            raise ConfigError(f"{source}: {message}") from None
        if "Non-existent" not in message:
            raise
        bad = message.rsplit(":", 1)[-1].strip()
        raise ConfigError(f"{source}: unknown config key {bad!r}{close_names(bad, _all_keys(cfg))}") from None
    except ValueError as err:
        if "Type mismatch" not in str(err):
            raise
        raise ConfigError(f"{source}: {err}") from None


def check_datasets_registered(cfg: CfgNode) -> None:
    """Every name in DATASETS.TRAIN/TEST is a registered dataset; else an error with close names."""
    registered = DatasetCatalog.list()
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name not in registered:
                raise ConfigError(
                    f"DATASETS.{key}: dataset {name!r} is not registered{close_names(name, registered)}. Register "
                    "it under DATASETS.REGISTER (README, 'Datasets') or list the registered names with "
                    "`python eval_scripts/run_benchmark.py --list`")


def looks_like_path(value: str) -> bool:
    """True when a "file or tag" value (``MODEL.CLIP.PRETRAINED``) names a file rather than an
    open_clip pretrained tag: it exists, holds a path separator, or has a checkpoint extension."""
    return (os.path.exists(os.path.expanduser(value)) or "/" in value or os.sep in value
            or value.endswith((".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".txt", ".json")))


def check_config_paths(cfg: CfgNode) -> None:
    """Every set key of :data:`ovrsis.config.PATH_KEYS` whose file the run reads (its stream or
    option enabled) must point to a file/folder of the right kind (:func:`ovrsis.errors.check_path`: a missing path, a folder given for a file or the
    reverse, an unreadable file is a :class:`ConfigError` naming the key, the path and what it
    should hold). URLs (``://``) are left to their loaders.

    Raises:
        ConfigError: the first key whose path is wrong.
    """
    def value_of(key: str):
        node = cfg
        for part in key.split("."):
            node = node.get(part, None) if hasattr(node, "get") else None
        return node

    for key, (kind, what, used_when) in PATH_KEYS.items():
        value = value_of(key)
        if not value or not isinstance(value, str) or "://" in value or (used_when and not value_of(used_when)):
            continue
        if kind == "file or tag":
            if not looks_like_path(value):
                continue
            kind = "file"
        check_path(value, key, kind, what)


def new_config(config_file: str = "", opts: Sequence[str] = ()) -> CfgNode:
    """Defaults + the file (unfrozen), after importing the modules ``IMPORTS`` names in the file
    (with its ``_BASE_`` files) or in ``opts`` (which wins): a module may add config keys and
    parts the file uses (:mod:`ovrsis.imports`). ``opts`` are not merged here.

    Raises:
        ConfigError: a missing config file, an import that fails, an unknown key in the file.
    """
    if config_file:
        check_path(config_file, "--config-file", "file", "a YAML config")
    imported = import_modules(config_imports(config_file, opts))
    cfg = get_cfg()
    add_ovrsis_config(cfg)
    add_imported_config(cfg, imported)
    if config_file:
        with _config_errors(cfg, config_file):
            cfg.merge_from_file(config_file)
    return cfg


def setup_cfg(config_file: str = "", opts: Sequence[str] = (), args: Optional[object] = None) -> CfgNode:
    """get_cfg + ovrsis keys + file + overrides; registers config-declared datasets and checks
    the datasets and paths the run names. The modules ``IMPORTS`` names are imported first
    (:func:`new_config`) and kept as absolute paths in the returned config.

    With ``args`` (from the argument parser) also sets up the run (:func:`setup_run`): logging,
    the resolved config and environment saved to OUTPUT_DIR, seeding.
    """
    cfg = new_config(config_file, opts)
    merge_overrides(cfg, opts)
    cfg.IMPORTS = import_modules(cfg.IMPORTS)  # already imported: resolved to absolute paths
    check_precision(cfg.MODEL.PRECISION)  # before anything is built (SOLVER.AMP.ENABLED: precision_from_config)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("MODEL.DEVICE is cuda but no GPU is visible; pass MODEL.DEVICE cpu")
    check_config_paths(cfg)
    register_datasets_from_config(cfg)
    check_datasets_registered(cfg)
    cfg.freeze()
    if args is not None:
        setup_run(cfg, args)
    else:  # programmatic use (tests, tools): seed as setup_run would
        seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + comm.get_rank())
    return cfg


def run_preflight(cfg: CfgNode, train: bool = True) -> None:
    """Check the datasets the run reads (DATASETS.TRAIN when ``train``, and DATASETS.TEST)
    before anything is built (:mod:`ovrsis.data.preflight`). Rank 0 scans; every rank raises
    the same :class:`~ovrsis.errors.DatasetError` if it found a problem."""
    if not cfg.DATASETS.PREFLIGHT.ENABLED:
        return
    from ..data.preflight import preflight
    from ..data.raster import RasterSettings

    names = (list(cfg.DATASETS.TRAIN) if train else []) + list(cfg.DATASETS.TEST)
    failure = None
    if comm.is_main_process():
        try:
            preflight(names, RasterSettings.from_config(cfg.INPUT.RASTER), cfg.DATASETS.PREFLIGHT.SAMPLE_ABOVE,
                      cfg.DATASETS.PREFLIGHT.SAMPLE)
        except DatasetError as err:
            failure = str(err)
    if comm.get_world_size() > 1:
        failure = comm.all_gather(failure)[0]
    if failure:
        raise DatasetError(failure)


def setup_run(cfg: CfgNode, args: object) -> None:
    """detectron2's ``default_setup`` without the console dump: loggers (colour only on a
    terminal), a short header, ``config.yaml`` and ``env.txt`` in OUTPUT_DIR, seeding."""
    output_dir = cfg.OUTPUT_DIR
    rank = comm.get_rank()
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    color = sys.stdout.isatty()
    for name, abbrev in (("fvcore", None), ("detectron2", "d2"), ("ovrsis", "ovrsis")):
        for handler in setup_logger(output_dir, distributed_rank=rank, color=color, name=name,
                                    abbrev_name=abbrev).handlers:
            handler.addFilter(SuppressUserErrorTracebacks())
    header = [f"rank {rank} of {comm.get_world_size()}", f"command line: {' '.join(sys.argv)}"]
    if comm.is_main_process() and output_dir:
        with open(os.path.join(output_dir, "config.yaml"), "w") as f:
            f.write(cfg.dump())
        with open(os.path.join(output_dir, "env.txt"), "w") as f:
            f.write(collect_env_info())
        header.append(f"resolved config: {os.path.join(output_dir, 'config.yaml')}; environment: "
                      f"{os.path.join(output_dir, 'env.txt')}")
    header.append(f"model {cfg.MODEL.META_ARCHITECTURE} (CLIP {cfg.MODEL.CLIP.ARCH}), train {list(cfg.DATASETS.TRAIN)}, "
                  f"test {list(cfg.DATASETS.TEST)}, device {cfg.MODEL.DEVICE}, seed {cfg.SEED}")
    logger.info("\n  ".join(header))
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    set_tf32(cfg.MODEL.TF32)
    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
