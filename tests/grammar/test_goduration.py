"""grammar.goduration: Go's time.ParseDuration and Duration.String."""
import pytest

from grammar.goduration import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(("text", "ns", "shown"), [
    (".5s", 500_000_000, "500ms"),
    ("1.5h", 5_400_000_000_000, "1h30m0s"),
    ("1h30m", 5_400_000_000_000, "1h30m0s"),
    ("300ms", 300_000_000, "300ms"),
    ("1us", 1_000, "1µs"),
    ("1µs", 1_000, "1µs"),
    ("1μs", 1_000, "1µs"),
    ("1500ns", 1_500, "1.5µs"),
    ("0", 0, "0s"),
    ("+2m", 120_000_000_000, "2m0s"),
    ("-1.5s", -1_500_000_000, "-1.5s"),
    ("1.s", 1_000_000_000, "1s"),
    ("61.000000001s", 61_000_000_001, "1m1.000000001s"),
    ("2562047h47m16.854775807s", 2**63 - 1, "2562047h47m16.854775807s"),
])
def test_parse_and_format_like_go(text, ns, shown):
    assert parse_duration(text) == ns
    assert format_duration(ns) == shown


@pytest.mark.parametrize(("text", "msg"), [
    ("", 'time: invalid duration ""'),
    (".s", 'time: invalid duration ".s"'),
    ("s", 'time: invalid duration "s"'),
    ("5", 'time: missing unit in duration "5"'),
    ("1x", 'time: unknown unit "x" in duration "1x"'),
    ("1s2", 'time: missing unit in duration "1s2"'),
    ("--1s", 'time: invalid duration "--1s"'),
    ("2562047h48m", 'time: invalid duration "2562047h48m"'),
])
def test_bad_durations_have_gos_message(text, msg):
    with pytest.raises(DurationError) as e:
        parse_duration(text)
    assert str(e.value) == msg
