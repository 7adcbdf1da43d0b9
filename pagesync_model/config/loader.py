"""Load a configuration from a YAML file or a dict, apply ``--set key=value`` overrides, validate
against `SCHEMA` (assembled here from the machine's fields and the registered policies' sections).

Bad input never escapes as anything but `ConfigError`. Its str is one line; errors about the file as
a whole have an empty path (the caller may put the file name, ``err.source``, in front):
    cannot open 'x.yaml': No such file or directory
    could not parse YAML at line 3, column 7: mapping values are not allowed here
    --set foo.bar=1: unknown key 'foo.bar'
    link.bandwidth: cannot read '25 gigs' as a bandwidth: ...

Reading is bounded, so that no input can hang the loader or exhaust memory: a config is a regular
file or a pipe (never a device such as /dev/zero) of at most MAX_CONFIG_BYTES, nested at most
MAX_DEPTH levels, and its aliases may not expand it beyond MAX_EXPANDED nodes and characters (the
"billion laughs": each level of aliases multiplies the size of the document).
"""
from __future__ import annotations

import os
import stat
from typing import Any, Iterable, Mapping, Optional, Union

import yaml

from pagesync_model.config.fields import build_schema
from pagesync_model.config.inherit import resolve_bases
from pagesync_model.config.planner import layer as layer_planner_inputs, resolve as resolve_planner_inputs
from pagesync_model.policies import REGISTRY
from pagesync_model.schema import Config, ConfigError, Field, Schema
from pagesync_model.units import shorten

__all__ = ["SCHEMA", "load_config", "config_from_dict", "parse_yaml", "apply_override", "read_config_text",
           "load_tree", "MAX_CONFIG_BYTES", "MAX_DEPTH", "MAX_EXPANDED"]

# The schema every config is checked against: the machine's fields and every registered policy's.
SCHEMA = build_schema(REGISTRY)

# The presets are a few KiB, nested 7 levels (workload.groups[].phases[].rate); these leave two
# orders of magnitude of room. PyYAML is pure Python: 1 MB of numbers took 27 s to parse on the
# shared 2-core machine, so the size cap is a quarter of that.
MAX_CONFIG_BYTES = 256 << 10
MAX_DEPTH = 32
MAX_EXPANDED = 4 << 20     # nodes plus scalar characters once every alias is expanded
# An integer scalar longer than this stays text: int() of thousands of digits is slow or refused
# (Python's 4300-digit limit), and no field takes more than 20 digits; the schema reports the text.
MAX_INT_CHARS = 100


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one) and bounds the
    document: its nesting depth and its size with every alias expanded are counted as each node is
    composed, before anything is constructed from it."""

    def __init__(self, stream):
        super().__init__(stream)
        self._level = 0
        self._cost: dict[int, tuple[int, int]] = {}   # id(node) -> (expanded size, expanded depth)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            if id(node) not in self._cost:
                raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} refers to a node "
                                                  "that contains it", event.start_mark)
            return node
        mark = self.peek_event().start_mark
        self._level += 1
        if self._level > MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._level -= 1
        if isinstance(node, yaml.ScalarNode):
            size, depth = 1 + len(node.value), 1
        else:
            children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) \
                else node.value
            costs = [self._cost[id(c)] for c in children]
            size = 1 + sum(c[0] for c in costs)
            depth = 1 + max((c[1] for c in costs), default=0)
        if size > MAX_EXPANDED:
            raise yaml.composer.ComposerError(None, None, f"aliases expand the document beyond {MAX_EXPANDED} "
                                              "nodes and characters", mark)
        if depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"aliases nest the document more than {MAX_DEPTH} "
                                              "levels deep", mark)
        self._cost[id(node)] = (size, depth)
        return node

    def construct_yaml_int(self, node):
        if len(node.value) > MAX_INT_CHARS:
            return node.value
        return super().construct_yaml_int(node)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


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
    """Parse YAML ``text`` (safe types only, duplicate keys refused, bounded as the module says);
    ``source`` names it in errors. Raises ConfigError with path '' (the message is 'could not parse
    YAML at line L, column C: <problem>'; the CLI puts the file name in front) and ``source`` set."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError("", f"the YAML is {len(text)} characters, more than the {MAX_CONFIG_BYTES} a "
                              "config may have", source)
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError("", f"could not parse YAML {_yaml_problem(exc)}", source) from None
    except RecursionError:
        # the composer is bounded by MAX_DEPTH; this is the constructor's recursion on some other shape
        raise ConfigError("", "could not parse YAML: nested too deeply", source) from None


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_config_text(path: Union[str, os.PathLike]) -> str:
    """The text of the config file at ``path``: a regular file, or a pipe such as /dev/stdin, of at
    most MAX_CONFIG_BYTES of UTF-8. A device (/dev/zero, /dev/urandom, a terminal), a directory or a
    socket is refused before anything is read, as it may never end. Raises ConfigError (path '')."""
    name = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO nobody writes to must not hang; reads below block again
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError("", f"cannot open '{name}': {exc.strerror or exc}", name) from None
    try:
        info = os.fstat(fd)
        for test, kind in _FILE_KINDS:
            if test(info.st_mode):
                raise ConfigError("", f"cannot open '{name}': it is {kind}, not a config file", name)
        if stat.S_ISREG(info.st_mode) and info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError("", f"the file is {info.st_size} bytes, more than the {MAX_CONFIG_BYTES} a "
                                  "config may have", name)
        os.set_blocking(fd, True)
        chunks, total = [], 0
        while total <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise ConfigError("", f"cannot open '{name}': reading failed: {exc.strerror or exc}", name) from None
    finally:
        os.close(fd)
    if total > MAX_CONFIG_BYTES:
        raise ConfigError("", f"the file is more than the {MAX_CONFIG_BYTES} bytes a config may have", name)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"'{name}' is not UTF-8 text (byte {exc.start}: {exc.reason})", name) from None


def load_config(path: Union[str, os.PathLike], overrides: Iterable[str] = (),
                schema: Optional[Schema] = None, notices: Optional[list] = None) -> Config:
    """Read the YAML file at ``path`` (with its ``base:`` chain, see inherit.py), apply ``overrides``
    ('dotted.key=value' strings, values read as YAML) and return the validated Config. ``schema``
    defaults to the pagesync-sim SCHEMA. Raises ConfigError for an unreadable file, malformed YAML, a
    bad base, or any invalid value. ``notices`` (a list) receives what was adjusted rather than refused
    (a memory size rounded to whole pages), one line each."""
    name = os.fspath(path)
    return config_from_dict(load_tree(name), overrides, source=name, schema=schema, notices=notices)


def load_tree(path: Union[str, os.PathLike]) -> Any:
    """The YAML tree of the config file at ``path`` with its ``base:`` chain merged in: what
    `config_from_dict` takes. Every file of the chain is read with the same bounds
    (`read_config_text`). Raises ConfigError for an unreadable file, malformed YAML or a bad base."""
    name = os.fspath(path)
    own = _read_yaml(name)
    layered = isinstance(own, Mapping) and own.get("base") and isinstance(own.get("workload"), Mapping)
    own_keys = set(own["workload"]) if layered else set()
    tree = resolve_bases(own, name, _read_yaml)
    if layered:
        # the file over its bases: its workload.rate or dirty rate replaces the other inherited one
        layer_planner_inputs(tree, own_keys)
    return tree


def _read_yaml(name: str) -> Any:
    return parse_yaml(read_config_text(name), name)


def config_from_dict(data: Any, overrides: Iterable[str] = (), source: str = "<dict>",
                     schema: Optional[Schema] = None, notices: Optional[list] = None) -> Config:
    """Validate ``data`` (nested mappings as from YAML; None means empty) after applying ``overrides``
    ('dotted.key=value' strings) and return the Config; ``data`` is not modified. ``source`` names
    the origin in errors and in ``cfg.source`` (and the directory ``workload.dirty_rate_file`` is
    relative to). A planner's dirty rate becomes ``workload.rate`` and a memory size is rounded to
    whole pages (config/planner.py), noted in ``notices``. Raises ConfigError for any problem."""
    schema = SCHEMA if schema is None else schema
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        kind = "a list" if isinstance(data, list) else f"'{shorten(data)}'"
        raise ConfigError("", f"the top level must be a mapping of sections such as 'memory:', got {kind}",
                          source)
    tree = _copy_tree(data)
    if isinstance(overrides, str):
        overrides = (overrides,)
    overrides = list(overrides)
    layer_planner_inputs(tree, {t.partition("=")[0].strip()[len("workload."):] for t in overrides
                                if isinstance(t, str) and t.strip().startswith("workload.")})
    try:
        for text in overrides:
            apply_override(tree, text, schema)
    except ConfigError as exc:
        exc.source = source
        raise
    if schema is not SCHEMA:
        return schema.build(tree, source=source)
    try:
        return resolve_planner_inputs(tree, source, lambda t: schema.build(t, source=source), notices)
    except ConfigError as exc:
        if exc.source is None:
            exc.source = source
        raise


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
        value = parse_yaml(value_text)
    except ConfigError as exc:
        raise ConfigError(label, str(exc).replace("could not parse YAML", "could not parse the value as YAML")) \
            from None
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
