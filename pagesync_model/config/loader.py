"""Load a configuration from a YAML file or a dict, apply ``--set key=value`` overrides, validate
against `SCHEMA` (assembled here from the machine's fields and the registered policies' sections).

Bad input never escapes as anything but `ConfigError`. Its str is one line; errors about the file as
a whole have an empty path (the caller may put the file name, ``err.source``, in front):
    cannot open 'x.yaml': No such file or directory
    could not parse YAML at line 3, column 7: mapping values are not allowed here
    --set foo.bar=1: unknown key 'foo.bar'
    link.bandwidth: cannot read '25 gigs' as a bandwidth: ...
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Optional, Union

import yaml

from pagesync_model.config.fields import build_schema
from pagesync_model.policies import REGISTRY
from pagesync_model.schema import Config, ConfigError, Field, Schema

__all__ = ["SCHEMA", "load_config", "config_from_dict", "parse_yaml", "apply_override"]

# The schema every config is checked against: the machine's fields and every registered policy's.
SCHEMA = build_schema(REGISTRY)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:
            continue  # unhashable key: construct_mapping below reports it
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first given at line {first + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return problem


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML ``text`` (safe types only, duplicate keys refused); ``source`` names it in errors.
    Raises ConfigError with path '' (the message is 'could not parse YAML at line L, column C:
    <problem>'; the CLI puts the file name in front) and ``source`` set."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError("", f"could not parse YAML {_yaml_problem(exc)}", source) from None


def load_config(path: Union[str, os.PathLike], overrides: Iterable[str] = (),
                schema: Optional[Schema] = None) -> Config:
    """Read the YAML file at ``path``, apply ``overrides`` ('dotted.key=value' strings, values read as
    YAML) and return the validated Config. ``schema`` defaults to the pagesync-sim SCHEMA.
    Raises ConfigError for an unreadable file, malformed YAML, or any invalid value."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError("", f"cannot open '{name}': {reason}", name) from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"'{name}' is not UTF-8 text (byte {exc.start}: {exc.reason})", name) from None
    data = parse_yaml(text, name)
    return config_from_dict(data, overrides, source=name, schema=schema)


def config_from_dict(data: Any, overrides: Iterable[str] = (), source: str = "<dict>",
                     schema: Optional[Schema] = None) -> Config:
    """Validate ``data`` (nested mappings as from YAML; None means empty) after applying ``overrides``
    ('dotted.key=value' strings) and return the Config; ``data`` is not modified. ``source`` names
    the origin in errors and in ``cfg.source``. Raises ConfigError for any problem."""
    schema = SCHEMA if schema is None else schema
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        kind = "a list" if isinstance(data, list) else f"'{data}'"
        raise ConfigError("", f"the top level must be a mapping of sections such as 'memory:', got {kind}",
                          source)
    tree = _copy_tree(data)
    if isinstance(overrides, str):
        overrides = (overrides,)
    try:
        for text in overrides:
            apply_override(tree, text, schema)
    except ConfigError as exc:
        exc.source = source
        raise
    return schema.build(tree, source=source)


def apply_override(tree: dict, text: str, schema: Optional[Schema] = None) -> None:
    """Set one 'dotted.key=value' override in the nested dict ``tree`` (value read as YAML).
    Raises ConfigError('--set <text>', ...) for a malformed override or an unknown key."""
    schema = SCHEMA if schema is None else schema
    label = f"--set {text}"
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(label, "expected key=value, such as link.bandwidth=10Gbit/s")
    key, _, value_text = text.partition("=")
    key = key.strip()
    node = schema.lookup(key) if key else None
    if not isinstance(node, Field):
        if node is not None:
            raise ConfigError(label, f"'{key}' is a section; set one of its fields, such as "
                                     f"'{key}.{next(iter(node.members), '...')}'")
        close = schema.suggest(key)
        hint = f" (did you mean '{close}'?)" if close else ""
        raise ConfigError(label, f"unknown key '{key}'{hint}")
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError as exc:
        raise ConfigError(label, f"could not parse the value as YAML {_yaml_problem(exc)}") from None
    parts = key.split(".")
    here = tree
    for depth, part in enumerate(parts[:-1]):
        nxt = here.get(part)
        if nxt is None:
            nxt = here[part] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(".".join(parts[:depth + 1]), f"expected a mapping, got '{nxt}'")
        here = nxt
    here[parts[-1]] = value


def _copy_tree(data: Mapping) -> dict:
    """Copy the nested mappings (not the leaf values) so overrides never touch the caller's data."""
    return {k: _copy_tree(v) if isinstance(v, Mapping) else v for k, v in data.items()}
