"""Small RFC 5322 lexical helpers shared by the header parsers."""
from __future__ import annotations


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
