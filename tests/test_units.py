"""Unit parsers and formatters: exact values for good input, quoted values for bad input."""
import pytest

from pagesync_model.units import (
    Cycles,
    UnitError,
    format_bandwidth,
    format_bytes,
    format_duration,
    format_frequency,
    format_rate,
    parse_bandwidth,
    parse_duration,
    parse_frequency,
    parse_rate,
    parse_size,
)


@pytest.mark.parametrize("text, expected", [
    ("64GiB", 68719476736),
    ("4KiB", 4096),
    ("1.5GiB", 1610612736),
    ("256 MiB", 268435456),
    ("2TiB", 2 * 1024**4),
    ("1B", 1),
    ("10kB", 10_000),
    ("10KB", 10_000),
    ("3MB", 3_000_000),
    ("2GB", 2_000_000_000),
    ("1TB", 10**12),
    ("0GiB", 0),
    ("-1GiB", -1073741824),
    (" 0.5KiB ", 512),
    ("1e3B", 1000),
])
def test_parse_size(text, expected):
    value = parse_size(text)
    assert value == expected and type(value) is int


@pytest.mark.parametrize("text, expected", [
    ("10Gbit/s", 1.25e9),
    ("10Gbps", 1.25e9),
    ("100Mbit/s", 12.5e6),
    ("500Mbps", 62.5e6),
    ("8bit/s", 1.0),
    ("1kbit/s", 125.0),
    ("1Tbit/s", 1.25e11),
    ("1B/s", 1.0),
    ("128MiB/s", 134217728.0),
    ("1KiB/s", 1024.0),
    ("2GiB/s", 2 * 1024.0**3),
    ("1.25GB/s", 1.25e9),
    ("1kB/s", 1000.0),
    ("100MB/s", 1e8),
])
def test_parse_bandwidth(text, expected):
    assert parse_bandwidth(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("2us", 2e-6),
    ("2\u00b5s", 2e-6),
    ("300ns", 300e-9),
    ("1.5ms", 1.5e-3),
    ("1s", 1.0),
    ("2min", 120.0),
    ("1h", 3600.0),
    ("0s", 0.0),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("text, count", [("100cycles", 100), ("30 cycles", 30), ("1cycle", 1),
                                         ("2.5cycles", 2.5)])
def test_parse_duration_cycles_is_a_marker(text, count):
    marker = parse_duration(text)
    assert marker == Cycles(count)
    assert str(Cycles(30)) == "30cycles"


def test_cycles_to_seconds():
    assert parse_duration("100cycles").seconds(2e9) == pytest.approx(50e-9, rel=1e-15)
    with pytest.raises(ValueError):
        Cycles(1).seconds(0)


@pytest.mark.parametrize("text, expected", [("3GHz", 3e9), ("2.4 GHz", 2.4e9), ("800MHz", 8e8),
                                            ("1kHz", 1e3), ("50Hz", 50.0)])
def test_parse_frequency(text, expected):
    assert parse_frequency(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("50000/s", 50000.0), ("50k/s", 50000.0), ("1.2M/s", 1.2e6), ("2G/s", 2e9),
    ("5/ms", 5000.0), ("50 k/s", 50000.0), ("3/us", 3e6),
])
def test_parse_rate(text, expected):
    assert parse_rate(text) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("parser, value, kind, why", [
    (parse_size, "64", "size", "needs a unit such as GiB"),
    (parse_size, 64, "size", "needs a unit such as GiB"),
    (parse_size, "0.1KiB", "size", "not a whole number of bytes"),
    (parse_size, "10gib", "size", "did you mean 'GiB'"),
    (parse_size, "10Gbit/s", "size", "'Gbit/s' is a unit of bandwidth"),
    (parse_size, "GiB", "size", "expected a number"),
    (parse_size, "", "size", "expected a number"),
    (parse_size, None, "size", "expected a number with a unit"),
    (parse_size, True, "size", "expected a number with a unit"),
    (parse_size, [1], "size", "expected a number with a unit"),
    (parse_bandwidth, "25 gigs", "bandwidth", "unknown unit 'gigs'"),
    (parse_bandwidth, "10", "bandwidth", "needs a unit"),
    (parse_bandwidth, "10GiB", "bandwidth", "'GiB' is a unit of size"),
    (parse_duration, "2", "duration", "needs a unit"),
    (parse_duration, "10MB", "duration", "'MB' is a unit of size"),
    (parse_duration, "5 fortnights", "duration", "unknown unit"),
    (parse_duration, "1MS", "duration", "did you mean 'ms'"),
    (parse_frequency, "3", "frequency", "needs a unit"),
    (parse_frequency, "3ghz", "frequency", "did you mean 'GHz'"),
    (parse_rate, "50000", "rate", "needs a unit such as /s"),
    (parse_rate, "50k", "rate", "unknown unit 'k'"),
    (parse_rate, "5/fortnight", "rate", "unknown unit"),
    (parse_rate, "5X/s", "rate", "unknown unit"),
])
def test_bad_values_quote_value_and_kind(parser, value, kind, why):
    with pytest.raises(UnitError) as err:
        parser(value)
    message = str(err.value)
    assert message.startswith(f"cannot read '{value}' as a {kind}")
    assert why in message
    assert isinstance(err.value, ValueError)


def test_bandwidth_message_matches_style_example():
    with pytest.raises(UnitError, match=r"^cannot read '25 gigs' as a bandwidth"):
        parse_bandwidth("25 gigs")


@pytest.mark.parametrize("n, text", [
    (0, "0B"), (512, "512B"), (1536, "1.5KiB"), (4096, "4KiB"), (68719476736, "64GiB"),
    (68315299840, "63.6GiB"), (1023.9 * 1024, "1MiB"), (1000, "1000B"), (123456789, "118MiB"),
])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


@pytest.mark.parametrize("s, text", [
    (0, "0s"), (50e-9, "50ns"), (2e-6, "2us"), (3e-4, "300us"), (0.3, "300ms"), (1.5, "1.5s"),
    (3600, "3600s"), (0.9999996, "1s"), (1.234567e-3, "1.23ms"),
])
def test_format_duration(s, text):
    assert format_duration(s) == text


def test_format_bandwidth_frequency_rate():
    assert format_bandwidth(1.25e9) == "10Gbit/s"
    assert format_bandwidth(12.5e6) == "100Mbit/s"
    assert format_bandwidth(134217728, unit="byte") == "128MiB/s"
    with pytest.raises(ValueError):
        format_bandwidth(1, unit="nibble")
    assert format_frequency(3e9) == "3GHz"
    assert format_rate(50000) == "50k/s"


@pytest.mark.parametrize("text", ["64GiB", "1.5KiB", "4KiB", "118MiB"])
def test_format_bytes_reads_back(text):
    assert format_bytes(parse_size(text)) == text


@pytest.mark.parametrize("text, expected", [("512 GiB", 512 << 30), ("1GB", 10**9), ("1.5 TiB", 3 << 39)])
def test_sizes_a_planner_types(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text, hint", [("512G", "expected B, KiB"), ("512gb", "did you mean 'GB'"),
                                        ("2 GB/sec", "expected bit/s")])
def test_units_a_planner_may_mistype_get_the_accepted_forms(text, hint):
    parse = parse_bandwidth if "/" in text else parse_size
    with pytest.raises(UnitError) as err:
        parse(text)
    assert hint in str(err.value)
