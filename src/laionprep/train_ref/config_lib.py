"""Loading trainer configs: a Python file whose ``get_config()`` returns an ``ml_collections.ConfigDict``, plus
``--config.a.b=value`` overrides from the command line (the convention of FLIP, big_vision and the Flax examples).

``load_config("src/laionprep/train_ref/configs/flip_tiny.py", ["--config.batch_size=256"])`` or, for a bundled
config, just its name: ``load_config("flip_tiny")``.  ``path:arg`` passes ``arg`` to ``get_config(arg)``.

Each override is converted to the type of the field it replaces (bool, int, float, str, tuple/list via
``ast.literal_eval``); unknown fields are a :class:`~laionprep.errors.UsageError` naming the closest field.
"""
from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.util
import os
from typing import Any, Iterable, Sequence

import ml_collections

from laionprep.errors import UsageError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
BUNDLED = ("flip_tiny", "flip_b16", "flip_l16", "flip_h14", "clipa_tiny", "clipa_b16", "clipa_l16", "clipa_h14",
           "clippo_tiny", "clippo_b16")


def resolve_config_path(path: str) -> str:
    """A config file path, or the name of a bundled config (``flip_tiny`` ...)."""
    if os.path.isfile(path):
        return path
    name = os.path.basename(path)
    name = name[:-3] if name.endswith(".py") else name
    bundled = os.path.join(CONFIG_DIR, name + ".py")
    if os.path.isfile(bundled):
        return bundled
    raise UsageError(f"config file not found: {path}", where="--config",
                     fix=f"give a path to a config .py file, or one of the bundled configs: {', '.join(BUNDLED)}")


def load_config_file(path: str) -> ml_collections.ConfigDict:
    arg = None
    if ":" in path and not os.path.exists(path):
        path, arg = path.rsplit(":", 1)
    path = resolve_config_path(path)
    mod_name = "laionprep_config_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a broken config file is the user's to fix
        raise UsageError(f"config file {path} failed to load: {type(e).__name__}: {e}", where="--config") from e
    if not hasattr(module, "get_config"):
        raise UsageError(f"config file {path} has no get_config() function", where="--config",
                         fix="define get_config() returning an ml_collections.ConfigDict")
    cfg = module.get_config(arg) if arg is not None else module.get_config()
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise UsageError(f"get_config() in {path} returned {type(cfg).__name__}, not an ml_collections.ConfigDict",
                         where="--config")
    return cfg


def parse_overrides(argv: Sequence[str]) -> list[tuple[str, str]]:
    """``["--config.a=1", "--config.b", "2"]`` -> ``[("a", "1"), ("b", "2")]``.  Anything else is a UsageError."""
    out: list[tuple[str, str]] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--config."):
            raise UsageError(f"unexpected argument {tok!r}", where="command line",
                             fix="config overrides look like --config.model.image.mask_ratio=0.5")
        body = tok[len("--config."):]
        if "=" in body:
            key, value = body.split("=", 1)
        else:
            if i + 1 >= len(argv):
                raise UsageError(f"{tok} has no value", where="command line", fix=f"write {tok}=VALUE")
            key, value = body, argv[i + 1]
            i += 1
        out.append((key, value))
        i += 1
    return out


def _all_keys(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in cfg.items():
        keys.append(prefix + k)
        if isinstance(v, ml_collections.ConfigDict):
            keys.extend(_all_keys(v, prefix + k + "."))
    return keys


_TRUE = {"true", "1", "yes", "on", "t", "y"}
_FALSE = {"false", "0", "no", "off", "f", "n"}


def _convert(key: str, old: Any, value: str) -> Any:
    try:
        if isinstance(old, bool):
            v = value.strip().lower()
            if v in _TRUE:
                return True
            if v in _FALSE:
                return False
            raise ValueError(value)
        if isinstance(old, int):
            f = float(value)
            if f != int(f):
                raise ValueError(value)
            return int(f)
        if isinstance(old, float):
            return float(value)
        if isinstance(old, str):
            return value
        if isinstance(old, (tuple, list)):
            parsed = ast.literal_eval(value)
            if not isinstance(parsed, (tuple, list)):
                parsed = (parsed,)
            return type(old)(parsed)
        # None or anything else: a Python literal if it parses, else the string.
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    except (ValueError, SyntaxError) as e:
        raise UsageError(f"--config.{key}={value}: cannot convert to {type(old).__name__}",
                         where=f"--config.{key}", fix=f"give a {type(old).__name__} (now {old!r})") from e


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Iterable[tuple[str, str]]) -> ml_collections.ConfigDict:
    keys = _all_keys(cfg)
    for key, value in overrides:
        parts = key.split(".")
        node = cfg
        for p in parts[:-1]:
            if not isinstance(node, ml_collections.ConfigDict) or p not in node:
                node = None
                break
            node = node[p]
        if node is None or not isinstance(node, ml_collections.ConfigDict) or parts[-1] not in node:
            close = difflib.get_close_matches(key, keys, n=3)
            raise UsageError(f"unknown config field {key!r}", where=f"--config.{key}",
                             fix=("did you mean " + " or ".join(f"--config.{c}" for c in close)) if close
                             else "see the config file for the fields it defines")
        old = node[parts[-1]]
        if isinstance(old, ml_collections.ConfigDict):
            raise UsageError(f"--config.{key} is a group of fields, not a value", where=f"--config.{key}",
                             fix=f"set one of its fields, e.g. --config.{key}.{next(iter(old.keys()), 'x')}=...")
        new = _convert(key, old, value)
        with node.ignore_type():
            node[parts[-1]] = new
    return cfg


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Load a config file (or bundled config name) and apply ``--config.x=y`` overrides."""
    cfg = load_config_file(path)
    apply_overrides(cfg, parse_overrides(overrides))
    return cfg
