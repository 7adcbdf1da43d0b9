"""Declarative typed configuration schema, in the manner of gem5 params and Ciw.

A `Schema` is a tree of `Section`s whose leaves are `Field`s. A field has a `Kind` (size, bandwidth,
duration, frequency, rate, int, float, fraction, choice, bool, str), a default or `REQUIRED`,
bounds (gt/ge/lt/le), optional choices and an extra check, and a one-line doc. Nothing here knows
about pagesync: ``config/fields.py`` declares the machine's fields and each policy declares its own
sections (``policies/base.py``); ``pagesync_model.config`` assembles them into one schema. This
module imports nothing of the package but ``units``, so every layer may declare fields with it.

`Schema.build(data)` runs the pipeline
    reject unknown keys -> fill defaults -> validate each field (type, unit, bounds)
    -> resolve durations given in cycles with the clock field -> cross-field checks -> build
and returns an immutable `Config` (attribute access: ``cfg.memory.size``). Every problem is a
`ConfigError(path, message)` whose str is ``"<dotted.path>: <message>"``.

A `SectionList` is a field whose value is a list of sections (``workload.groups``): each item is
validated like a section, with paths such as ``workload.groups[1].rate``; a key an item leaves out
takes the enclosing section's value of the same name when ``inherit`` is set, else its own default.
The built value is a tuple of `ConfigSection`s, and ``to_dict`` writes the filled items back.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from pagesync_model import units
from pagesync_model.units import Cycles

__all__ = [
    "REQUIRED",
    "ConfigError",
    "Kind",
    "Field",
    "Section",
    "SectionList",
    "Schema",
    "ConfigSection",
    "Config",
    "SIZE",
    "BANDWIDTH",
    "DURATION",
    "FREQUENCY",
    "RATE",
    "INT",
    "FLOAT",
    "FRACTION",
    "CHOICE",
    "BOOL",
    "STR",
]


class _Required:
    """Sentinel default of a field the user must give."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REQUIRED"

    def __reduce__(self):
        return (_Required, ())


REQUIRED: Any = _Required()


class ConfigError(ValueError):
    """A configuration problem at ``path``: a dotted key such as 'link.bandwidth', an override such as
    '--set foo.bar=1', or '' for a problem with the file as a whole (unreadable, not YAML, not a
    mapping), whose message the caller may prefix with the file name.

    ``str(err)`` is ``"<path>: <message>"`` (just the message when path is empty). ``source`` is the
    file or '<dict>' the config came from, when known; it is not part of the str.
    """

    def __init__(self, path: str, message: str, source: Optional[str] = None):
        path, message = _one_line(path), _one_line(message)
        super().__init__(path, message)
        self.path = path
        self.message = message
        self.source = source

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def _one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped, so that an error stays one line
    whatever value it quotes."""
    if not isinstance(text, str) or text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _quote(raw: object) -> str:
    return f"'{units.shorten(raw)}'"


def _join(prefix: str, name: object) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _suggest(word: object, candidates: Sequence[str]) -> Optional[str]:
    if not isinstance(word, str):
        return None
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


# ---------------------------------------------------------------------------------------------
# kinds

@dataclass(frozen=True, eq=False)
class Kind:
    """How a raw YAML value becomes a typed one.

    ``name`` appears in docs ('size'); ``parse(raw)`` returns the typed value or raises ValueError
    (UnitError included) with a message that quotes the raw value, `units.OutOfRange` for a number
    too large for any field; ``unit`` names the base unit of the result for docs ('bytes'), '' when
    dimensionless; ``show`` writes a bound in messages and docs as a user would ('4PiB').
    """

    name: str
    parse: Callable[[Any], Any]
    unit: str = ""
    show: Optional[Callable[[float], str]] = None


def _huge(raw: Any, sign: float) -> units.OutOfRange:
    return units.OutOfRange(f"{_quote(raw)} is out of range", -1 if sign < 0 else 1)


def _exact(raw: Any) -> Optional[Fraction]:
    """The exact value of a YAML number or numeric text (bounded in size), None if it is neither.
    Raises OutOfRange for a magnitude no field allows (an int of thousands of digits, 1e999, .inf)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        if abs(raw) >= 10**units.MAX_MAGNITUDE:
            raise _huge(raw, raw)
        return Fraction(raw)
    if isinstance(raw, float):
        if math.isnan(raw):
            return None
        if math.isinf(raw) or abs(raw) >= 10.0**units.MAX_MAGNITUDE:
            raise _huge(raw, raw)
        return Fraction(raw)
    if isinstance(raw, str):
        text = raw.strip().replace("_", "")
        if text.lower().lstrip("+-.") in ("inf", "infinity"):
            raise _huge(raw, -1 if text.startswith("-") else 1)
        try:
            return units.read_number(text)
        except units.OutOfRange:
            raise _huge(raw, -1 if text.startswith("-") else 1) from None
        except ValueError:
            return None
    return None


def _parse_int(raw: Any) -> int:
    value = _exact(raw)
    if value is None or value.denominator != 1:
        raise ValueError(f"cannot read {_quote(raw)} as a whole number")
    return int(value)


def _parse_float(raw: Any) -> float:
    value = _exact(raw)
    if value is None:
        raise ValueError(f"cannot read {_quote(raw)} as a number")
    return float(value)


def _parse_fraction(raw: Any) -> float:
    if isinstance(raw, str) and raw.strip().endswith("%"):
        try:
            return _parse_float(raw.strip()[:-1]) / 100.0
        except ValueError:
            raise ValueError(f"cannot read {_quote(raw)} as a fraction") from None
    try:
        return _parse_float(raw)
    except ValueError:
        raise ValueError(f"cannot read {_quote(raw)} as a fraction (a number such as 0.1 or 10%)") from None


_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise ValueError(f"cannot read {_quote(raw)} as true or false")


def _parse_str(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    raise ValueError(f"cannot read {_quote(raw)} as text")


SIZE = Kind("size", units.parse_size, "bytes", units.format_bytes)
BANDWIDTH = Kind("bandwidth", units.parse_bandwidth, "bytes/s", units.format_bandwidth)
DURATION = Kind("duration", units.parse_duration, "seconds", units.format_duration)
FREQUENCY = Kind("frequency", units.parse_frequency, "Hz", units.format_frequency)
RATE = Kind("rate", units.parse_rate, "per second", units.format_rate)
INT = Kind("int", _parse_int)
FLOAT = Kind("float", _parse_float)
FRACTION = Kind("fraction", _parse_fraction)
CHOICE = Kind("choice", _parse_str)
BOOL = Kind("bool", _parse_bool)
STR = Kind("str", _parse_str)


# ---------------------------------------------------------------------------------------------
# fields and sections

@dataclass(frozen=True, eq=False)
class Field:
    """One typed parameter.

    kind     -- a `Kind` (SIZE, DURATION, INT, CHOICE, ...)
    default  -- the value used when the key is absent, written as a user would write it ("4KiB"), or
                REQUIRED
    doc      -- a one-line description
    gt, ge, lt, le -- bounds on the parsed value (bytes, seconds, ...), each reported as
                'must be > 0, got '<raw>''
    choices  -- for CHOICE: the allowed strings; the list is kept by reference so other modules can
                extend it (see `Schema.add_choice`)
    check    -- extra test of the parsed value returning an error message or None; the error is
                reported as '<message>, got '<raw>''
    check_doc -- how ``check`` reads in the schema table ('power of two >= 4KiB')
    """

    kind: Kind
    default: Any = REQUIRED
    doc: str = ""
    gt: Optional[float] = None
    ge: Optional[float] = None
    lt: Optional[float] = None
    le: Optional[float] = None
    choices: Optional[list] = None
    check: Optional[Callable[[Any], Optional[str]]] = None
    check_doc: str = ""

    def __post_init__(self) -> None:
        if (self.kind is CHOICE) != (self.choices is not None):
            raise TypeError("a CHOICE field needs choices, and only a CHOICE field may have them")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def _bounds(self) -> list[tuple[str, float]]:
        return [(op, b) for op, b in ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
                if b is not None]

    def convert(self, raw: Any, path: str) -> Any:
        """Parse and validate one raw value; returns the typed value (a `Cycles` marker for a duration
        in cycles, checked for sign only) or raises ConfigError at ``path``."""
        if self.choices is not None:
            if isinstance(raw, (int, float)) and not isinstance(raw, bool) and str(raw) in self.choices:
                return str(raw)     # a choice that reads as a number, as YAML reads `rules: 1.6`
            if not isinstance(raw, str) or raw not in self.choices:
                options = ", ".join(str(c) for c in self.choices)
                close = _suggest(raw, [str(c) for c in self.choices])
                hint = f"did you mean '{close}'? " if close else ""
                raise ConfigError(path, f"unknown choice {_quote(raw)} ({hint}expected one of: {options})")
            return raw
        try:
            value = self.kind.parse(raw)
        except units.OutOfRange as exc:
            # too large to compute with: report it against the bound it breaks, as for 1e5 CPUs
            for op, bound in self._bounds():
                if (op in ("<", "<=")) == (exc.sign > 0):
                    raise ConfigError(path, f"must be {op} {self.show(bound)}, got {_quote(raw)}") from None
            raise ConfigError(path, str(exc)) from None
        except ValueError as exc:
            raise ConfigError(path, str(exc)) from None
        self.validate(value, raw, path)
        return value

    def show(self, bound: float) -> str:
        """A bound as a user would write it: '0', '4PiB', '1ms', '8192'."""
        if bound == 0 or self.kind.show is None:
            return _plain(bound)
        return self.kind.show(bound)

    def validate(self, value: Any, raw: Any, path: str) -> None:
        """Hold a parsed value to the bounds and the extra check (a `Cycles` marker only to its sign;
        `Schema` validates it again once converted to seconds). Raises ConfigError at ``path``."""
        self.check_bounds(value, raw, path)
        if self.check is not None and not isinstance(value, Cycles):
            message = self.check(value)
            if message:
                raise ConfigError(path, f"{message}, got {_quote(raw)}")

    def check_bounds(self, value: Any, raw: Any, path: str) -> None:
        """Raise ConfigError if ``value`` breaks a bound. A `Cycles` value is held only to bounds of 0
        (its sign); the rest is checked again once it has been converted to seconds."""
        for op, bound in self._bounds():
            number = value
            if isinstance(value, Cycles):
                if bound != 0:
                    continue
                number = value.count
            ok = {">": number > bound, ">=": number >= bound,
                  "<": number < bound, "<=": number <= bound}[op]
            if not ok:
                raise ConfigError(path, f"must be {op} {self.show(bound)}, got {_quote(raw)}")

    def describe_kind(self) -> str:
        """The kind with its constraints, for the schema table: 'size > 0', 'fraction in [0, 1)'."""
        if self.choices is not None:
            return "choice: " + ", ".join(f"`{c}`" for c in self.choices)
        text = self.kind.name
        low = [(op, b) for op, b in self._bounds() if op in (">", ">=")]
        high = [(op, b) for op, b in self._bounds() if op in ("<", "<=")]
        if low and high:
            (lop, lb), (hop, hb) = low[0], high[0]
            text += f" in {'(' if lop == '>' else '['}{self.show(lb)}, {self.show(hb)}{')' if hop == '<' else ']'}"
        else:
            text += "".join(f" {op} {self.show(b)}" for op, b in low + high)
        if self.check_doc:
            text += f", {self.check_doc}"
        return text


def _plain(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


class Section:
    """A named group of fields and subsections, in declaration order."""

    def __init__(self, doc: str = "", members: Optional[Mapping[str, "Field | Section"]] = None):
        self.doc = doc
        self.members: dict[str, Field | Section] = dict(members or {})

    def __repr__(self) -> str:
        return f"Section({list(self.members)})"


LIST = Kind("list", lambda raw: raw)


class SectionList(Field):
    """A field holding a list of sections, each item with the members of ``section`` (fields and
    nested SectionLists; no plain subsections). ``inherit``: an item's missing key takes the
    enclosing section's raw value for a member of the same name before falling back to the default.
    ``item_name`` names one item in messages ('group'). The default is the empty list."""

    def __init__(self, section: "Section", doc: str, inherit: bool = False, item_name: str = "item"):
        super().__init__(LIST, [], doc)
        object.__setattr__(self, "section", section)
        object.__setattr__(self, "inherit", inherit)
        object.__setattr__(self, "item_name", item_name)

    def describe_kind(self) -> str:
        return f"list of {self.item_name}s"

    def convert(self, raw: Any, path: str) -> Any:
        """Check the shape only (a list of mappings); items are built by `Schema` once the plain
        fields are known. Raises ConfigError at ``path``."""
        keys = ", ".join(self.section.members)
        if not isinstance(raw, (list, tuple)) or not all(isinstance(x, Mapping) for x in raw):
            shown = units.shorten(raw) if isinstance(raw, (list, tuple)) else _describe(raw)
            raise ConfigError(path, f"expected a list of mappings of {keys} (one per {self.item_name}), "
                                    f"got {shown}")
        return raw

    def build_items(self, raw: Sequence[Mapping], path: str, parent_raw: Mapping[str, Any],
                    clock: Optional[float]) -> tuple[tuple, list]:
        """(tuple of ConfigSection, list of filled raw dicts) for the items of ``raw``. Raises ConfigError
        at the item's path: unknown key, missing required value, bad value."""
        self.convert(raw, path)
        items, raws = [], []
        for i, data in enumerate(raw):
            ipath = f"{path}[{i}]"
            members = self.section.members
            for key in data:
                if not isinstance(key, str) or key not in members:
                    close = _suggest(key, list(members))
                    hint = f"did you mean '{close}'?" if close else "expected one of: " + ", ".join(members)
                    raise ConfigError(_join(ipath, key), f"unknown key ({hint})")
            values: dict[str, Any] = {}
            filled: dict[str, Any] = {}
            nested = []
            for name, field in members.items():
                fpath = _join(ipath, name)
                if not isinstance(field, Field):
                    raise TypeError(f"{fpath}: a SectionList item holds fields only")
                if name in data:
                    value = data[name]
                    if value is None:
                        raise ConfigError(fpath, "required value is missing" if field.required else
                                          f"has no value; give one or remove the key to use the default "
                                          f"{_quote(field.default)}")
                elif self.inherit and name in parent_raw:
                    value = parent_raw[name]
                elif field.required:
                    raise ConfigError(fpath, "required value is missing")
                else:
                    value = field.default
                filled[name] = value
                if isinstance(field, SectionList):
                    nested.append(name)
                    continue
                typed = field.convert(value, fpath)
                if isinstance(typed, Cycles):
                    if clock is None:
                        raise ConfigError(fpath, f"cannot use cycles here, got {_quote(value)}")
                    typed = typed.seconds(clock)
                    _validate_cycles(field, typed, value, fpath, units.format_frequency(clock))
                values[name] = typed
            for name in nested:
                field = members[name]
                values[name], filled[name] = field.build_items(filled[name], _join(ipath, name), filled, clock)
            items.append(ConfigSection(ipath, values, filled))
            raws.append(filled)
        return tuple(items), raws


# names a section or field may not take, because Config uses them
_RESERVED = {"to_dict", "flat", "get", "source", "items", "keys", "path"}


CrossCheck = Callable[[Mapping[str, Any], Mapping[str, Any]], None]


class RawValues(dict):
    """The raw value of every field by path, defaults included, as a cross-check receives them; ``given``
    holds the paths the config itself gave (a value equal to the default is still given)."""

    def __init__(self) -> None:
        super().__init__()
        self.given: set[str] = set()


class Schema:
    """The root of a configuration schema plus its cross-field checks.

    ``cycle_clock`` is the dotted path of the frequency field used to turn durations given in cycles
    into seconds (None: cycles are refused).
    """

    def __init__(self, *, cycle_clock: Optional[str] = None):
        self.root = Section()
        self.cycle_clock = cycle_clock
        self.checks: list[CrossCheck] = []

    # -- declaring -----------------------------------------------------------------------------

    def section(self, path: str, doc: str = "", **fields: Field) -> Section:
        """Add a section at dotted ``path`` (its parent must exist) holding ``fields`` in order.
        Raises ValueError if the name is taken or a default is invalid."""
        parent_path, _, name = path.rpartition(".")
        parent = self._section_at(parent_path)
        self._check_name(parent, name, path)
        section = Section(doc)
        parent.members[name] = section
        self.extend(path, **fields)
        return section

    def extend(self, path: str, **fields: Field) -> None:
        """Add ``fields`` to the existing section at ``path`` ('' is the top level).
        Raises ValueError if a name is taken or a default is invalid."""
        section = self._section_at(path)
        for name, field in fields.items():
            full = _join(path, name)
            self._check_name(section, name, full)
            if not isinstance(field, Field):
                raise TypeError(f"{full}: expected a Field, got {field!r}")
            if not field.required:
                try:
                    field.convert(field.default, full)
                except ConfigError as exc:
                    raise ValueError(f"invalid default: {exc}") from None
            section.members[name] = field

    def add_choice(self, path: str, value: str) -> None:
        """Allow one more value for the CHOICE field at ``path`` (e.g. a new policy); a value already
        allowed is left alone. Raises KeyError for an unknown path, TypeError for a non-choice field."""
        field = self.lookup(path)
        if not isinstance(field, Field):
            raise KeyError(path)
        if field.choices is None:
            raise TypeError(f"{path} is not a choice field")
        if value not in field.choices:
            field.choices.append(value)

    def cross_check(self, fn: CrossCheck) -> CrossCheck:
        """Register ``fn(values, raw)`` as a cross-field check (usable as a decorator). ``values`` and
        ``raw`` map every dotted field path to its typed value (durations already in seconds) and to
        the raw value the user wrote; ``fn`` raises ConfigError on the most relevant path."""
        self.checks.append(fn)
        return fn

    def _section_at(self, path: str) -> Section:
        node: Field | Section = self.root
        if path:
            node = self.lookup(path)
        if not isinstance(node, Section):
            raise ValueError(f"no section '{path}' in the schema")
        return node

    @staticmethod
    def _check_name(section: Section, name: str, full: str) -> None:
        if not name.isidentifier() or name.startswith("_") or name in _RESERVED:
            raise ValueError(f"'{full}' is not a usable config name")
        if name in section.members:
            raise ValueError(f"'{full}' is already declared")

    # -- reading -------------------------------------------------------------------------------

    def lookup(self, path: str) -> Optional[Field | Section]:
        """The field or section at dotted ``path``, or None."""
        node: Field | Section = self.root
        for part in path.split("."):
            if not isinstance(node, Section) or part not in node.members:
                return None
            node = node.members[part]
        return node

    def fields(self) -> Iterator[tuple[str, Field]]:
        """Every (dotted path, Field), in declaration order."""
        def walk(section: Section, prefix: str) -> Iterator[tuple[str, Field]]:
            for name, node in section.members.items():
                path = _join(prefix, name)
                if isinstance(node, Section):
                    yield from walk(node, path)
                else:
                    yield path, node
        return walk(self.root, "")

    def suggest(self, path: str) -> Optional[str]:
        """The declared field path closest to ``path``, if any is close."""
        return _suggest(path, [p for p, _ in self.fields()])

    def markdown(self) -> str:
        """The schema as a Markdown table: path, kind (with bounds), default, description."""
        lines = ["| path | kind | default | description |", "| --- | --- | --- | --- |"]
        for path, field in self.fields():
            default = "**required**" if field.required else f"`{field.default}`"
            cells = [f"`{path}`", field.describe_kind(), default, field.doc]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
            if isinstance(field, SectionList):
                lines.extend(_item_rows(field, path))
        return "\n".join(lines) + "\n"

    # -- building ------------------------------------------------------------------------------

    def build(self, data: Any, source: str = "<dict>") -> "Config":
        """Validate ``data`` (nested mappings as read from YAML) and return an immutable Config.
        Raises ConfigError (with ``source`` set) for any problem."""
        try:
            return self._build(data, source)
        except ConfigError as exc:
            if exc.source is None:
                exc.source = source
            raise

    def _build(self, data: Any, source: str) -> "Config":
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError("", f"the top level must be a mapping of sections such as "
                                  f"'memory:', got {_describe(data)}")
        self._reject_unknown(self.root, data, "")

        raw = RawValues()
        values: dict[str, Any] = {}
        for path, field in self.fields():
            present, value = _dig(data, path)
            if present:
                raw.given.add(path)
            else:
                if field.required:
                    raise ConfigError(path, "required value is missing")
                value = field.default
            if present and value is None:
                if field.required:
                    raise ConfigError(path, "required value is missing")
                raise ConfigError(path, f"has no value; give one or remove the key to use the "
                                        f"default {_quote(field.default)}")
            raw[path] = value
            values[path] = field.convert(value, path)

        self._resolve_cycles(values, raw)
        clock = values.get(self.cycle_clock) if self.cycle_clock else None
        for path, field in self.fields():
            if isinstance(field, SectionList):
                parent = path.rpartition(".")[0]
                parent_raw = {p.rpartition(".")[2]: r for p, r in raw.items() if p.rpartition(".")[0] == parent}
                values[path], raw[path] = field.build_items(raw[path], path, parent_raw, clock)
        for check in self.checks:
            check(values, raw)
        return Config._make(self, values, raw, source)

    def _reject_unknown(self, section: Section, data: Mapping, prefix: str) -> None:
        for key, value in data.items():
            path = _join(prefix, key)
            node = section.members.get(key) if isinstance(key, str) else None
            if node is None:
                close = _suggest(key, list(section.members))
                hint = f"did you mean '{close}'?" if close else "expected one of: " + ", ".join(section.members)
                raise ConfigError(path, f"unknown key ({hint})")
            if isinstance(node, Section) and value is not None:
                if not isinstance(value, Mapping):
                    raise ConfigError(path, f"expected a mapping of {', '.join(node.members)}, "
                                            f"got {_describe(value)}")
                self._reject_unknown(node, value, path)

    def _resolve_cycles(self, values: dict[str, Any], raw: Mapping[str, Any]) -> None:
        fields = dict(self.fields())
        pending = [p for p, v in values.items() if isinstance(v, Cycles)]
        if not pending:
            return
        if self.cycle_clock is None:
            raise ConfigError(pending[0], f"cannot use cycles here, got {_quote(raw[pending[0]])}")
        clock = values[self.cycle_clock]
        for path in pending:
            values[path] = values[path].seconds(clock)
            _validate_cycles(fields[path], values[path], raw[path], path, raw[self.cycle_clock])


def _validate_cycles(field: Field, seconds: float, raw: Any, path: str, clock: Any) -> None:
    """Validate a duration given in cycles once converted; a failure names the clock it was converted
    with, which may be the value at fault (a clock of 1Hz makes '30cycles' 30 s)."""
    try:
        field.validate(seconds, raw, path)
    except ConfigError as exc:
        raise ConfigError(path, f"{exc.message} ({units.format_duration(seconds)} at a "
                                f"{units.shorten(clock)} clock)") from None


def _item_rows(field: "SectionList", path: str) -> list[str]:
    """Schema table rows of a SectionList's item members: ``workload.groups[].rate``."""
    rows = []
    for name, member in field.section.members.items():
        mpath = f"{path}[].{name}"
        if isinstance(member, SectionList):
            default = "`[]`"
        else:
            default = "**required**" if member.required else f"`{member.default}`"
        inherit = " (default: the enclosing section's value)" if field.inherit and not member.required else ""
        cells = [f"`{mpath}`", member.describe_kind(), default, member.doc + inherit]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if isinstance(member, SectionList):
            rows.extend(_item_rows(member, mpath))
    return rows


def _dig(data: Mapping, path: str) -> tuple[bool, Any]:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {_quote(value)}"
    return f"{_quote(value)}"


# ---------------------------------------------------------------------------------------------
# the built configuration

class ConfigSection:
    """A read-only section of a built config: ``section.name`` gives a typed value or a subsection."""

    __slots__ = ("_path", "_items", "_raw")

    def __init__(self, path: str, items: Mapping[str, Any], raw: Mapping[str, Any]):
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_items", dict(items))
        object.__setattr__(self, "_raw", dict(raw))

    def __getattr__(self, name: str) -> Any:
        items = object.__getattribute__(self, "_items")
        try:
            return items[name]
        except KeyError:
            pass
        full = _join(object.__getattribute__(self, "_path"), name)
        close = _suggest(name, list(items))
        hint = f" (did you mean '{close}'?)" if close else ""
        raise AttributeError(f"config has no field '{full}'{hint}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"config is read-only: cannot set '{_join(self._path, name)}'")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"config is read-only: cannot delete '{_join(self._path, name)}'")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._items))

    def __reduce__(self):
        return (ConfigSection, (self._path, self._items, self._raw))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.flat() == other.flat()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.flat().items())))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._items.items())
        return f"<config {self._path or 'root'}: {inner}>"

    def keys(self) -> list[str]:
        """Names of the fields and subsections, in declaration order."""
        return list(self._items)

    def items(self) -> list[tuple[str, Any]]:
        """(name, typed value or ConfigSection) pairs, in declaration order."""
        return list(self._items.items())

    def get(self, path: str) -> Any:
        """The value or section at a dotted path relative to this section; raises KeyError."""
        node: Any = self
        for part in path.split("."):
            if not isinstance(node, ConfigSection) or part not in node._items:
                raise KeyError(path)
            node = node._items[part]
        return node

    def flat(self) -> dict[str, Any]:
        """Every field below this section as {dotted path: typed value}, for flat result records."""
        out: dict[str, Any] = {}
        for name, value in self._items.items():
            if isinstance(value, ConfigSection):
                out.update({f"{name}.{k}": v for k, v in value.flat().items()})
            else:
                out[name] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """The effective config below this section as plain nested dicts of the values as the user
        wrote them (defaults filled, overrides applied); safe to dump to YAML and load again."""
        out: dict[str, Any] = {}
        for name, value in self._items.items():
            if isinstance(value, ConfigSection):
                out[name] = value.to_dict()
            elif isinstance(value, tuple) and value and all(isinstance(v, ConfigSection) for v in value):
                out[name] = [v.to_dict() for v in value]
            else:
                out[name] = self._raw[name]
        return out


class Config(ConfigSection):
    """A validated, immutable configuration: ``cfg.memory.size`` (int bytes), ``cfg.link.bandwidth``
    (float bytes/s), durations in float seconds, frequencies in Hz, rates per second.
    ``cfg.source`` is where it came from; equality compares the typed values only."""

    __slots__ = ("_source",)

    def __init__(self, items: Mapping[str, Any], raw: Mapping[str, Any], source: str = "<dict>"):
        super().__init__("", items, raw)
        object.__setattr__(self, "_source", source)

    @property
    def source(self) -> str:
        return self._source

    def __reduce__(self):
        return (Config, (self._items, self._raw, self._source))

    @classmethod
    def _make(cls, schema: Schema, values: Mapping[str, Any], raw: Mapping[str, Any],
              source: str) -> "Config":
        def build(section: Section, prefix: str) -> tuple[dict, dict]:
            items: dict[str, Any] = {}
            raws: dict[str, Any] = {}
            for name, node in section.members.items():
                path = _join(prefix, name)
                if isinstance(node, Section):
                    sub_items, sub_raw = build(node, path)
                    items[name] = ConfigSection(path, sub_items, sub_raw)
                else:
                    items[name] = values[path]
                    raws[name] = raw[path]
            return items, raws

        items, raws = build(schema.root, "")
        return cls(items, raws, source)
