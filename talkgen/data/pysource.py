"""The Python standard library's own source text, and ground-truth labels for every character.

Text: the running interpreter's top-level ``Lib/*.py`` files in sorted order (files that are not
UTF-8 or do not tokenize are left out and listed). Every 10th file is held out for testing, so
the split is by file. The text differs a little between Python versions; the card records the
file list and a hash, and evaluation works on whatever text this machine has.

Labels come from Python's own ``tokenize`` module plus simple counters:
``in_string`` (inside any string literal, docstrings and f-strings included), ``in_comment``,
``bracket_depth`` (brackets opened and not yet closed before the character; a closing bracket
still counts its own pair), ``indent_level`` (the INDENT/DEDENT level of the logical line the
character belongs to; continuation lines keep their statement's level), ``column`` (characters
since the last newline).
"""

from __future__ import annotations

import hashlib
import io
import sysconfig
import tokenize
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

# A fixed vocabulary (independent of the text): printable ASCII, newline, tab, then "other".
VOCAB = "\n\t" + "".join(chr(c) for c in range(32, 127))
OTHER = len(VOCAB)
VOCAB_SIZE = len(VOCAB) + 1
_INDEX = {c: i for i, c in enumerate(VOCAB)}
LABELS = ("in_string", "in_comment", "bracket_depth", "indent_level", "column")
BINARY_LABELS = ("in_string", "in_comment")
TEST_EVERY = 10


_TABLE = np.full(128, OTHER, dtype=np.int64)
for _i, _c in enumerate(VOCAB):
    _TABLE[ord(_c)] = _i


def encode(text: str) -> np.ndarray:
    """Token ids (int64), one per character; anything outside the vocabulary maps to OTHER."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.where(points < 128, _TABLE[np.minimum(points, 127)], OTHER)


def decode(tokens: np.ndarray) -> str:
    return "".join(VOCAB[t] if t < OTHER else "\ufffd" for t in tokens)


def char_labels(source: str) -> dict[str, np.ndarray]:
    """Per-character ground truth for one Python source text (see the module docstring).

    Raises ``tokenize.TokenError`` or ``SyntaxError`` on text that does not tokenize.
    """
    n = len(source)
    line_starts = [0]
    for i, ch in enumerate(source):
        if ch == "\n":
            line_starts.append(i + 1)

    def offset(pos: tuple[int, int]) -> int:
        row, col = pos
        return line_starts[row - 1] + col if row - 1 < len(line_starts) else n

    in_string = np.zeros(n, dtype=bool)
    in_comment = np.zeros(n, dtype=bool)
    depth_delta = np.zeros(n + 1, dtype=np.int64)
    line_level = np.zeros(len(line_starts) + 1, dtype=np.int64)
    level_change_at_row: dict[int, int] = {}
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    string_types = {tokenize.STRING} | {getattr(tokenize, n) for n in ("FSTRING_START", "FSTRING_MIDDLE",
                                                                      "FSTRING_END") if hasattr(tokenize, n)}
    fstring_open: list[int] = []
    for tok in tokens:
        a, b = offset(tok.start), offset(tok.end)
        if tok.type == tokenize.STRING:
            in_string[a:b] = True
        elif tok.type in string_types:  # Python >= 3.12 splits f-strings into pieces
            if tok.type == getattr(tokenize, "FSTRING_START", -1):
                fstring_open.append(a)
            elif tok.type == getattr(tokenize, "FSTRING_END", -1) and fstring_open:
                in_string[fstring_open.pop():b] = True
        elif tok.type == tokenize.COMMENT:
            in_comment[a:b] = True
        elif tok.type == tokenize.OP and tok.string in "([{" and not fstring_open:
            depth_delta[a + 1] += 1
        elif tok.type == tokenize.OP and tok.string in ")]}" and not fstring_open:
            depth_delta[b] -= 1
        elif tok.type == tokenize.INDENT:
            level_change_at_row[tok.start[0]] = level_change_at_row.get(tok.start[0], 0) + 1
        elif tok.type == tokenize.DEDENT:
            level_change_at_row[tok.start[0]] = level_change_at_row.get(tok.start[0], 0) - 1
    depth = np.cumsum(depth_delta)[:n]
    # Indentation: a logical line's level holds until the next INDENT/DEDENT row.
    level = 0
    for row in range(1, len(line_starts) + 1):
        level += level_change_at_row.get(row, 0)
        line_level[row] = level
    rows = np.searchsorted(np.array(line_starts), np.arange(n), side="right")  # 1-based row per char
    indent = line_level[rows]
    starts = np.array(line_starts)[rows - 1]
    column = np.arange(n) - starts
    return {"in_string": in_string, "in_comment": in_comment, "bracket_depth": depth,
            "indent_level": indent, "column": column}


@dataclass(frozen=True)
class PySource:
    """Concatenated text of one split, its tokens, and where it came from."""

    text: str
    tokens: np.ndarray  # (n_chars,) int64
    files: tuple[str, ...]
    skipped: tuple[str, ...]
    sha256: str
    starts: tuple[int, ...]  # offset of each file in ``text``


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _chosen(split: str) -> list[Path]:
    if split not in ("train", "test"):
        raise ValueError("split must be 'train' or 'test'")
    files = sorted(stdlib_dir().glob("*.py"))
    return [f for i, f in enumerate(files) if (i % TEST_EVERY == TEST_EVERY - 1) == (split == "test")]


@lru_cache(maxsize=2)
def load_split(split: str) -> PySource:
    """``split`` is "train" (9 of every 10 files) or "test" (every 10th file, sorted by name).

    Files that are not UTF-8 are left out (listed in ``skipped``).
    """
    texts, kept, skipped, starts = [], [], [], []
    offset = 0
    for f in _chosen(split):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            skipped.append(f.name)
            continue
        texts.append(text)
        kept.append(f.name)
        starts.append(offset)
        offset += len(text)
    text = "".join(texts)
    return PySource(text=text, tokens=encode(text), files=tuple(kept), skipped=tuple(skipped),
                    sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), starts=tuple(starts))


@lru_cache(maxsize=2)
def split_labels(split: str) -> dict[str, np.ndarray]:
    """:func:`char_labels` of every file of the split, concatenated to align with its text."""
    src = load_split(split)
    ends = src.starts[1:] + (len(src.text),)
    parts = []
    for a, b in zip(src.starts, ends):
        try:
            parts.append(char_labels(src.text[a:b]))
        except (SyntaxError, tokenize.TokenError):  # a file this tokenizer rejects: labels unknown (-1)
            parts.append({k: np.full(b - a, -1, dtype=np.int64) for k in LABELS})
    return {k: np.concatenate([p[k].astype(np.int64) for p in parts]) for k in LABELS}
