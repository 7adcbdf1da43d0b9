"""Quantities with units: parse the strings users write in configs, format numbers for reports.

Every dimensioned config value is a string with a unit, as in gem5 ("64GiB", "10Gbit/s", "2us",
"3GHz", "50k/s"). Parsers return plain numbers in base units (bytes, bytes/s, seconds, Hz, events
per second) and raise `UnitError` quoting the bad value and the expected kind:
``cannot read '25 gigs' as a bandwidth: unknown unit 'gigs' ...``.

Units are case-sensitive (``MB`` is not ``Mb``, ``ms`` is not ``Ms``); a wrong case gets a
"did you mean" hint instead of a guess. Decimal prefixes (kB, MB, kbit/s, ...) are powers of 1000,
binary ones (KiB, MiB, ...) powers of 1024. Signs are accepted: whether zero or a negative value is
allowed is the schema's decision, which reports it with the config path.

A number's size is bounded before it is computed with: one beyond 10^40 in magnitude raises
`OutOfRange` (which the schema reports as breaking the field's bound), one with more than
MAX_DIGITS digits is refused, and one closer to zero than 10^-40 reads as zero, so that
'1e999999999GiB' is an error at once instead of a ten-billion-digit computation.

A duration may be given in CPU cycles ("30cycles"); `parse_duration` then returns a `Cycles` marker
that the config loader turns into seconds with ``cpus.clock``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Union

__all__ = [
    "UnitError",
    "OutOfRange",
    "read_number",
    "shorten",
    "Cycles",
    "parse_size",
    "parse_bandwidth",
    "parse_duration",
    "parse_frequency",
    "parse_rate",
    "format_bytes",
    "format_duration",
    "format_bandwidth",
    "format_frequency",
    "format_rate",
]


class UnitError(ValueError):
    """A quantity string that cannot be read; the message quotes the value and the expected kind."""


class OutOfRange(UnitError):
    """A number too large in magnitude for any quantity: ``sign`` is +1 (huge) or -1 (hugely negative)."""

    def __init__(self, message: str, sign: int):
        super().__init__(message)
        self.sign = sign


MAX_DIGITS = 100       # significant digits a number may have; no quantity here needs 20
MAX_MAGNITUDE = 40     # decimal exponent beyond which a number is out of range for every field
_QUOTE_CHARS = 40      # a quoted value longer than this is cut in messages


def shorten(value: object) -> str:
    """``str(value)``, cut to its first characters and its length when it is long (for messages)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 300:
        # str() of an int past 4300 digits raises; its digit count is all a message needs
        return f"{'-' if value < 0 else ''}<an integer of {int(value.bit_length() * math.log10(2)) + 1} digits>"
    try:
        text = str(value)
    except ValueError:
        return f"<a {type(value).__name__} holding an integer of thousands of digits>"
    if len(text) <= _QUOTE_CHARS:
        return text
    return f"{text[:_QUOTE_CHARS - 16]}...({len(text)} characters)"


_DECIMAL = re.compile(r"([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?")


def read_number(text: str) -> Fraction:
    """The exact value of a decimal number such as '1.5', '-2e3' or '.5E-1', its size bounded first.
    Raises OutOfRange beyond 10^40 in magnitude, UnitError for more than MAX_DIGITS digits or text
    that is not a number; a number closer to zero than 10^-40 is returned as 0."""
    m = _DECIMAL.fullmatch(text.strip())
    if m is None or not (m.group(2) or m.group(3)):
        raise UnitError(f"cannot read {_quote(shorten(text))} as a number")
    sign, whole, frac, exp = m.group(1), m.group(2) or "", m.group(3) or "", m.group(4) or "0"
    digits = (whole + frac).lstrip("0")
    if not digits:
        return Fraction(0)
    if len(exp.lstrip("+-")) > 6:
        magnitude = 10**7 * (-1 if exp.startswith("-") else 1)
    else:
        # the power of ten of the leading digit: 123.4 -> 2, 0.05 -> -2
        magnitude = int(exp) + len(whole.lstrip("0")) - 1 if whole.lstrip("0") else \
            int(exp) - (len(frac) - len(frac.lstrip("0"))) - 1
    if magnitude > MAX_MAGNITUDE:
        raise OutOfRange(f"{_quote(shorten(text))} is out of range", -1 if sign == "-" else 1)
    if magnitude < -MAX_MAGNITUDE:
        return Fraction(0)
    if len(digits) > MAX_DIGITS:
        raise UnitError(f"{_quote(shorten(text))} has {len(digits)} digits, more than the {MAX_DIGITS} a number "
                        "may have")
    return Fraction(text.strip())


@dataclass(frozen=True)
class Cycles:
    """A duration given as a number of CPU cycles, resolved later with the CPU clock.

    ``count`` is the number of cycles (a float; "2.5cycles" is allowed). ``seconds(clock_hz)``
    converts it; a non-positive clock raises ValueError.
    """

    count: float

    def seconds(self, clock_hz: float) -> float:
        if not clock_hz > 0:
            raise ValueError(f"cannot convert cycles with a clock of {clock_hz!r} Hz")
        return self.count / clock_hz

    def __str__(self) -> str:
        return f"{_plain(self.count)}cycles"


# ---------------------------------------------------------------------------------------------
# unit tables: unit text -> multiplier to the base unit (exact, as Fractions)

_K, _M, _G, _T, _P = (Fraction(1000) ** i for i in range(1, 6))
_KI, _MI, _GI, _TI, _PI = (Fraction(1024) ** i for i in range(1, 6))

SIZE_UNITS: dict[str, Fraction] = {
    "B": Fraction(1), "byte": Fraction(1), "bytes": Fraction(1),
    "KiB": _KI, "MiB": _MI, "GiB": _GI, "TiB": _TI, "PiB": _PI,
    "kB": _K, "KB": _K, "MB": _M, "GB": _G, "TB": _T, "PB": _P,
}

_BIT = Fraction(1, 8)
BANDWIDTH_UNITS: dict[str, Fraction] = {}
for _prefix, _mult in (("", 1), ("k", _K), ("K", _K), ("M", _M), ("G", _G), ("T", _T)):
    # "Kbit/s" and "Kbps" are common enough misspellings of the SI "k" to accept.
    for _suffix in ("bit/s", "b/s", "bps"):
        BANDWIDTH_UNITS[_prefix + _suffix] = _mult * _BIT
for _unit, _mult in SIZE_UNITS.items():
    if _unit not in ("byte", "bytes"):
        BANDWIDTH_UNITS[_unit + "/s"] = _mult

DURATION_UNITS: dict[str, Fraction] = {
    "ns": Fraction(1, 10**9),
    "us": Fraction(1, 10**6), "\u00b5s": Fraction(1, 10**6), "\u03bcs": Fraction(1, 10**6),
    "ms": Fraction(1, 10**3),
    "s": Fraction(1), "sec": Fraction(1),
    "min": Fraction(60),
    "h": Fraction(3600),
}
_CYCLE_UNITS = ("cycles", "cycle")

FREQUENCY_UNITS: dict[str, Fraction] = {
    "Hz": Fraction(1), "kHz": _K, "KHz": _K, "MHz": _M, "GHz": _G, "THz": _T,
}

_RATE_PREFIXES: dict[str, Fraction] = {"": Fraction(1), "k": _K, "K": _K, "M": _M, "G": _G}
_RATE_PERIODS: dict[str, Fraction] = {
    "s": Fraction(1), "ms": Fraction(1, 10**3), "us": Fraction(1, 10**6),
    "\u00b5s": Fraction(1, 10**6), "\u03bcs": Fraction(1, 10**6), "min": Fraction(60), "h": Fraction(3600),
}

# what a "needs a unit" / "unknown unit" message suggests, per kind
_EXAMPLE_UNIT = {"size": "GiB", "bandwidth": "Gbit/s", "duration": "ms", "frequency": "GHz", "rate": "/s"}
_LISTED_UNITS = {
    "size": "B, KiB, MiB, GiB, TiB, kB, MB, GB, TB",
    "bandwidth": "bit/s, kbit/s, Mbit/s, Gbit/s, Tbit/s, Gbps, B/s, KiB/s, MiB/s, GiB/s, kB/s, MB/s, GB/s",
    "duration": "ns, us, ms, s, min, h or cycles",
    "frequency": "Hz, kHz, MHz, GHz",
    "rate": "/s, k/s, M/s, G/s or /ms",
}

_NUMBER = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(.*?)\s*$", re.S)


def _quote(value: object) -> str:
    return f"'{value}'"


def _fail(value: object, kind: str, why: str) -> UnitError:
    return UnitError(f"cannot read {_quote(shorten(value))} as a {kind}: {why}")


def _split(value: object, kind: str) -> tuple[Fraction, str]:
    """Split '1.5 GiB' into (Fraction('1.5'), 'GiB'); reject non-strings and bare numbers."""
    example = _EXAMPLE_UNIT[kind]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _fail(value, kind, f"expected a number with a unit such as {example}")
    if not isinstance(value, str):
        raise _fail(value, kind, f"needs a unit such as {example}")
    m = _NUMBER.fullmatch(value)
    if m is None:
        raise _fail(value, kind, f"expected a number followed by a unit such as {example}")
    number, unit = m.group(1), m.group(2)
    if not unit:
        raise _fail(value, kind, f"needs a unit such as {example}")
    try:
        return read_number(number), unit
    except OutOfRange as exc:
        raise OutOfRange(f"cannot read {_quote(shorten(value))} as a {kind}: the number is too large",
                         exc.sign) from None
    except ValueError:
        raise _fail(value, kind, f"the number has more than {MAX_DIGITS} digits") from None


def _float(exact: Fraction, value: object, kind: str) -> float:
    try:
        return float(exact)
    except OverflowError:
        raise OutOfRange(f"cannot read {_quote(shorten(value))} as a {kind}: the number is too large",
                         1 if exact > 0 else -1) from None


def _unknown_unit(value: object, kind: str, unit: str, table: dict) -> UnitError:
    why = f"unknown unit '{unit}'"
    hint = [u for u in table if u.lower() == unit.lower()]
    if hint:
        # 'gb/s' is either 'Gb/s' (bits) or 'GB/s' (bytes): name every unit it may be
        why += f" (did you mean {' or '.join(repr(h) for h in hint)}?)"
    else:
        for other, other_table in _TABLES.items():
            if other != kind and unit in other_table:
                why += f" ('{unit}' is a unit of {other})"
                break
    return _fail(value, kind, f"{why}; expected {_LISTED_UNITS[kind]}")


def _lookup(value: object, kind: str, table: dict[str, Fraction]) -> Fraction:
    number, unit = _split(value, kind)
    try:
        return number * table[unit]
    except KeyError:
        raise _unknown_unit(value, kind, unit, table) from None


def parse_size(value: object) -> int:
    """Read a memory size such as '64GiB', '1.5GiB' or '4KiB' as a whole number of bytes.

    ``value``: the string from the config. Raises UnitError for a bare number, an unknown unit or
    a value that is not a whole number of bytes ('0.1KiB').
    """
    exact = _lookup(value, "size", SIZE_UNITS)
    if exact.denominator != 1:
        raise _fail(value, "size", f"is not a whole number of bytes ({float(exact):g})")
    return int(exact)


def parse_bandwidth(value: object) -> float:
    """Read a link bandwidth such as '10Gbit/s', '10Gbps' or '1.25GB/s' as bytes per second.

    ``value``: the string from the config. Raises UnitError for a bare number or an unknown unit.
    """
    return _float(_lookup(value, "bandwidth", BANDWIDTH_UNITS), value, "bandwidth")


def parse_duration(value: object) -> Union[float, Cycles]:
    """Read a duration such as '2us', '1.5ms' or '1h' as seconds, or '30cycles' as `Cycles(30)`.

    ``value``: the string from the config. Raises UnitError for a bare number or an unknown unit.
    """
    number, unit = _split(value, "duration")
    if unit in _CYCLE_UNITS:
        return Cycles(_float(number, value, "duration"))
    try:
        exact = number * DURATION_UNITS[unit]
    except KeyError:
        raise _unknown_unit(value, "duration", unit, DURATION_UNITS) from None
    return _float(exact, value, "duration")


def parse_frequency(value: object) -> float:
    """Read a clock frequency such as '3GHz' or '2.4 GHz' as Hz.

    ``value``: the string from the config. Raises UnitError for a bare number or an unknown unit.
    """
    return _float(_lookup(value, "frequency", FREQUENCY_UNITS), value, "frequency")


def parse_rate(value: object) -> float:
    """Read an event rate such as '50000/s', '50k/s', '1.2M/s' or '50/ms' as events per second.

    ``value``: the string from the config. Raises UnitError for a bare number or an unknown unit.
    """
    number, unit = _split(value, "rate")
    prefix, slash, period = unit.partition("/")
    prefix = prefix.strip()
    period = period.strip()
    if not slash or prefix not in _RATE_PREFIXES or period not in _RATE_PERIODS:
        raise _fail(value, "rate", f"unknown unit '{unit}'; expected {_LISTED_UNITS['rate']}")
    return _float(number * _RATE_PREFIXES[prefix] / _RATE_PERIODS[period], value, "rate")


_TABLES: dict[str, dict] = {
    "size": SIZE_UNITS,
    "bandwidth": BANDWIDTH_UNITS,
    "duration": {**DURATION_UNITS, **dict.fromkeys(_CYCLE_UNITS)},
    "frequency": FREQUENCY_UNITS,
}

PARSERS: dict[str, Callable[[object], object]] = {
    "size": parse_size,
    "bandwidth": parse_bandwidth,
    "duration": parse_duration,
    "frequency": parse_frequency,
    "rate": parse_rate,
}


# ---------------------------------------------------------------------------------------------
# formatting for reports: three significant digits, trailing zeros dropped ("1.5KiB", "63.6GiB")

def _sig3(x: float) -> str:
    """x to three significant digits; values of 1000 and more are printed whole (no exponent)."""
    if x == 0 or not math.isfinite(x):
        return _plain(x)
    if abs(x) >= 100:
        return str(int(round(x)))
    decimals = 2 - int(math.floor(math.log10(abs(x))))
    return _plain(round(x, decimals))


def _plain(x: float) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    text = f"{x:.12g}"
    return text.rstrip("0").rstrip(".") if "." in text and "e" not in text else text


def _scaled(x: float, steps: list[tuple[float, str]], base: float, zero: str = "") -> str:
    """Format x with the largest unit in ``steps`` (ascending) whose value is >= 1 once rounded."""
    if x == 0 or not math.isfinite(x):
        return f"{_plain(x)}{zero or steps[0][1]}"
    chosen = steps[0]
    for scale, unit in steps:
        if abs(x) / scale >= 1:
            chosen = (scale, unit)
    index = steps.index(chosen)
    text = _sig3(x / chosen[0])
    # 1023.9KiB rounds to "1024KiB": show it as "1MiB" instead
    if abs(float(text)) >= base and index + 1 < len(steps):
        chosen = steps[index + 1]
        text = _sig3(x / chosen[0])
    return f"{text}{chosen[1]}"


_IEC = [(1024.0**i, u) for i, u in enumerate(["B", "KiB", "MiB", "GiB", "TiB", "PiB"])]
_TIME = [(1e-9, "ns"), (1e-6, "us"), (1e-3, "ms"), (1.0, "s")]
_BITS = [(1000.0**i, u) for i, u in enumerate(["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"])]
_BYTES_PER_S = [(s, u + "/s") for s, u in _IEC]
_HZ = [(1000.0**i, u) for i, u in enumerate(["Hz", "kHz", "MHz", "GHz", "THz"])]
_EVENTS = [(1000.0**i, u) for i, u in enumerate(["/s", "k/s", "M/s", "G/s"])]


def format_bytes(n: float) -> str:
    """Format a byte count with an IEC unit and three significant digits: 68719476736 -> '64GiB'."""
    return _scaled(float(n), _IEC, 1024)


def format_duration(seconds: float) -> str:
    """Format seconds as ns, us, ms or s with three significant digits: 0.0003 -> '300us'."""
    return _scaled(float(seconds), _TIME, 1000, zero="s")


def format_bandwidth(bytes_per_s: float, unit: str = "bit") -> str:
    """Format a bandwidth given in bytes/s: as decimal bits by default (1.25e9 -> '10Gbit/s'), or
    with ``unit='byte'`` as IEC bytes (134217728 -> '128MiB/s'). Raises ValueError for another unit.
    """
    if unit == "bit":
        return _scaled(float(bytes_per_s) * 8, _BITS, 1000)
    if unit == "byte":
        return _scaled(float(bytes_per_s), _BYTES_PER_S, 1024)
    raise ValueError(f"unit must be 'bit' or 'byte', got {unit!r}")


def format_frequency(hz: float) -> str:
    """Format a frequency in Hz with three significant digits: 3e9 -> '3GHz'."""
    return _scaled(float(hz), _HZ, 1000)


def format_rate(per_second: float) -> str:
    """Format an event rate with three significant digits: 50000 -> '50k/s'."""
    return _scaled(float(per_second), _EVENTS, 1000)
