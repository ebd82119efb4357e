"""Find the real sender behind our own relays from the Received chain (RFC 5321 §4.4).

When the connecting client is one of our trusted relays, SPF must be evaluated for the
host that handed the message to our perimeter, not for the relay. Only Received headers
*added by trusted hosts* are believed: walking from the top, each header names the host
its writer received the message from; while that host is trusted, the next header down
was written by it and can be believed too. The first untrusted host named this way is the
answer. Headers further down were written by untrusted hosts and are never read, so a
sender cannot forge its way in by adding Received headers of its own.

Assumption: every trusted relay adds a Received header (all common MTAs do).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from ..domain import normalize_ip
from ..model import Message
from .rfc5322 import comment_end

__all__ = ["ReceivedFields", "first_untrusted_hop", "parse_received", "parse_received_from"]

_BRACKET_IP = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)(?:%[^\]]*)?\]", re.IGNORECASE)
# What the *client* said, inside the receiver's comment: Exim ``helo=NAME``, qmail
# ``(HELO name)``, Sendmail/others ``EHLO name``. These are attacker-chosen text and may
# be address literals; they are cut out before any address is read from a comment.
_HELO_PART = re.compile(r"\b(?:helo=|(?:HELO|EHLO)\s+)(\S+)", re.IGNORECASE)
_STOP = {"by", "via", "with", "id", "for"}


def _from_clause(value: str) -> tuple[str, list[str]] | None:
    """The "from" clause of a Received value: (first word or "", [comment texts]).

    Stops at the first clause keyword (by/with/id/for/via) or ";" outside comments.
    """
    text = " ".join(value.split())
    m = re.match(r"\s*from\s+", text, re.IGNORECASE)
    if not m:
        return None
    words, comments, _ = _clause(text, m.end())
    if not words and not comments:
        return None
    return (words[0] if words else ""), comments


def _clause(text: str, i: int) -> tuple[list[str], list[str], int]:
    """Words and comment texts of one clause starting at *i* of single-spaced *text*,
    and the index where it ends: the next clause keyword, a ";" outside comments, or the end."""
    n = len(text)
    words: list[str] = []
    comments: list[str] = []
    while i < n:
        c = text[i]
        if c == " ":
            i += 1
        elif c == "(":
            j = comment_end(text, i)
            if j < 0:  # unterminated: the rest of the line is the comment
                j = n
            comments.append(text[i + 1:j - 1])
            i = j
        elif c == ";":
            break
        else:
            j = i
            while j < n and text[j] not in " (;":
                j += 1
            word = text[i:j]
            if word.lower() in _STOP:
                break
            words.append(word)
            i = j
    return words, comments, i


def _comment_ips(comment: str) -> list[str]:
    """Addresses the receiving MTA wrote in one comment, without the client's HELO text."""
    text = _HELO_PART.sub(" ", comment)
    found = [ip for ip in (normalize_ip(m.group(1)) for m in _BRACKET_IP.finditer(text)) if ip]
    if not found:
        bare = normalize_ip(text.strip())   # Microsoft: "(198.51.100.7)"
        if bare:
            found.append(bare)
    return found


def parse_received_from(value: bytes | str) -> tuple[str, str] | None:
    """(ip, helo) of the sending host named in one Received header, or None.

    The address must be the one the *receiving* MTA recorded for the TCP peer, never
    text the client chose (RFC 5321 §4.4: the "from" clause holds the client's HELO as
    a name, followed by the TCP information in a comment). Formats read:

    * Postfix/Sendmail ``from HELO (rdns [IP])`` (``[IPv6:...]``, ``unknown``): the HELO
      word may itself be an address literal; the comment's address wins.
    * Exim ``from rdns ([IP]:port helo=HELO)`` and ``from [IP] (port=N helo=HELO)``:
      ``helo=`` text is cut out; without an address left in a comment, a leading
      ``[IP]`` is Exim's own record of the peer (Exim writes that word, not the HELO).
    * Microsoft ``from HELO (IP)`` and ``from (HELO) (IP)``: the last address comment.
    * qmail ``from rdns (HELO name) (IP)``.

    When several comments carry addresses the last one is taken: receivers write the
    peer's address after the names the client presented.
    """
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    clause = _from_clause(text)
    if clause is None:
        return None
    return _peer(*clause)


def _peer(first: str, comments: list[str]) -> tuple[str, str] | None:
    """(ip, helo) from a parsed "from" clause: the rules `parse_received_from` documents."""
    ip = None
    for comment in comments:
        found = _comment_ips(comment)
        if found:
            ip = found[-1]
    if ip is None:
        literal = _BRACKET_IP.fullmatch(first)   # Exim without reverse DNS: "from [IP] (helo=...)"
        if literal:
            ip = normalize_ip(literal.group(1))
    if ip is None:
        return None
    helo = first
    for comment in comments:
        kv = _HELO_PART.search(comment)
        if kv:
            helo = kv.group(1).rstrip(")")
            break
    return ip, helo


@dataclass(frozen=True, slots=True)
class ReceivedFields:
    """Every clause of one Received header (RFC 5321 §4.4 Stamp), as its writer recorded it.

    ``from_ip``/``helo`` follow `parse_received_from` exactly (the peer address the
    receiver recorded, never the client's HELO literal). Names are text as written,
    not validated: this is for reading a path (``authmilter analyze``), not for trust.
    """

    from_name: str = ""             # first word of the "from" clause (HELO or verified name)
    from_ip: str | None = None
    helo: str = ""
    rdns: str = ""                  # reverse-DNS name the receiver recorded, "" if none/unknown
    by_name: str = ""
    by_ip: str | None = None
    via: str = ""
    protocol: str = ""              # the "with" clause: ESMTPS, esmtpsa, Microsoft SMTP Server...
    id: str = ""
    recipient: str = ""             # the "for" clause, without angle brackets
    date_text: str = ""
    date: datetime | None = None    # None when absent or unreadable
    comments: tuple[str, ...] = ()  # every comment after the "from" clause (software, TLS...)


_KEYWORDS = ("from", "by", "via", "with", "id", "for")
_NAME_BEFORE_IP = re.compile(r"^([^\s\[\]()]+)\s+\[")


def _rdns(first: str, comments: list[str]) -> str:
    """The reverse-DNS name in a "from" clause: Postfix/Sendmail write it before the
    bracketed address in the comment; Exim and qmail put it first and the client's HELO
    inside the comment."""
    for comment in comments:
        m = _NAME_BEFORE_IP.match(comment)
        if m:
            return "" if m.group(1).lower() == "unknown" else m.group(1)
    if first and not first.startswith("[") and normalize_ip(first) is None:
        if any(c.startswith("[") or _HELO_PART.search(c) for c in comments):
            return first
    return ""


def _date(text: str) -> datetime | None:
    try:
        return parsedate_to_datetime(text) if text else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_received(value: bytes | str) -> ReceivedFields:
    """All clauses of a Received value; fields the header lacks stay empty.

    Clauses may come in any order (RFC 5321 §4.4 allows extended clauses; Microsoft
    writes ``with Microsoft SMTP Server id 15.1.587.13 via Frontend Transport``); the
    first of each kind counts. Everything after the first ";" outside comments is the
    date. Unknown words are skipped, so any text yields a value in linear time.
    """
    text = " ".join((value.decode("utf-8", "replace") if isinstance(value, bytes) else value).split())
    parts: dict[str, tuple[list[str], list[str]]] = {}
    extra: list[str] = []
    date_text = ""
    i, n = 0, len(text)
    while i < n:
        if text[i] == " ":
            i += 1
            continue
        if text[i] == ";":
            date_text = text[i + 1:].strip()
            break
        j = i
        while j < n and text[j] not in " (;":
            j += 1
        key = text[i:j].lower()
        if key in _KEYWORDS:
            words, comments, end = _clause(text, j)
            parts.setdefault(key, (words, comments))
        else:   # stray words or comments: keep the comments (software), skip the rest
            words, comments, end = _clause(text, i)
        if key not in ("from",):
            extra += comments
        i = max(end, i + 1)
    first = ""
    from_comments: list[str] = []
    if "from" in parts:
        words, from_comments = parts["from"]
        first = words[0] if words else ""
    peer = _peer(first, from_comments) if "from" in parts else None
    by_words, by_comments = parts.get("by", ([], []))
    by_name = by_words[0] if by_words else ""
    by_ip = normalize_ip(by_name.strip("[]").removeprefix("IPv6:")) if by_name else None
    for comment in by_comments:
        found = _comment_ips(comment)
        if found:
            by_ip = found[-1]
    with_words = parts.get("with", ([], []))[0]
    protocol = with_words[0] if with_words else ""
    if [w.lower() for w in with_words[:3]] == ["microsoft", "smtp", "server"]:
        protocol = "Microsoft SMTP Server"
    return ReceivedFields(
        from_name=first, from_ip=peer[0] if peer else None, helo=peer[1] if peer else first,
        rdns=_rdns(first, from_comments), by_name=by_name, by_ip=by_ip,
        via=" ".join(parts.get("via", ([], []))[0]), protocol=protocol,
        id=(parts.get("id", ([], []))[0] or [""])[0],
        recipient=(parts.get("for", ([], []))[0] or [""])[0].strip("<>"),
        date_text=date_text, date=_date(date_text), comments=tuple(extra))


def first_untrusted_hop(message: Message, trusted: Callable[[str], bool]) -> tuple[str, str] | None:
    """(ip, helo) of the first host in the Received chain for whose address *trusted*
    (e.g. the ``contains_ip`` of the relays' host list) says no.

    The caller knows the connecting client is trusted. None when the chain cannot tell:
    a believed header without a parsable "from" clause and address, or a chain that ends
    while every named host is still trusted (the message originated inside).
    """
    for value in message.get_all("Received"):
        hop = parse_received_from(value)
        if hop is None:
            return None
        if not trusted(hop[0]):
            return hop
    return None
