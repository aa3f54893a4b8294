"""Typed configs for entry points: YAML files and command-line flags into dataclasses.

    @dataclass
    class PretrainConfig:
        steps: int = doc(1000, "optimizer steps")

    add_config_flags(parser, PretrainConfig)        # --steps N, help from the field doc
    config = load_config(PretrainConfig, "configs/tiny.yaml", section="pretrain", flags=args)

Every field carries a one-line help (`doc`), so `--help` documents every option. Unknown
keys in a file are an error that lists the allowed ones; nested dataclasses are YAML
mappings and dotted flags (`--rewards.math.steps 0.2`), which change only the fields they
name of the parent's default (TrainConfig's optim, not OptimConfig's class defaults).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from dultra.errors import ConfigError, yaml_problem

# Whether a value is of a setting's kind (a bool is no number here): strategies, DecodeConfig, LLaDAConfig.
IS_KIND = {"bool": lambda v: isinstance(v, bool), "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
           "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
           "str": lambda v: isinstance(v, str)}


def doc(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a one-line help text."""
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(type, optional) for `T` or `T | None`."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _leaves(config: Any, prefix: str = ""):
    """(dotted name, field, type hint, default value) of every non-dataclass field of an
    instance built with its defaults, depth first (so nested factories show real defaults)."""
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hints[f.name], value


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _flag_type(base: Any):
    if base is bool:
        return _parse_bool, "BOOL"
    if typing.get_origin(base) is tuple:
        return _parse_pair, "X,Y"
    return {int: (int, "N"), float: (float, "X")}.get(base, (str, "VALUE"))


def _parse_pair(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, such as 0.9,0.99; got {text!r}") from None


EMPTY = object()  # a flag's `none`: the field set to None (an absent flag keeps the file's value)


def _or_none(kind):
    def parse(text: str):
        return EMPTY if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names the type in its errors
    return parse


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--name` flag per field (dotted for nested ones); unset flags keep file values, and
    `none` unsets an optional one (`--teacher none`)."""
    group = parser.add_argument_group(f"{cls.__name__} (also settable in the YAML file)")
    for name, f, hint, default in _leaves(cls()):
        base, optional = _base_type(hint)
        kind, meta = _flag_type(base)
        if optional:
            kind, meta = _or_none(kind), f"{meta}|none"
        text = f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%")  # argparse formats %
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"cfg:{name}", type=kind, default=None,
                           metavar=meta, help=text)


def _field_default(f: dataclasses.Field) -> Any:
    """The value a field takes when not given (None when it has no default)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _build(cls: type, values: dict[str, Any], where: str, defaults: Any = None) -> Any:
    """`cls` with `values` set; the other fields keep `defaults`' values (an instance of cls)
    or, without it, the class defaults."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(values) - set(fields)))
    if unknown:
        quote = "" if all(isinstance(k, str) for k in values) else " (YAML reads an unquoted on, off, yes, no or " \
            "number as a value, not a name)"
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where or 'the settings'}{quote}; "
                          f"allowed: {', '.join(sorted(fields))}")
    kwargs = {}
    for key, value in values.items():
        base, optional = _base_type(hints[key])
        if dataclasses.is_dataclass(base):
            if value is None and not optional:  # `optim:` with every setting commented out
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"{_join(where, key)} must be a mapping")
            # A partial mapping changes the parent's default, not the class's: TrainConfig's
            # optim is OptimConfig(lr=5e-6, weight_decay=0.1), so `optim.grad_clip` alone keeps those.
            inner = getattr(defaults, key) if defaults is not None else _field_default(fields[key])
            value = _build(base, value, _join(where, key), inner if isinstance(inner, base) else None)
        elif value is None and not optional:
            raise ConfigError(f"{_join(where, key)} may not be empty")
        elif value is not None:
            value = _coerce(base, value, _join(where, key))
        kwargs[key] = value
    try:
        return dataclasses.replace(defaults, **kwargs) if defaults is not None else cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from None


def _join(where: str, key: str) -> str:
    """A setting's name in messages: `optim.lr` (given by flags), `tiny.yaml:train.optim.lr` (in a file)."""
    return f"{where}.{key}" if where else key


def _coerce(base: Any, value: Any, where: str) -> Any:
    if typing.get_origin(base) is tuple:
        kinds = typing.get_args(base)
        if not isinstance(value, list | tuple) or len(value) != len(kinds):
            raise ConfigError(f"{where} must be a list of {len(kinds)} numbers, got {value!r}")
        return tuple(_coerce(kind, item, where) for kind, item in zip(kinds, value))
    if base is float and not isinstance(value, bool):
        with contextlib.suppress(TypeError, ValueError):
            return float(value)  # also YAML's 1e-4, which it reads as a string (no dot)
    elif base is str and isinstance(value, str) and not value.strip():
        # An unset shell variable (`--output-dir "$OUT"`) would run with the current directory or a default.
        raise ConfigError(f"{where} is empty: give a value, or leave the setting out")
    elif isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where} must be {base.__name__}, got {value!r}")


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for depth, p in enumerate(parents, 1):
        if tree.get(p) is None:  # absent, or a section left empty (`optim:` with its settings commented out)
            tree[p] = {}
        tree = tree[p]
        if not isinstance(tree, dict):
            raise ConfigError(f"{'.'.join(parents[:depth])} must be a mapping, got {tree!r}")
    tree[leaf] = value


def load_config(
    cls: type, path: str | Path | None = None, section: str | None = None, flags: argparse.Namespace | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Build `cls` from a YAML file (optionally one top-level `section` of it), then flags,
    then `overrides` ({"optim.lr": 1e-4, ...}, dotted names like the flags)."""
    values: dict[str, Any] = {}
    where = ""  # flags only: a setting is named as its flag is
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} {'is a directory' if path.is_dir() else 'does not exist'}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path} is not valid YAML: {yaml_problem(err)}") from None
        if section is not None:
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path} must be a mapping with a {section!r} section")
            if section not in loaded:  # a typo'd section would silently run every default
                keys = ", ".join(map(str, loaded)) or "none"
                raise ConfigError(f"{path} has no {section!r} section (its top-level keys: {keys})")
            loaded = loaded[section] or {}
            where = f"{path}:{section}"
        if not isinstance(loaded, dict):
            raise ConfigError(f"{where} must be a mapping")
        values = loaded
    for key, value in vars(flags or argparse.Namespace()).items():
        if key.startswith("cfg:") and value is not None:
            _set_dotted(values, key[4:], None if value is EMPTY else value)
    for key, value in (overrides or {}).items():
        _set_dotted(values, key, value)
    return _build(cls, values, where)


def to_flags(overrides: dict[str, Any]) -> list[str]:
    """{"optim.lr": 1e-4, "resume": True} -> ["--optim.lr", "0.0001", "--resume", "true"]."""
    out = []
    for key, value in overrides.items():
        text = ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value).lower() \
            if isinstance(value, bool) else str(value)
        out += [f"--{key.replace('_', '-')}", text]
    return out


def changed_settings(saved: dict[str, Any], current: dict[str, Any], ignore: tuple[str, ...] = (),
                     prefix: str = "") -> list[str]:
    """Dotted names of the settings (config_dict form, top-level ones in `ignore` aside) whose
    values differ. A setting only one side has is skipped: new in this version, it was its default."""
    changed = []
    for key in sorted(saved.keys() & current.keys()):
        old, new = saved[key], current[key]
        if not prefix and key in ignore:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            changed += changed_settings(old, new, prefix=f"{prefix}{key}.")
        elif old != new and not (isinstance(old, list | tuple) and isinstance(new, list | tuple)
                                 and list(old) == list(new)):  # JSON turns tuples into lists
            changed.append(prefix + key)
    return changed


def config_dict(config: Any) -> dict[str, Any]:
    """A config as plain data (for logs and checkpoints)."""
    return dataclasses.asdict(config)
