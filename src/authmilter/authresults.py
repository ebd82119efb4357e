"""Authentication-Results (RFC 8601): render ours, find forged ones claiming our id.

Rendering is generic: any check result presents itself as a `ResInfo` (method, result,
reason, comment, properties) and this module turns a list of them into one header value.
Every string that may carry remote data (reasons, comments, property values) is quoted
or escaped and stripped of control characters, so no result can inject header syntax.

Parsing for the mail path is deliberately narrow: we only need an existing header's
authserv-id, to remove every header that claims to be ours (RFC 8601 §5) — including
broken ones that still start with our id, since a downstream reader might accept what we
cannot parse. `parse_authres` and `parse_received_spf` (checks/authres.py) read whole
verdicts leniently, for ``authmilter analyze`` and the ARC check's AAR verdicts.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from .checks.authres import ParsedAuthres, ParsedResinfo, parse_authres, parse_received_spf
from .checks.rfc5322 import comment_end, comment_text, one_line, quoted_string
from .model import header_key
from .results import ResInfo

# The lenient readers live with the checks (the ARC check reads AARs with them).
__all__ = ["ParsedAuthres", "ParsedResinfo", "authserv_id_of", "forged_indices", "parse_authres",
           "parse_received_spf", "received_spf_indices", "render", "render_aar", "resubmitted_aar"]

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
    return _render(" " + _value(authserv_id) + ";", results)


def render_aar(instance: int, authserv_id: str, results: Sequence[ResInfo]) -> str:
    """The ARC-Authentication-Results value of ARC set *instance* carrying the same
    verdicts as `render` (RFC 8617 §4.1.1: ``i=N;`` then an Authentication-Results
    payload): ``" i=1; id;\\r\\n\\tspf=pass ..."``, the same resinfo lines as our header."""
    if not 1 <= instance <= 50:
        raise ValueError(f"ARC instance {instance} is not 1 to 50")
    return _render(f" i={instance}; " + _value(authserv_id) + ";", results)


def resubmitted_aar(instance: int, authres_value: bytes | str) -> str:
    """An ARC-Authentication-Results for set *instance* carrying an Authentication-Results
    we wrote on an earlier pass (mail re-submitted by our own list software or hosts): its
    value as it stands, line ends normalised to CRLF + tab and control characters gone,
    after ``i=N;``. The caller has checked that the header is ours (`authserv_id_of`)."""
    if not 1 <= instance <= 50:
        raise ValueError(f"ARC instance {instance} is not 1 to 50")
    lines = [one_line(line) for line in re.split(r"\r\n|\r|\n", _text(authres_value))]
    payload = "\r\n\t".join(line for line in lines if line)
    return f" i={instance}; " + (payload or "none")


def _render(head: str, results: Sequence[ResInfo]) -> str:
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
