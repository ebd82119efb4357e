"""Reading whole Authentication-Results verdicts (RFC 8601 §2.2, RFC 8617 §4.1.1, RFC 7208 §9.1).

Lenient readers of what other hosts wrote: `parse_authres` for Authentication-Results
and ARC-Authentication-Results values, `parse_received_spf` for Received-SPF. They
never raise. Used by ``authmilter analyze`` (offline) and by the ARC check, which
reads each ARC set's AAR verdicts for the trusted-sealer rule: nothing here decides
whether a header may be trusted; the caller does (by authserv-id or by a verified seal).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .rfc5322 import comment_end, quoted_string

__all__ = ["ParsedAuthres", "ParsedResinfo", "parse_authres", "parse_received_spf"]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class ParsedResinfo:
    """One verdict read from a header: ``method=result``, its comments, reason and
    properties (RFC 8601 §2.2 resinfo; RFC 7208 §9.1 Received-SPF key-value pairs)."""

    method: str
    result: str
    reason: str = ""
    comments: tuple[str, ...] = ()
    props: tuple[tuple[str, str], ...] = ()

    def prop(self, *keys: str) -> str:
        """The first non-empty value among *keys* (case-insensitive), or ""."""
        wanted = [k.lower() for k in keys]
        for want in wanted:
            for key, value in self.props:
                if key.lower() == want and value:
                    return value
        return ""


@dataclass(frozen=True, slots=True)
class ParsedAuthres:
    authserv_id: str | None
    instance: int | None                    # ARC-Authentication-Results i= (RFC 8617 §4.1.1)
    results: tuple[ParsedResinfo, ...]


def _segments(text: str) -> list[tuple[list[str], list[str]]]:
    """``;``-separated segments of *text*, each as (words, comment texts). Quoted strings
    join the word they stand in (``reason="x y"`` is one word ``reason=x y``); an
    unterminated comment or quote runs to the end. Linear in the length of *text*."""
    out: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    comments: list[str] = []
    word: list[str] | None = None
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "(":
            j = comment_end(text, i)
            j = n if j < 0 else j
            comments.append(" ".join(text[i + 1:j - 1].split()))
            i = j
            if word is not None:
                words.append("".join(word))
                word = None
            continue
        if c == '"':
            end, content = quoted_string(text, i)
            if end < 0:
                end, content = n, text[i + 1:]
            if word is None:
                word = []
            word.append(content)   # append, never rebuild: linear in the word's length
            i = end
            continue
        if c in " \t\r\n;":
            if word is not None:
                words.append("".join(word))
                word = None
            if c == ";":
                out.append((words, comments))
                words, comments = [], []
            i += 1
            continue
        if word is None:
            word = []
        word.append(c)
        i += 1
    if word is not None:
        words.append("".join(word))
    out.append((words, comments))
    return out


_RESINFO = re.compile(r"([A-Za-z0-9_.-]+)(?:/[0-9]+)?=(.*)", re.DOTALL)


def _resinfo(words: list[str], comments: list[str]) -> ParsedResinfo:
    m = _RESINFO.fullmatch(words[0])
    assert m is not None
    reason, props = "", []
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq:
            continue
        if key.lower() == "reason":
            reason = value
        else:
            props.append((key, value))
    return ParsedResinfo(m.group(1).lower(), m.group(2).lower(), reason, tuple(comments), tuple(props))


def parse_authres(value: bytes | str) -> ParsedAuthres:
    """Every resinfo in an Authentication-Results (or ARC-Authentication-Results) value.

    Lenient where real writers stray from RFC 8601 §2.2: Microsoft 365 puts the
    authserv-id after the first resinfo and repeats it between them, so any segment that
    is a single bare word counts as the authserv-id (the first one wins), and segments
    that are neither are skipped. Never raises."""
    instance: int | None = None
    authserv: str | None = None
    results: list[ParsedResinfo] = []
    for words, comments in _segments(_text(value)):
        if not words:
            continue
        if instance is None and not results and authserv is None and words[0].lower().startswith("i="):
            digits = words[0][2:]
            instance = int(digits) if digits.isdigit() and len(digits) < 6 else None
            continue
        if _RESINFO.fullmatch(words[0]) and "." not in words[0].partition("=")[0]:
            results.append(_resinfo(words, comments))
        elif len(words) == 1 and "=" not in words[0] and authserv is None:
            authserv = words[0]
    return ParsedAuthres(authserv, instance, tuple(results))


def parse_received_spf(value: bytes | str) -> ParsedResinfo:
    """A Received-SPF value (RFC 7208 §9.1): ``result (comment) key=value; ...`` as an
    ``spf`` resinfo whose properties are the key-value pairs (client-ip, helo,
    envelope-from, receiver...). A value without a result word gives result ""."""
    result, comments, props = "", [], []
    for n, (words, segment_comments) in enumerate(_segments(_text(value))):
        comments += segment_comments
        for k, word in enumerate(words):
            key, eq, val = word.partition("=")
            if eq:
                props.append((key, val))
            elif n == 0 and k == 0:
                result = word.lower()
    return ParsedResinfo("spf", result, "", tuple(comments), tuple(props))
