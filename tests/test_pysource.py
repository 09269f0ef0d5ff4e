"""Character labels from Python's tokenize, checked on hand-written snippets."""

from __future__ import annotations

import numpy as np

from talkgen.data.pysource import VOCAB, char_labels, decode, encode, load_split, split_labels


def _at(src: str, needle: str, label: str, nth: int = 0) -> list[int]:
    """The label values over the characters of the nth occurrence of ``needle``."""
    start = -1
    for _ in range(nth + 1):
        start = src.index(needle, start + 1)
    return char_labels(src)[label][start:start + len(needle)].tolist()


def test_triple_quoted_docstring_spans_lines():
    src = 'def f():\n    """Doc\n    more (text"""\n    return 1\n'
    assert _at(src, '"""Doc\n    more (text"""', "in_string") == [1] * len('"""Doc\n    more (text"""')
    assert _at(src, "return", "in_string") == [0] * 6
    # a bracket inside a string opens nothing
    assert _at(src, "return", "bracket_depth") == [0] * 6


def test_fstring_is_a_string_and_its_braces_are_not_brackets():
    src = 'x = f"{a} and {b!r}"\ny = (1)\n'
    assert _at(src, 'f"{a} and {b!r}"', "in_string") == [1] * len('f"{a} and {b!r}"')
    assert _at(src, 'f"{a} and {b!r}"', "bracket_depth") == [0] * len('f"{a} and {b!r}"')
    assert _at(src, "1", "bracket_depth") == [1]


def test_comment_with_quotes_inside():
    src = "x = 1  # it's a \"quote\" (not code)\ny = 'real'\n"
    comment = "# it's a \"quote\" (not code)"
    assert _at(src, comment, "in_comment") == [1] * len(comment)
    assert _at(src, comment, "in_string") == [0] * len(comment)
    assert _at(src, comment, "bracket_depth") == [0] * len(comment)
    assert _at(src, "'real'", "in_string") == [1] * 6
    assert _at(src, "'real'", "in_comment") == [0] * 6


def test_nested_brackets_count_depth():
    src = "f(a[b{c}], (d))\n"
    labels = char_labels(src)["bracket_depth"].tolist()
    #        f  (  a  [  b  {  c  }  ]  ,     (  d  )  )  \n
    assert labels == [0, 0, 1, 1, 2, 2, 3, 3, 2, 1, 1, 1, 2, 2, 1, 0]


def test_continuation_lines_keep_the_statement_indentation():
    src = "if x:\n    y = (1 +\n         2)\n    z = 3 + \\\n        4\nw = 0\n"
    lab = char_labels(src)
    assert _at(src, "2)", "indent_level") == [1, 1]          # inside brackets, next line
    assert _at(src, "4", "indent_level") == [1]              # after a backslash continuation
    assert _at(src, "w = 0", "indent_level") == [0] * 5
    assert _at(src, "4", "column") == [8]
    assert lab["column"][src.index("w")] == 0


def test_vocabulary_roundtrip():
    text = "def f(x):\n\treturn x  # ünïcode\n"
    tokens = encode(text)
    assert tokens.dtype == np.int64 and len(tokens) == len(text)
    assert decode(tokens) == text.replace("ü", "\ufffd").replace("ï", "\ufffd")
    assert set(VOCAB) >= set("()[]{}#'\" \n\t")


def test_stdlib_split_is_by_file_and_labels_align():
    train, test = load_split("train"), load_split("test")
    assert not set(train.files) & set(test.files)
    assert len(test.files) * 8 < len(train.files) < len(test.files) * 10
    labels = split_labels("test")
    assert all(len(v) == len(test.text) for v in labels.values())
    assert 0.05 < (labels["in_string"] == 1).mean() < 0.6
    assert labels["column"].max() > 70
