"""The RFC5322.From header as DMARC needs it: exactly one header, one Author Domain.

OpenDMARC CVE-2019-16378 and CVE-2021-34555 came from From headers it could not read
the way the MUA does (several addresses, several headers, odd syntax) and then skipped
DMARC. Here anything ambiguous is a *defined* failure (``FromResult(ok=False)``) that
the policy acts on, never a bypass:

* no From header (``missing=True``), or more than one (RFC 5322 §3.6 allows one);
* group syntax, an address without a domain, a domain literal, an invalid domain;
* mailboxes of more than one domain (RFC 9989 §5.3.1 / §11.5).

Several mailboxes of the *same* domain are accepted: RFC 9989 §5.3.1 counts Author
Domains, and with one domain the policy that applies is unambiguous.

The parser is a small RFC 5322 §3.4 tokenizer, not a lenient "find the @" scan: comments
and quoted strings are consumed as units, so a display name such as
``"ceo@bank.example" <x@attacker.example>`` or an RFC 2047 encoded word can never be
mistaken for the address. A display name containing specials other than "." (obs-phrase)
is refused rather than guessed at, because MUAs disagree on what it means.
"""
from __future__ import annotations

from ..domain import DomainError, normalize_domain
from ..model import Message
from ..results import FromResult
from .rfc5322 import comment_end, quoted_string

__all__ = ["parse_from"]

_SPECIALS = set('()<>[]:;@\\,."')
_WSP = set(" \t\r\n")


class _Syntax(Exception):
    """A From header we will not interpret."""


def _tokens(text: str) -> list[tuple[str, str]]:
    """RFC 5322 lexical tokens with CFWS removed: ("atom"|"qs"|"lit"|special, text)."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _WSP:
            i += 1
        elif c == "(":
            i = comment_end(text, i)
            if i < 0:
                raise _Syntax("unterminated comment")
        elif c == '"':
            i, content = quoted_string(text, i)
            if i < 0:
                raise _Syntax("unterminated quoted string")
            out.append(("qs", content))
        elif c == "[":
            j = text.find("]", i)
            if j < 0:
                raise _Syntax("unterminated domain literal")
            out.append(("lit", text[i:j + 1]))
            i = j + 1
        elif c in _SPECIALS:
            out.append((c, c))
            i += 1
        else:
            j = i
            while j < n and text[j] not in _SPECIALS and text[j] not in _WSP:
                if ord(text[j]) < 0x20 or ord(text[j]) == 0x7F or 0xD800 <= ord(text[j]) <= 0xDFFF:
                    raise _Syntax("control or undecodable character")
                j += 1
            out.append(("atom", text[i:j]))
            i = j
    return out


def _split_top(tokens: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Split an address-list at commas outside angle brackets (obs-route has commas)."""
    parts: list[list[tuple[str, str]]] = [[]]
    depth = 0
    for tok in tokens:
        if tok[0] == "<":
            depth += 1
        elif tok[0] == ">":
            depth -= 1
        if tok[0] == "," and depth == 0:
            parts.append([])
        else:
            parts[-1].append(tok)
    return [p for p in parts if p]   # obs-mbox-list allows empty elements


def _dotted(tokens: list[tuple[str, str]], words: tuple[str, ...]) -> bool:
    """word *("." word): CFWS may separate the tokens, but two words need a dot."""
    if not tokens or len(tokens) % 2 == 0:
        return False
    return all(t[0] in words if i % 2 == 0 else t[0] == "." for i, t in enumerate(tokens))


def _addr_spec(tokens: list[tuple[str, str]]) -> tuple[str, str]:
    """local-part "@" domain -> (local, domain) with the domain normalised."""
    ats = [i for i, t in enumerate(tokens) if t[0] == "@"]
    if len(ats) != 1:
        raise _Syntax("no address" if not ats else "more than one @ in an address")
    local, dom = tokens[:ats[0]], tokens[ats[0] + 1:]
    if not _dotted(local, ("atom", "qs")):
        raise _Syntax("invalid local part")
    if len(dom) == 1 and dom[0][0] == "lit":
        raise _Syntax("domain literal instead of a domain name")
    if dom and dom[-1][0] == ".":
        dom = dom[:-1]   # one trailing dot: the absolute form of the same name
    if not _dotted(dom, ("atom",)):
        raise _Syntax("invalid domain")
    name = "".join(t[1] for t in dom)
    try:
        # RFC 5322 atext and DNS both allow "_" (rspamd's DMARC cases use foo@zero_pct.com);
        # a domain that exists in DNS must get its DMARC evaluation, not a bad-From verdict.
        domain = normalize_domain(name, allow_underscore=True)
    except DomainError as exc:
        raise _Syntax(f"invalid domain: {exc}") from None
    return "".join(f'"{t[1]}"' if t[0] == "qs" else t[1] for t in local), domain


def _mailbox(tokens: list[tuple[str, str]]) -> tuple[str, str]:
    kinds = [t[0] for t in tokens]
    outside = kinds[:kinds.index("<")] if "<" in kinds else kinds
    if ":" in outside or ";" in kinds:
        raise _Syntax("group syntax")
    if "<" not in kinds and ">" not in kinds:
        return _addr_spec(tokens)
    if kinds.count("<") != 1 or kinds.count(">") != 1 or kinds.index(">") < kinds.index("<"):
        raise _Syntax("unbalanced angle brackets")
    lt, gt = kinds.index("<"), kinds.index(">")
    if gt != len(tokens) - 1:
        raise _Syntax("text after the address")
    if any(k not in ("atom", "qs", ".") for k in kinds[:lt]):
        raise _Syntax("invalid display name")
    inner = tokens[lt + 1:gt]
    # obs-route: "@a,@b:" before the address
    colons = [i for i, t in enumerate(inner) if t[0] == ":"]
    if colons:
        inner = inner[colons[-1] + 1:]
    return _addr_spec(inner)


def parse_from(message: Message) -> FromResult:
    """Extract the Author Domain (RFC 9989 §5.3.1) or say precisely why there is none."""
    values = message.get_all("From")
    if not values:
        return FromResult(ok=False, error="no From header", missing=True)
    if len(values) > 1:
        return FromResult(ok=False, error=f"{len(values)} From headers")
    text = values[0].decode("utf-8", "surrogateescape")
    try:
        groups = _split_top(_tokens(text))
        if not groups:
            raise _Syntax("no address")
        boxes = [_mailbox(g) for g in groups]
    except _Syntax as exc:
        return FromResult(ok=False, error=f"unusable From header: {exc}")
    domains = sorted({d for _, d in boxes})
    address = f"{boxes[0][0]}@{boxes[0][1]}"
    if len(domains) > 1:
        return FromResult(ok=False, address=address,
                          error=f"From has mailboxes of {len(domains)} domains ({', '.join(domains)})")
    return FromResult(ok=True, domain=domains[0], address=address)
