"""Did-you-mean hints (grammar.errors.suggest): never the word the user wrote."""
from grammar.errors import suggest, with_suggestion


def test_a_case_insensitive_exact_match_suggests_nothing():
    assert suggest("run", ["RUN", "FROM"]) is None
    assert suggest("Bind", ["bind", "cache"]) is None
    assert with_suggestion("unknown: run", "run", ["RUN"]) == "unknown: run"


def test_a_close_option_is_suggested_in_the_value_s_case():
    assert suggest("form", ["FROM", "RUN"]) == "from"
    assert suggest("RUNN", ["FROM", "RUN"]) == "RUN"
    assert suggest("network", ["network"], case_sensitive=True) is None
    assert suggest("Network", ["network"], case_sensitive=True) == "network"
