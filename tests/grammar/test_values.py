"""grammar.values.parse_signal: the one signal parser of run, stop, kill and STOPSIGNAL, read as
docker's signal.ParseSignal reads it."""

import pytest

from grammar.values import parse_signal, stop_signal


@pytest.mark.parametrize("text, number", [
    ("SIGTERM", 15), ("term", 15), ("9", 9), ("KILL", 9), ("SIGCLD", 17), ("poll", 29),
    ("SIGRTMIN", 34), ("SIGRTMIN+3", 37), ("rtmin+15", 49), ("RTMAX-14", 50), ("SIGRTMAX-1", 63),
    ("RTMAX", 64), ("64", 64),
])
def test_signals_as_docker_reads_them(text, number):
    assert parse_signal(text) == number
    assert stop_signal(text) == text           # STOPSIGNAL keeps what was written


@pytest.mark.parametrize("text", ["FOO", "0", "65", "RTMIN+16", "RTMAX-15", "SIGRTMIN+", "-1", ""])
def test_bad_signals_are_docker_s_line(text):
    with pytest.raises(ValueError, match=f"^Invalid signal: {text.replace('+', '[+]')}$"):
        parse_signal(text)
