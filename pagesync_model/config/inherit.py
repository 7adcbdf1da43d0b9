"""Preset inheritance: a config file may start from another (``base: qemu-default.yaml``) and state only
what differs.

``base`` names a file relative to the file that gives it. That file may have a base of its own; the
chain is read first and each file is merged over the one it names: mappings merge key by key, and any
other value (a scalar, a list, a mapping over a non-mapping) replaces the base's whole value, so a list
is never spliced. A chain that comes back to a file already in it is refused, naming the chain.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from pagesync_model.schema import ConfigError

__all__ = ["BASE_KEY", "merge", "resolve_bases"]

BASE_KEY = "base"


def merge(base: Mapping, over: Mapping) -> dict:
    """``over`` merged into ``base``: mappings key by key, everything else replaced by ``over``'s value.
    Neither argument is modified; mappings in the result are new dicts."""
    out = {k: merge(v, {}) if isinstance(v, Mapping) else v for k, v in base.items()}
    for key, value in over.items():
        if isinstance(value, Mapping):
            value = merge(out[key] if isinstance(out.get(key), Mapping) else {}, value)
        out[key] = value
    return out


def resolve_bases(data: Any, name: str, read: Callable[[str], Any]) -> Any:
    """The tree of file ``name`` (already parsed as ``data``) with its ``base`` chain merged in and the
    ``base`` keys gone. ``read(path)`` parses another config file and raises ConfigError. Raises
    ConfigError at path 'base' for a base that is not a file name, cannot be read, is not a mapping, or
    closes a cycle; the message names each file of the chain past the first."""
    chain = [(name, data)]
    while isinstance(data, Mapping) and BASE_KEY in data:
        ref = data[BASE_KEY]
        via = "".join(f"{n}: base: " for n, _ in chain[1:])
        if not isinstance(ref, str) or not ref.strip():
            raise ConfigError(BASE_KEY, f"{via}expected the name of a config file, relative to this one, "
                                        f"got '{ref}'", name)
        target = os.path.normpath(os.path.join(os.path.dirname(chain[-1][0]), ref))
        if os.path.realpath(target) in {os.path.realpath(n) for n, _ in chain}:
            names = " -> ".join([n for n, _ in chain] + [target])
            raise ConfigError(BASE_KEY, f"{via}cycle: {names}", name)
        try:
            data = read(target)
        except ConfigError as exc:
            # read() names the file itself when it cannot open it; otherwise say which file it was
            where = "" if exc.message.startswith("cannot open") else f"{target}: "
            raise ConfigError(BASE_KEY, f"{via}{where}{exc}", name) from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(BASE_KEY, f"{via}{target}: the top level must be a mapping of sections, "
                                        f"got '{data}'", name)
        chain.append((target, data))
    if len(chain) == 1:
        return data
    tree = chain[-1][1]
    for _, layer in reversed(chain[:-1]):
        tree = merge(tree, layer)
    return {k: v for k, v in tree.items() if k != BASE_KEY}
