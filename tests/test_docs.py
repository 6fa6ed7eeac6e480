"""The ```python blocks of README.md and docs/*.md run as written and print what their comments say.

Conventions (stated in docs/development.md, "Examples that run"):

- Every ```python block is self-contained: it runs on its own in a fresh namespace, in a
  fresh working directory, with nothing from the blocks before it.
- A line that calls ``print(...)`` and ends in a comment states the printed output: the comment
  text, continued by comment-only lines directly below it (their text is joined with spaces).
  Whitespace is normalised and ``...`` matches anything (doctest's ``ELLIPSIS``).
- A block that imports ``torch`` is skipped when torch is not importable.
- A block whose last statement is documented to raise ends with the comment
  ``# raises ExceptionName``; the exception's message must then match the next fenced block of
  the same file that starts with ``ExceptionName:`` (whitespace normalised).
"""

from __future__ import annotations

import ast
import builtins
import doctest
import importlib.util
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: the markdown files whose python blocks are executed: the README and every page of the site
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
_RAISES = re.compile(r"#\s*raises\s+(\w+)\s*$")
_CHECKER = doctest.OutputChecker()
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def fenced_blocks(text: str) -> list[tuple[str, int, str]]:
    """``(language, first line number, source)`` of every fenced block of a markdown text."""
    out = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start(2)) + 1
        out.append((m.group(1), line, m.group(2)))
    return out


def python_blocks(text: str) -> list[tuple[int, str]]:
    return [(line, src) for lang, line, src in fenced_blocks(text) if lang == "python"]


def expected_outputs(source: str) -> dict[int, str]:
    """Map the line of each ``print(...)`` statement with a trailing comment to that comment
    (continued by the comment-only lines right below it)."""
    tree = ast.parse(source)
    prints = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "print"
        ):
            prints[node.end_lineno] = node.lineno
    comments = {}
    code_lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = (tok.start[1], tok.string[1:].strip())
        elif tok.type not in (
            tokenize.NL,
            tokenize.NEWLINE,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        ):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    expected = {}
    for end, start in prints.items():
        if end not in comments:
            continue
        col, text = comments[end]
        parts, nxt = [text], end + 1
        while nxt in comments and nxt not in code_lines and comments[nxt][0] == col:
            parts.append(comments[nxt][1])
            nxt += 1
        expected[start] = " ".join(parts)
    return expected


_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def _number_close(want: str, got: str) -> bool:
    """``got`` equals ``want`` to the precision written in ``want`` (pytest's ``NUMBER``):
    half a unit in the last written digit, or 1e-13 relative for a full-precision repr."""
    w, g = float(want), float(got)
    mantissa, _, exponent = want.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    unit = 10.0 ** (int(exponent or 0) - decimals)
    return abs(g - w) <= max(0.5 * unit, 1e-13 * abs(w))


def _matches(expected: str, got: str) -> bool:
    """Doctest's ``ELLIPSIS`` and ``NORMALIZE_WHITESPACE``; without ``...``, numbers compare
    to the precision written (the last bits of a float depend on the BLAS kernel)."""
    if _CHECKER.check_output(expected + "\n", got + "\n", _FLAGS):
        return True
    if "..." in expected:
        return False
    want, have = " ".join(expected.split()), " ".join(got.split())
    if _NUMBER.split(want) != _NUMBER.split(have):
        return False
    return all(_number_close(w, g) for w, g in zip(_NUMBER.findall(want), _NUMBER.findall(have)))


def _error_after(text: str, block_line: int, name: str) -> str | None:
    """The first fenced block after ``block_line`` whose text starts with ``name:``."""
    for _lang, line, src in fenced_blocks(text):
        if line > block_line and src.lstrip().startswith(name + ":"):
            return src.strip()[len(name) + 1 :].strip()
    return None


TEXTS = {doc.relative_to(ROOT).as_posix(): doc.read_text(encoding="utf-8") for doc in DOCUMENTS}
BLOCKS = [(name, line, src) for name, text in TEXTS.items() for line, src in python_blocks(text)]


def test_documents_have_blocks():
    assert "README.md" in TEXTS and len(TEXTS) >= 10, sorted(TEXTS)  # the README and the site
    assert any(name == "README.md" for name, _, _ in BLOCKS)  # the README's one example
    assert len(BLOCKS) >= 10
    # the extractor sees every expected output the documents state
    assert sum(len(expected_outputs(src)) for _, _, src in BLOCKS) >= 6


@pytest.mark.parametrize("name,line,source", BLOCKS, ids=[f"{name}:{ln}" for name, ln, _ in BLOCKS])
def test_document_block(name, line, source, tmp_path, monkeypatch):
    if (
        re.search(r"^\s*(import torch|from torch)", source, re.M)
        or "minifim.oracle.torch" in source
    ):
        if importlib.util.find_spec("torch") is None:
            pytest.skip("the block needs torch")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    expected = expected_outputs(source)
    printed: dict[int, list[str]] = {}
    filename = f"{name}:{line}"

    def recording_print(*args, sep=" ", end="\n", file=None, flush=False):
        import sys

        if file is not None:
            return builtins.print(*args, sep=sep, end=end, file=file, flush=flush)
        frame = sys._getframe(1)
        at = frame.f_lineno if frame.f_code.co_filename == filename else -1
        printed.setdefault(at, []).append(sep.join(str(a) for a in args))
        return None

    last = source.rstrip().splitlines()[-1]
    raises = _RAISES.search(last)
    code = compile(source, filename, "exec")
    namespace = {"__name__": "__docs__", "print": recording_print}
    if raises:
        with pytest.raises(BaseException) as info:
            exec(code, namespace)
        assert type(info.value).__name__ == raises.group(1), info.value
        want = _error_after(TEXTS[name], line, raises.group(1))
        assert want is not None, f"no fenced block after line {line} shows the {raises[1]}"
        assert _matches(want, str(info.value)), (str(info.value), want)
    else:
        exec(code, namespace)
    for at, want in expected.items():
        assert at in printed, f"{filename}+{at - 1}: the print stating {want!r} never ran"
        got = "\n".join(printed[at])
        assert _matches(want, got), (
            f"{filename}+{at - 1}: printed {got!r}, the comment says {want!r}"
        )


def test_expected_outputs_convention():
    src = (
        "x = 1\nprint(x)   # 1\nprint(x + 1,\n      x)  # 2 1\nprint(x)  # a long\n"
        "          # message ...\ny = 2  # not a print\nprint(y)\n"
    )
    assert expected_outputs(src) == {2: "1", 3: "2 1", 5: "a long message ..."}
    assert _matches("a long message ...", "a  long\nmessage and more")
    assert not _matches("(39, 39)", "(44, 44)")
    assert _matches("got 0.0023716698754189616.", "got 0.0023716698754189577.")
    assert not _matches("got 0.0023716698754189616.", "got 0.0023716698754.")
    assert _matches("err 0.24, rel 1", "err 0.2427, rel 1")  # written to 2 decimals
    assert not _matches("err 0.24, rel 1", "err 0.2527, rel 1")


_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_relative_links_point_to_files(name):
    """Every relative markdown link of the README and the pages names a file that exists."""
    base = (ROOT / name).parent
    prose = _FENCE.sub("", TEXTS[name])
    broken = [
        target
        for target in _LINK.findall(prose)
        if not re.match(r"[a-z]+:", target)
        and not target.startswith("#")
        and not (base / target.split("#")[0]).exists()
    ]
    assert not broken, f"{name}: links to missing files: {broken}"
