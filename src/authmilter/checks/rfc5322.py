"""Small RFC 5322 lexical helpers shared by the header parsers and writers."""
from __future__ import annotations

import re

# C0, DEL and C1 controls (U+0085 is NEL), and U+2028/U+2029: str.splitlines() and
# other Unicode-aware readers break lines at all of them, so none may reach a header.
_CTL_RUN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def one_line(text: str) -> str:
    """Remote text made safe inside a header we write: every run of control characters
    (CR and LF included, C1 controls and Unicode line separators too) becomes one space,
    bytes that were not UTF-8 (lone surrogates from a surrogateescape decode: no MTA can
    write them) become U+FFFD, and the ends are stripped."""
    if text.isprintable():  # the common case: nothing to replace
        return text.strip()
    return _SURROGATE.sub("\ufffd", _CTL_RUN.sub(" ", text)).strip()


def comment_text(text: str) -> str:
    """`one_line` text escaped to stand inside a comment ``( ... )`` (RFC 5322 §3.2.2)."""
    return one_line(text).replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def comment_end(text: str, i: int) -> int:
    """Index just past the comment opening at ``text[i] == "("`` (RFC 5322 §3.2.2:
    comments nest, backslash quotes the next character); -1 when it is unterminated."""
    depth, j, n = 1, i + 1, len(text)
    while j < n and depth:
        c = text[j]
        if c == "\\":
            j += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        j += 1
    return -1 if depth else j


def quoted_string(text: str, i: int) -> tuple[int, str]:
    """The quoted-string opening at ``text[i] == '"'`` (RFC 5322 §3.2.4): the index just
    past its closing quote and its content with quoted-pairs resolved; (-1, "") when it
    is unterminated."""
    out, j, n = [], i + 1, len(text)
    while j < n and text[j] != '"':
        if text[j] == "\\" and j + 1 < n:
            j += 1
        out.append(text[j])
        j += 1
    return (-1, "") if j >= n else (j + 1, "".join(out))
