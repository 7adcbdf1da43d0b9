"""A numeric config key as a sweep axis or a planner knob: parse values with their units, interpolate
between them in linear or log space, and write a value back as a ``dotted.key=value`` override.

Values are held in the schema's base units (bytes, bytes/s, seconds, Hz, events/s, plain numbers);
the override text carries an explicit base unit ('1.25e9B/s', '0.1s') so no precision is lost.
"""
import math

from ..config import SCHEMA, ConfigError
from .. import schema as _schema
from ..units import (Cycles, format_bandwidth, format_bytes, format_duration, format_frequency,
                     format_rate)

_BASE_UNIT = {"size": "B", "bandwidth": "B/s", "duration": "s", "frequency": "Hz", "rate": "/s"}
_FORMAT = {"size": format_bytes, "bandwidth": format_bandwidth, "duration": format_duration,
           "frequency": format_frequency, "rate": format_rate}
NUMERIC_KINDS = ("size", "bandwidth", "duration", "frequency", "rate", "int", "float", "fraction")


class KnobError(ValueError):
    """A key that is not a config field, not numeric, or a value that cannot be read for it; the
    message names the key and quotes the value."""


def field_for(key):
    """The schema Field at dotted ``key``; raises KnobError naming the key (with a suggestion)."""
    node = SCHEMA.lookup(key) if isinstance(key, str) and key else None
    if not isinstance(node, _schema.Field):
        close = SCHEMA.suggest(str(key))
        hint = f" (did you mean '{close}'?)" if close else ""
        what = "a section, not a field" if node is not None else "not a config key"
        raise KnobError(f"'{key}' is {what}{hint}")
    return node


class Knob:
    """The config field at ``key`` seen as a number. ``size_quantum`` (bytes) rounds sizes so a value
    interpolated between two sizes stays a whole number of pages. Raises KnobError for an unknown key."""

    def __init__(self, key, size_quantum=4096):
        self.key = key
        self.field = field_for(key)
        self.kind = self.field.kind.name
        self.size_quantum = max(1, int(size_quantum))

    @property
    def numeric(self):
        return self.field.choices is None and self.kind in NUMERIC_KINDS

    @property
    def integral(self):
        return self.kind in ("int", "size")

    def parse(self, raw):
        """The value of ``raw`` (a YAML scalar such as '10Gbit/s', 4096 or 0.5) in base units, checked
        against the field's bounds. Raises KnobError quoting the value."""
        try:
            value = self.field.convert(raw, self.key)
        except ConfigError as exc:
            raise KnobError(str(exc)) from None
        if isinstance(value, Cycles):
            raise KnobError(f"{self.key}: give '{raw}' in seconds (ms, us, ...), not cycles, to sweep or plan it")
        if self.numeric and isinstance(value, str):  # sim.quantum's auto
            raise KnobError(f"{self.key}: '{raw}' is not a number to sweep or plan")
        return value

    def snap(self, value):
        """``value`` made representable: whole for ints, whole multiples of ``size_quantum`` for sizes."""
        if self.kind == "int":
            return int(round(value))
        if self.kind == "size":
            q = self.size_quantum
            return max(q, int(round(value / q)) * q)
        return float(value)

    def text(self, value):
        """Exact override text for a base-unit ``value`` ('1250000000.0B/s', 4096, 0.25, True, 'qemu')."""
        if not self.numeric:
            return value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else value
        if self.kind in _BASE_UNIT:
            number = int(value) if self.kind == "size" else repr(float(value))
            return f"{number}{_BASE_UNIT[self.kind]}"
        return int(value) if self.kind == "int" else repr(float(value))

    def override(self, value):
        """The 'dotted.key=value' override that sets this knob to ``value`` (base units)."""
        return f"{self.key}={self.text(value)}"

    def label(self, value):
        """``value`` for people: '10Gbit/s', '64GiB', '100ms', '20k/s', '0.25'."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if self.numeric and self.kind in _FORMAT:
            return _FORMAT[self.kind](value)
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    def spread(self, lo, hi, num, log):
        """``num`` values from ``lo`` to ``hi`` inclusive (base units), evenly in log space if ``log``.
        Raises KnobError for num < 1 or a log range that does not stay above zero."""
        if not isinstance(num, int) or isinstance(num, bool) or num < 1:
            raise KnobError(f"{self.key}: 'num' must be a whole number >= 1, got '{num}'")
        if log and not (lo > 0 and hi > 0):
            raise KnobError(f"{self.key}: a log range needs both ends > 0, got {self.label(lo)}..{self.label(hi)}")
        if num == 1:
            return [self.snap(lo)]
        out = []
        for i in range(num):
            f = i / (num - 1)
            v = math.exp(math.log(lo) + f * (math.log(hi) - math.log(lo))) if log else lo + f * (hi - lo)
            out.append(self.snap(v))
        # ends exactly as written, not as exp(log(x)) round trips
        out[0], out[-1] = self.snap(lo), self.snap(hi)
        return out


def label_for(key, value):
    """``value`` of config ``key`` formatted with its unit; plain str() for keys that are not fields."""
    try:
        return Knob(key).label(value)
    except KnobError:
        return str(value)
