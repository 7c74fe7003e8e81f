"""cache.jsonread.loads is json.loads: the same value (types, key order, floats, NaN) or the same
error, for str and bytes in any of the encodings json.loads detects; the store's index reader
built on it still turns corrupt JSON into one error."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache import layout
from cache.errors import StoreError
from cache.indexes import Indexes
from cache.jsonread import loads

_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
            | st.text(alphabet=st.characters(codec="utf-8"), max_size=20))
VALUES = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=5)
                      | st.dictionaries(st.text(max_size=8), kids, max_size=5), max_leaves=30)
# what JSON text is made of, so random strings are often nearly JSON
PIECES = st.sampled_from(['{', '}', '[', ']', ',', ':', '"', '"a"', '\\', '\\u00e9', '\\ud800',
                          '1', '-', '0', '.5', 'e3', 'E-2', 'true', 'fals', 'null', 'NaN',
                          'Infinity', '-Infinity', ' ', '\n', '\t', '\r', '\x00', '\ufeff', 'é',
                          'x', '//', '1e999', '9' * 30])
TEXTS = st.lists(PIECES, max_size=25).map("".join)


def _outcome(f, s):
    """repr of the value (NaN, -0.0, 1 vs 1.0 and key order all show), or the error."""
    try:
        return "value", repr(f(s))
    except Exception as e:  # noqa: BLE001 - comparing which error, whatever it is
        return "error", type(e), str(e)


@settings(max_examples=200, deadline=None)
@given(VALUES, st.sampled_from([{}, {"indent": 1, "sort_keys": True}, {"separators": (",", ":")},
                                {"ensure_ascii": False}, {"indent": "\t"}]))
def test_documents_read_as_json_loads_reads_them(value, options):
    text = json.dumps(value, **options)
    assert _outcome(loads, text) == _outcome(json.loads, text)
    for encoding in ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
                     "utf-32-le", "utf-32-be"):
        data = text.encode(encoding, "surrogatepass")
        assert _outcome(loads, data) == _outcome(json.loads, data), encoding
    assert _outcome(loads, bytearray(text.encode())) == _outcome(json.loads, text.encode())


@settings(max_examples=600, deadline=None)
@given(TEXTS)
def test_any_text_gives_json_loads_value_or_error(text):
    assert _outcome(loads, text) == _outcome(json.loads, text)
    data = text.encode("utf-8", "surrogatepass")
    assert _outcome(loads, data) == _outcome(json.loads, data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=12))
def test_any_bytes_give_json_loads_value_or_error(data):
    assert _outcome(loads, data) == _outcome(json.loads, data)


@pytest.mark.parametrize("text", [
    "", " ", "{} x", "[1] ]", '{"a": 1}{"b": 2}', "1 2", "\ufeff{}", '{"a": 1,}', "[1,]",
    "{'a': 1}", '"\\x"', '"a\nb"', "01", "- 1", "[1 2]", '{"a" 1}', "tru", "nan",
])
def test_bad_json_is_a_value_error_with_json_loads_message(text):
    with pytest.raises(ValueError) as ours:
        loads(text)
    with pytest.raises(ValueError) as theirs:
        json.loads(text)
    assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value))


def test_other_types_are_refused_as_json_loads_refuses_them():
    for v in (None, 1, ["{}"]):
        assert _outcome(loads, v) == _outcome(json.loads, v)
        assert _outcome(loads, v)[1] is TypeError


def test_a_corrupt_index_is_one_store_error(tmp_path):
    (tmp_path / layout.TAGS).write_bytes(b'{"a": "b"} trailing')
    (tmp_path / layout.IMAGES).write_bytes(b"[1, 2]")
    with pytest.raises(ValueError, match="Extra data"):
        layout.read_index(str(tmp_path), layout.TAGS)
    with pytest.raises(ValueError, match="not an object"):
        layout.read_index(str(tmp_path), layout.IMAGES)
    assert layout.read_index(str(tmp_path), layout.LAYERS) == {}
    ix = Indexes(tmp_path, None, tmp_path)
    with pytest.raises(StoreError, match=r"tags\.json: corrupt store index \(Extra data"):
        ix.read(layout.TAGS)


def test_without_the_c_scanner_it_is_json_loads(monkeypatch):
    import cache.jsonread as jr
    monkeypatch.setattr(jr, "_scan", None)
    assert jr.loads(b'{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}
    with pytest.raises(ValueError, match="Extra data"):
        jr.loads("{} x")
