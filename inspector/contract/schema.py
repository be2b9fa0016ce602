"""Turn a YAML document into typed, frozen config dataclasses, or say precisely what is wrong.

Every config section is a dataclass whose fields carry a default and a description
(``setting(...)``). ``load_yaml`` walks the YAML node tree with the dataclass types in
hand, so every problem is reported with its key path and line number, all at once:

    station.yaml:12: source.rate_fps: expected a number, got 'fast'

Strings and paths may name environment variables: ``${VAR}`` or ``${VAR:-default}``.

Unions keyed by a ``type`` field (frame sources, execution providers) are declared with
``Tagged``: the value of ``type`` selects the dataclass.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from ..errors import ConfigError

MISSING = dataclasses.MISSING
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")


def setting(default: Any = MISSING, help: str = "", factory: Callable[[], Any] | None = None):
    """A documented config field. Without a default the key is required."""
    meta = {"help": help}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if default is MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Tagged:
    """A union of dataclasses chosen by the mapping's ``type`` key."""

    def __init__(self, name: str, registry: Callable[[], dict[str, type]]) -> None:
        self.name = name
        self.registry = registry


class Registry:
    """Plugins keyed by a config ``type``: each config dataclass maps to the class it builds.

    ``@registry.register("folder", FolderSourceConfig)`` on the class; ``registry.types``
    feeds ``Tagged``; ``registry.make(cfg)`` builds the object a config section describes.
    """

    def __init__(self) -> None:
        self.types: dict[str, type] = {}
        self._impls: dict[type, type] = {}

    def register(self, name: str, config_cls: type):
        def wrap(cls):
            self.types[name] = config_cls
            self._impls[config_cls] = cls
            return cls

        return wrap

    def make(self, cfg):
        return self._impls[type(cfg)](cfg)


class _Walker:
    def __init__(self, filename: str, base_dir: Path) -> None:
        self.filename = filename
        self.base_dir = base_dir
        self.errors: list[str] = []
        self._loader = yaml.SafeLoader("")

    def error(self, node: yaml.Node | None, path: str, msg: str) -> None:
        line = f"{self.filename}:{node.start_mark.line + 1}" if node is not None else self.filename
        self.errors.append(f"{line}: {path or '(top level)'}: {msg}")

    def scalar(self, node: yaml.Node) -> Any:
        return self._loader.construct_object(node, deep=True)

    # -- conversion --------------------------------------------------------------------
    def convert(self, tp: Any, node: yaml.Node, path: str) -> Any:
        if isinstance(tp, Tagged):
            return self.tagged(tp, node, path)
        if dataclasses.is_dataclass(tp):
            return self.dataclass(tp, node, path)
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            optional = len(args) < len(get_args(tp))
            if optional and isinstance(node, yaml.ScalarNode) and self.scalar(node) is None:
                return None
            return self.convert(args[0], node, path)
        if origin is Literal:
            value = self.scalar(node) if isinstance(node, yaml.ScalarNode) else None
            allowed = get_args(tp)
            text = str(value)
            for a in allowed:
                if text == str(a):
                    return a
            self.error(node, path, f"expected one of {', '.join(map(str, allowed))}, got {value!r}")
            return allowed[0]
        if origin is list:
            (item,) = get_args(tp)
            if not isinstance(node, yaml.SequenceNode):
                self.error(node, path, f"expected a list, got {self.describe(node)}")
                return []
            return [self.convert(item, n, f"{path}[{i}]") for i, n in enumerate(node.value)]
        if origin is dict:
            _, item = get_args(tp)
            if not isinstance(node, yaml.MappingNode):
                self.error(node, path, f"expected a mapping, got {self.describe(node)}")
                return {}
            out = {}
            for knode, vnode in node.value:
                key = str(self.scalar(knode))
                out[key] = self.convert(item, vnode, f"{path}.{key}")
            return out
        if tp is Any:
            value = self.scalar(node)
            return self.expand(value, node, path) if isinstance(value, str) else value
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, path, f"expected {self.type_name(tp)}, got {self.describe(node)}")
            return None
        value = self.scalar(node)
        if tp is bool:
            if isinstance(value, bool):
                return value
        elif tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if math.isfinite(value):
                    return float(value)
                self.error(node, path, f"must be a finite number, got {node.value!r}")
                return None
        elif tp is str:
            if isinstance(value, str):
                return self.expand(value, node, path)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
        elif tp is Path:
            if isinstance(value, str) and value:
                p = Path(self.expand(value, node, path)).expanduser()
                return p if p.is_absolute() else (self.base_dir / p).resolve()
        else:  # pragma: no cover - a schema bug, not a user error
            raise TypeError(f"unsupported config type {tp!r} at {path}")
        self.error(node, path, f"expected {self.type_name(tp)}, got {value!r}")
        return None

    def expand(self, value: str, node: yaml.Node, path: str) -> str:
        """``${VAR}`` and ``${VAR:-default}`` from the environment (``$$`` is a literal ``$``)."""

        def sub(m: re.Match) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(3)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            self.error(
                node, path, f"environment variable {name} is not set (and no ${{{name}:-default}})"
            )
            return ""

        return _VAR.sub(sub, value) if "$" in value else value

    def tagged(self, tp: Tagged, node: yaml.Node, path: str) -> Any:
        registry = tp.registry()
        if not isinstance(node, yaml.MappingNode):
            self.error(
                node, path, f"expected a mapping with a 'type' key, got {self.describe(node)}"
            )
            return None
        kind = None
        for knode, vnode in node.value:
            if self.scalar(knode) == "type":
                kind = self.scalar(vnode) if isinstance(vnode, yaml.ScalarNode) else None
                if kind not in registry:
                    self.error(
                        vnode,
                        f"{path}.type",
                        f"unknown {tp.name} type {kind!r} (expected one of {', '.join(registry)})",
                    )
                    return None
        if kind is None:
            self.error(node, f"{path}.type", f"missing; choose one of {', '.join(registry)}")
            return None
        return self.dataclass(registry[kind], node, path)

    def dataclass(self, cls: type, node: yaml.Node, path: str) -> Any:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        if isinstance(node, yaml.ScalarNode) and self.scalar(node) is None:
            node = yaml.MappingNode("tag:yaml.org,2002:map", [], node.start_mark, node.end_mark)
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, f"expected a mapping, got {self.describe(node)}")
            return None
        values: dict[str, Any] = {}
        seen: set[str] = set()
        failed: set[str] = set()
        for knode, vnode in node.value:
            key = str(self.scalar(knode))
            sub = f"{path}.{key}" if path else key
            if key in seen:
                self.error(knode, sub, "given twice")
                continue
            seen.add(key)
            if key not in fields:
                self.error(knode, sub, f"unknown key (expected one of {', '.join(fields)})")
                continue
            before = len(self.errors)
            values[key] = self.convert(hints[key], vnode, sub)
            if len(self.errors) > before:  # said already; the section's own checks would trip
                failed.add(key)
        ok = not failed
        for name, f in fields.items():
            if name in values:
                if values[name] is None and not _optional(hints[name]):
                    ok = False
                continue
            if f.default is MISSING and f.default_factory is MISSING:
                self.error(node, f"{path}.{name}" if path else name, "required key is missing")
                ok = False
        if not ok:
            return None
        try:
            obj = cls(**values)
        except ValueError as exc:
            self.error(node, path, str(exc))
            return None
        for key, msg in getattr(obj, "problems", lambda: [])():
            sub = f"{path}.{key}" if path else key
            self.error(_key_node(node, key) or node, sub, msg)
        return obj

    @staticmethod
    def describe(node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        return repr(node.value)

    @staticmethod
    def type_name(tp: Any) -> str:
        return {
            bool: "true or false",
            int: "a whole number",
            float: "a number",
            str: "a string",
            Path: "a path",
        }.get(tp, getattr(tp, "__name__", str(tp)))


def _optional(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _key_node(node: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for knode, vnode in node.value:
            if knode.value == key:
                return vnode
    return None


def load_yaml(cls: type, path: Path) -> Any:
    """Read ``path`` and build ``cls`` from it, raising ConfigError with every problem."""
    path = Path(path)
    node = _compose(path)
    walker = _Walker(str(path), path.resolve().parent)
    obj = walker.convert(cls, node, "")
    if walker.errors:
        raise ConfigError(*walker.errors)
    return obj


def top_level_keys(path: Path) -> list[str] | None:
    """The keys of a YAML file's top-level mapping (None when it is not a mapping), so a
    caller can tell which kind of config it holds; ConfigError when it is not YAML."""
    node = _compose(Path(path))
    if not isinstance(node, yaml.MappingNode):
        return None
    return [str(k.value) for k, _ in node.value]


def _compose(path: Path) -> yaml.Node:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    if node is None:
        raise ConfigError(f"{path}: config file is empty")
    return node


def describe_schema(cls: type, prefix: str = "") -> list[str]:
    """One line per setting: key path, default and description (for docs and ``--help``)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines += describe_schema(tp, key + ".")
            continue
        if f.default is not MISSING:
            default = repr(f.default)
        elif f.default_factory is not MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        lines.append(f"{key} = {default}  # {f.metadata.get('help', '')}")
    return lines
