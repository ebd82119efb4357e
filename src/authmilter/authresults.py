"""Authentication-Results (RFC 8601): render ours, find forged ones claiming our id.

Rendering is generic: any check result presents itself as a `ResInfo` (method, result,
reason, comment, properties) and this module turns a list of them into one header value.
Every string that may carry remote data (reasons, comments, property values) is quoted
or escaped and stripped of control characters, so no result can inject header syntax.

Parsing for the mail path is deliberately narrow: we only need an existing header's
authserv-id, to remove every header that claims to be ours (RFC 8601 §5) — including
broken ones that still start with our id, since a downstream reader might accept what we
cannot parse. `parse_authres` and `parse_received_spf` read whole verdicts leniently, for
``authmilter analyze``; nothing on the mail path trusts what they return.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .checks.rfc5322 import comment_end, comment_text, one_line, quoted_string
from .model import header_key
from .results import ResInfo

__all__ = ["ParsedAuthres", "ParsedResinfo", "authserv_id_of", "forged_indices", "parse_authres",
           "parse_received_spf", "received_spf_indices", "render"]

# RFC 2045 token: no SPACE, CTLs or tspecials. Non-ASCII is allowed (RFC 6532).
_TOKEN = re.compile(r'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]+')
_DOMAIN = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_MAX_REASON = 256
_WIDTH = 78


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(text: str) -> str:
    """RFC 8601 value: a token when possible, else a quoted-string."""
    text = one_line(text)
    return text if _TOKEN.fullmatch(text) else _quoted(text)


def _pvalue(text: str) -> str:
    """RFC 8601 §2.2 pvalue: a value, or [local-part] "@" domain-name unquoted."""
    text = one_line(text)
    if _TOKEN.fullmatch(text):
        return text
    local, at, domain = text.rpartition("@")
    if at and _DOMAIN.fullmatch(domain) and (not local or _LOCAL.fullmatch(local)):
        return text
    return _quoted(text)


def _resinfo_tokens(info: ResInfo) -> list[str]:
    # Emptiness is judged after cleaning: remote text of only control characters or
    # spaces would otherwise render as reason="" or a property with an empty value,
    # which strict readers (authres, and so dkimpy's ARC sealing downstream) refuse.
    tokens = [f"{one_line(info.method)}={one_line(info.result.value)}"]
    escaped = comment_text(info.comment)
    if escaped:
        tokens += f"({escaped})".split()
    reason = one_line(info.reason)
    if reason:
        if len(reason) > _MAX_REASON:
            reason = reason[:_MAX_REASON - 3] + "..."
        tokens.append(f"reason={_quoted(reason)}")
    for key, val in info.props:
        value = one_line(val)
        if value:
            tokens.append(f"{one_line(key)}={_pvalue(value)}")
    return tokens


def render(authserv_id: str, results: Sequence[ResInfo]) -> str:
    """The Authentication-Results value: ``" id;\\r\\n\\tspf=pass ...;\\r\\n\\tdkim=..."``.

    One resinfo per line; a line longer than 78 characters is folded between tokens
    (comments may break between words; quoted strings never do). ``" id; none"`` when
    there are no results (RFC 8601 §2.2).
    """
    head = " " + _value(authserv_id) + ";"
    if not results:
        return head + " none"
    lines = []
    for n, info in enumerate(results):
        tokens = _resinfo_tokens(info)
        if n < len(results) - 1:
            tokens[-1] += ";"
        line, width = "", 8
        for i, tok in enumerate(tokens):
            if i and width + 1 + len(tok) > _WIDTH:
                line += "\r\n\t" + tok
                width = 8 + len(tok)
            else:
                line += (" " if i else "") + tok
                width += (1 if i else 0) + len(tok)
        lines.append(line)
    return head + "".join("\r\n\t" + line for line in lines)


# ---------------------------------------------------------------------------
# reading existing headers


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def authserv_id_of(value: bytes | str) -> str | None:
    """The authserv-id of an Authentication-Results value (RFC 8601 §2.2), or None when
    the value does not start with one (after CFWS). Whatever follows is not examined."""
    text = _text(value)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c == "(":
            i = comment_end(text, i)
            if i < 0:
                return None
        else:
            break
    if i >= n:
        return None
    if text[i] == '"':
        end, content = quoted_string(text, i)
        return content if end > 0 and content else None
    m = _TOKEN.match(text, i)
    return m.group(0) if m else None


def _loose_ids(value: bytes | str) -> list[str]:
    """For values we cannot parse (an unterminated comment or quote): every word before
    the first ";" — a lenient reader could take any of them for the authserv-id."""
    head = _text(value).split(";", 1)[0]
    return re.findall(r"[^\s;()\"'\\]+", head)


def _norm(authserv_id: str) -> str:
    return one_line(authserv_id).lower().rstrip(".")


def _is_ours(candidate: str, ours: str) -> bool:
    c = _norm(candidate)
    return bool(c) and (c == ours or c.endswith("." + ours))


def forged_indices(headers: Sequence[tuple[bytes, bytes]], authserv_id: str) -> list[int]:
    """1-based occurrence indices, among Authentication-Results headers in arrival order,
    of every header whose authserv-id is *authserv_id* (case-insensitive) or a host
    under it. Unparsable headers that name our id before their first ";" count as ours
    (removing a broken header is harmless; keeping a forged one is not). Ascending;
    delete from the highest down (OpenDKIM CVE-2022-48521)."""
    ours = _norm(authserv_id)
    if not ours:
        return []
    out, index = [], 0
    for name, value in headers:
        if header_key(name) != b"authentication-results":
            continue
        index += 1
        found = authserv_id_of(value)
        candidates = [found] if found is not None else _loose_ids(value)
        if any(_is_ours(c, ours) for c in candidates):
            out.append(index)
    return out


_RECEIVER = re.compile(r'(?:^|[;\s])receiver\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;]+)', re.IGNORECASE)


def received_spf_indices(headers: Sequence[tuple[bytes, bytes]], trusted_ids: Sequence[str] = ()) -> list[int]:
    """1-based occurrence indices of the Received-SPF headers to remove: every one whose
    ``receiver=`` (RFC 7208 §9.1) is not one of *trusted_ids* (or a host under one).
    Upstream SPF verdicts are never trusted otherwise (CVE-2019-20790); our own id must
    not be in *trusted_ids*, since a Received-SPF claiming it before we add ours is forged."""
    trusted = [t for t in (_norm(x) for x in trusted_ids) if t]
    out, index = [], 0
    for name, value in headers:
        if header_key(name) != b"received-spf":
            continue
        index += 1
        m = _RECEIVER.search(_text(value))
        receiver = m.group(1).strip('"') if m else ""
        if not any(_is_ours(receiver, t) for t in trusted):
            out.append(index)
    return out


# ---------------------------------------------------------------------------
# reading whole verdicts (offline analysis)


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
            word = (word or []) + [content]
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
        word = (word or []) + [c]
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
