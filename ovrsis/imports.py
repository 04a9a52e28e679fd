"""``IMPORTS``: the user's own modules, imported before a config is assembled and a model built.

A method of one's own (a cost fusion, a guidance stream, a loss head, config keys) lives in a
file or package outside ``ovrsis/`` and registers itself when imported (``docs/extending.md``).
The config names it::

    IMPORTS: [projects/cost_gate/cost_gate, my_lab.fusions, /abs/path/extra_head.py]

Entries are a ``.py`` file, a package folder (holding ``__init__.py``) or a dotted module name;
relative paths are read from the current directory, like every path key, and dotted names are
searched on ``sys.path`` and then the current directory. Every process that builds a model gets
its config through :func:`ovrsis.engine.setup.setup_cfg` (training ranks, sweep workers, Slurm
jobs, Predictor, tools), which calls :func:`config_imports` on the YAML file and the command
line *before* it merges them: an imported module may add config keys
(:func:`ovrsis.config.register_config`) that the file sets. A config gets the keys of the modules
its own ``IMPORTS`` names (:func:`add_imported_config`), not those of every module imported in the
process, so its dump loads anywhere. The saved ``config.yaml`` holds every
entry as an absolute path (:func:`import_modules`' return value), so a run folder rebuilds its
model from any directory.

A file inside a package (folders with ``__init__.py``) is imported under its package name with the
package's parent on ``sys.path``, so relative imports work and the module is the same object
however it was named; a module already imported from the same file is reused, never re-executed
(registries refuse a second registration).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
import traceback
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import yaml

from .errors import ConfigError, close_names

KEY = "IMPORTS"


def config_imports(config_file: str = "", opts: Sequence[str] = ()) -> List[str]:
    """The ``IMPORTS`` entries a config file (with its ``_BASE_`` chain) and command-line overrides
    name, read before the config is merged: the command line's ``IMPORTS`` replaces the file's.

    Raises:
        ConfigError: ``IMPORTS`` that is not a list of strings.
    """
    entries: Any = []
    source = "the built-in defaults"
    if config_file and os.path.isfile(config_file):  # a missing file is setup_cfg's error to report
        from detectron2.config import CfgNode

        entries = CfgNode.load_yaml_with_base(config_file, allow_unsafe=True).get(KEY, [])
        source = config_file
    opts = list(opts)
    for key, value in zip(opts[0::2], opts[1::2]):
        if key == KEY:
            entries = parse_entries(value)
            source = "the command line"
    return _check_entries(entries, source)


def parse_entries(value: Any) -> Any:
    """A command-line value of ``IMPORTS``: a YAML list (``"[a.py, pkg.mod]"``) or one entry."""
    if not isinstance(value, str):
        return value
    parsed = yaml.safe_load(value) if value.strip() else []
    return [parsed] if isinstance(parsed, str) else parsed


def _check_entries(entries: Any, source: str) -> List[str]:
    if entries is None:
        return []
    if isinstance(entries, str) or not isinstance(entries, (list, tuple)) \
            or not all(isinstance(e, str) and e.strip() for e in entries):
        raise ConfigError(f"{KEY} ({source}): expected a list of module names or .py/package paths, got {entries!r}")
    return [e.strip() for e in entries]


# resolved entry -> (module name, what registered while it was imported: add_*_config functions and streams)
_IMPORTED: Dict[str, Tuple[str, List[Callable], List[Any]]] = {}


def import_modules(entries: Sequence[str], key: str = KEY) -> List[str]:
    """Import every entry (in order); returns them resolved to absolute paths (a ``.py`` file, or a
    package folder) — the form saved into ``config.yaml``.

    Raises:
        ConfigError: one line naming ``key`` and the entry: a path that does not exist, a module
        that cannot be found (close names suggested), or the exception the module raised while
        importing (with the file and line where it was raised).
    """
    from . import config
    from .modeling.registry import STREAM_REGISTRY

    resolved = []
    for entry in _check_entries(list(entries), key):
        before, streams_before = len(config._EXTENSIONS), STREAM_REGISTRY.names()
        module, path = _import_one(entry, key)
        name, owned, streams = _IMPORTED.setdefault(path, (module.__name__, [], []))
        owned += [f for f in config._EXTENSIONS[before:] if f not in owned]
        streams += [build for n, build in STREAM_REGISTRY if n not in streams_before and build not in streams]
        resolved.append(path)
    return resolved


def belongs_to(part: Any, entries: Sequence[str]) -> bool:
    """Whether a registered part serves a config whose ``IMPORTS`` are ``entries``: parts of ovrsis (and of
    ``__main__``) serve every config, a project's only the configs that import it (registered while one
    of ``entries`` was imported, or defined in its module or package). The streams a config builds are
    those of :data:`~ovrsis.modeling.registry.STREAM_REGISTRY` that belong to it: another project's
    stream, imported earlier in the same process, is not asked about keys this config does not have."""
    module = getattr(part, "__module__", "") or ""
    if module in ("__main__", "ovrsis") or module.startswith("ovrsis."):
        return True
    for path in import_modules(entries):
        name, _, streams = _IMPORTED[path]
        if part in streams or module == name or module.startswith(name + "."):
            return True
    return False


def add_imported_config(cfg: Any, resolved: Sequence[str]) -> None:
    """Add the config keys of the modules ``resolved`` (from :func:`import_modules`) names: the
    :func:`ovrsis.config.register_config` functions registered while each was imported, or defined in
    it or its package. Keys of other modules imported in the same process stay out of the config."""
    from . import config

    added: List[Callable] = []
    for path in resolved:
        name, owned, _ = _IMPORTED[path]
        inside = [f for f in config._EXTENSIONS if f.__module__ == name or f.__module__.startswith(name + ".")]
        for add_config in owned + inside:
            if add_config not in added:
                add_config(cfg)
                added.append(add_config)


def _import_one(entry: str, key: str) -> tuple:
    if _looks_like_path(entry):
        path = os.path.abspath(os.path.expanduser(entry))
        if not os.path.exists(path):
            raise ConfigError(f"{key}: {entry!r} does not exist (relative paths are read from the current "
                              f"directory, {os.getcwd()}); expected a .py file, a package folder or a dotted module name")
        if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "__init__.py")):
            raise ConfigError(f"{key}: {entry!r} is a folder without __init__.py; name a .py file or a package folder")
        if os.path.isfile(path) and not path.endswith(".py"):
            raise ConfigError(f"{key}: {entry!r} is not a .py file")
        module = _import_path(path, entry, key)
    else:
        module = _import_name(entry, key)
    return module, _module_path(module, entry, key)


def _looks_like_path(entry: str) -> bool:
    return entry.endswith(".py") or os.sep in entry or "/" in entry or entry.startswith(("~", "."))


def _module_path(module: ModuleType, entry: str, key: str) -> str:
    file = getattr(module, "__file__", None)
    if not file:
        raise ConfigError(f"{key}: {entry!r} is a namespace package (no __init__.py); name one of its modules")
    file = os.path.realpath(file)
    return os.path.dirname(file) if os.path.basename(file) == "__init__.py" else file


def _already_imported(path: str) -> Optional[ModuleType]:
    """The module in ``sys.modules`` loaded from ``path`` (a file, or a package's folder), if any."""
    target = os.path.realpath(os.path.join(path, "__init__.py") if os.path.isdir(path) else path)
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and os.path.realpath(file) == target:
            return module
    return None


def _import_path(path: str, entry: str, key: str) -> ModuleType:
    existing = _already_imported(path)
    if existing is not None:
        return existing
    # the dotted name: up through the folders holding __init__.py; their parent goes on sys.path
    parts = [] if os.path.isdir(path) else [os.path.splitext(os.path.basename(path))[0]]
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        parts.insert(0, os.path.basename(folder))
        folder = os.path.dirname(folder)
    name = ".".join(parts)
    package = len(parts) > 1 or os.path.isdir(path)
    top_file = os.path.join(folder, parts[0], "__init__.py") if package else path
    clash = sys.modules.get(parts[0])
    if clash is not None and os.path.realpath(getattr(clash, "__file__", None) or "") != os.path.realpath(top_file):
        raise ConfigError(f"{key}: {entry!r} would be imported as module {parts[0]!r}, but another module of that "
                          f"name is already imported ({getattr(clash, '__file__', None) or 'built in'}); rename it")
    if folder not in sys.path:
        sys.path.append(folder)
    return _run_import(name, entry, key)


def _import_name(name: str, key: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    found = _find_spec(name)
    if not found and os.getcwd() not in sys.path:  # as `python -m` does
        sys.path.append(os.getcwd())
        found = _find_spec(name)
    if not found:
        parent = name.rpartition(".")[0]
        candidates: List[str] = []
        if parent:
            try:
                package = importlib.import_module(parent)
                candidates = [f"{parent}.{m.name}" for m in pkgutil.iter_modules(getattr(package, "__path__", []))]
            except Exception:  # noqa: BLE001 — only for suggestions
                candidates = []
        else:
            candidates = [m.name for m in pkgutil.iter_modules()]
        raise ConfigError(f"{key}: no module named {name!r}{close_names(name, candidates)} (searched sys.path and the "
                          f"current directory {os.getcwd()}; a file or package folder can be named by its path)")
    return _run_import(name, name, key)


def _find_spec(name: str) -> bool:
    """Whether ``name`` can be found; a parent package that fails to import counts as found (the
    import then reports its error)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
    except Exception:  # noqa: BLE001 — reported by _run_import
        return True


def _run_import(name: str, entry: str, key: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 — anything the user's module raises, as one line
        frames = traceback.extract_tb(exc.__traceback__)
        where = ""
        if isinstance(exc, SyntaxError) and exc.filename:
            where = f" at {exc.filename}:{exc.lineno}"
        else:
            user = [f for f in frames if not f.filename.startswith("<frozen")]
            where = f" at {user[-1].filename}:{user[-1].lineno}" if user else ""
        raise ConfigError(f"{key}: importing {entry!r} failed{where}: {type(exc).__name__}: {exc}") from None
