"""Property tests for the parsers that read remote text (Hypothesis).

`make test` runs the derandomised ``ci`` profile (fixed examples, a few seconds);
`make fuzz` selects the ``fuzz`` profile (random, many more examples). Profiles are
registered in tests/fuzz/conftest.py.

Each parser must never raise on remote input, and each has a property that matters for
security: the Received parser names the connecting host and never an address the client
wrote (HELO) or the receiver wrote (``by``); the From parser only returns validated
domains and is not fooled by display names; tag lists and DMARC records mean what they
say; an Authentication-Results header we render parses back to exactly our results, and
every header claiming our authserv-id is found.
"""
from __future__ import annotations

import ipaddress
import re
import time

import authres
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from authmilter import authresults
from authmilter import results as spf_results
from authmilter.checks import dkim as dkim_check
from authmilter.checks import fromhdr, orgdomain, received, spf
from authmilter.checks.rfc5322 import one_line

try:   # the lenient readers for `authmilter analyze` are moving to checks/authres.py
    from authmilter.checks.authres import parse_authres, parse_received_spf
except ImportError:
    from authmilter.authresults import parse_authres, parse_received_spf  # type: ignore[attr-defined,no-redef]
from authmilter.dkim.tags import TagListError, parse_key_record, parse_tag_list
from authmilter.domain import DomainError, normalize_domain, normalize_ip
from authmilter.model import Message
from authmilter.resolver import Answer, DnsStatus
from authmilter.results import ResInfo, Result

# ---------------------------------------------------------------------------------------
# strategies

LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
HOSTNAME = st.lists(LABEL, min_size=2, max_size=4).map(".".join)
IPV4 = st.ip_addresses(v=4).map(str)
IPV6 = st.ip_addresses(v=6).map(str)
IP = st.one_of(IPV4, IPV6)
# Fragments that matter to RFC 5322 parsers, joined at random: grammar-aware noise.
PIECES = ("a", "b.c", "@", "<", ">", '"', "\\", "(", ")", ",", ":", ";", ".", " ", "\t", "\r\n ", "[", "]",
          "victim.example", "attacker.example", "xn--", "é", "\x00", "\x7f", "=?utf-8?q?x?=", "\udcff", "_")
GRAMMAR_NOISE = st.lists(st.sampled_from(PIECES), max_size=24).map("".join)
REMOTE_TEXT = st.one_of(st.text(max_size=80), GRAMMAR_NOISE)


def _literal(ip: str, style: str) -> str:
    """An address as an MTA writes it in a Received header."""
    if ":" in ip and style == "postfix":
        return f"IPv6:{ip}"
    return ip


# ---------------------------------------------------------------------------------------
# Received (checks/received.py)


@given(st.one_of(st.binary(max_size=300), REMOTE_TEXT.map(lambda t: " from " + t)))
def test_received_parser_never_raises(value):
    got = received.parse_received_from(value)
    assert got is None or (normalize_ip(got[0]) == got[0])


# The HELO a client may present once its MTA checked the syntax: Postfix neuters
# " <>()\\\";@" (to "?"), Exim accepts a domain or an address literal.
def _postfix_helo(text: str) -> str:
    return re.sub(r'[ <>()\\";@]', "?", text)


HOSTILE_HELO = st.builds(lambda b, host, form: form.format(b=b, host=host),
                         IP, HOSTNAME,
                         st.sampled_from(("[{b}]", "[IPv6:{b}]", "{b}", "{host}", "[{b}]{host}", "{host}[{b}]")))

RECEIVED_STYLES = {
    "postfix": " from {helo} ({rdns} [{a}])\r\n\tby {by} (Postfix) with ESMTP id 4Q1\r\n\tfor <b@mx.test>; {date}",
    "postfix_unknown": " from {helo} (unknown [{a}]) by {by} (Postfix) with SMTP id 4Q2; {date}",
    "exim": " from [{a}] (port={port} helo={helo})\r\n\tby {by} with esmtp (Exim 4.97)\r\n\tid 1x; {date}",
    "exim_rdns": " from {rdns} ([{a}]:{port} helo={helo})\r\n\tby {by} with esmtp (Exim 4.97)\r\n\tid 1x; {date}",
    "exim_noport": " from [{a}] (helo={helo})\r\n\tby {by} with smtp (Exim 4.97) id 1y; {date}",
    "microsoft": " from {helo} ({a}) by {by} ({b}) with Microsoft SMTP Server id 15.2; {date}",
}


@given(a=IP, b=IP, helo=HOSTILE_HELO, rdns=HOSTNAME, port=st.integers(1, 65535),
       style=st.sampled_from(sorted(RECEIVED_STYLES)),
       by=st.sampled_from(("relay.mx.test", "[{b}]", "relay.mx.test ([{b}])", "{b}")))
def test_received_names_the_connecting_address_never_the_helo_or_by_part(a, b, helo, rdns, port, style, by):
    """RFC 5321 §4.4: the address in the "from" clause is the one the receiving MTA saw;
    anything the client said (HELO, helo=) or the "by" clause must never stand for it."""
    assume(normalize_ip(a) != normalize_ip(b))
    if style.startswith("postfix"):
        helo = _postfix_helo(helo)
    lit = _literal(a, "postfix" if style.startswith("postfix") else style)
    value = RECEIVED_STYLES[style].format(helo=helo, rdns=rdns, a=lit, b=b, port=port, by=by.format(b=b),
                                          date="Mon, 23 Nov 2026 10:00:00 +0000")
    got = received.parse_received_from(value)
    assert got is not None, value
    assert got[0] == normalize_ip(a), value


def test_received_helo_literal_before_the_address_example():
    # the example from the hardening issue: Exim without reverse DNS
    got = received.parse_received_from(" from [203.0.113.9] (port=1 helo=[198.51.100.7]) by relay.mx.test")
    assert got is not None and got[0] == "203.0.113.9"


# ---------------------------------------------------------------------------------------
# From (checks/fromhdr.py)


def _from(value: bytes) -> fromhdr.FromResult:  # type: ignore[name-defined]
    return fromhdr.parse_from(Message(headers=((b"From", value),), body=b""))


def _is_normalised_domain(domain: str) -> bool:
    try:
        return normalize_domain(domain, allow_underscore=True) == domain
    except DomainError:
        return False


@given(st.one_of(st.binary(max_size=200), GRAMMAR_NOISE.map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_from_parser_never_raises_and_returns_only_valid_domains(value):
    r = _from(value)
    if r.ok:
        assert r.domain and r.domain.isascii() and _is_normalised_domain(r.domain), (value, r)
        assert r.address.endswith("@" + r.domain)
    else:
        assert r.error and not r.domain


@given(display=st.text(max_size=40), comment=st.text(max_size=20), local=st.from_regex(r"[a-z0-9.+_-]{1,12}", fullmatch=True),
       domain=HOSTNAME, decoy=HOSTNAME)
def test_from_display_names_and_comments_are_never_the_address(display, comment, local, domain, decoy):
    """A display name or comment that looks like an address (``"ceo@bank" <x@evil>``)
    never supplies the Author Domain (OpenDMARC CVE-2019-16378 class)."""
    assume(not local.startswith(".") and not local.endswith(".") and ".." not in local)
    quoted = display.replace("\\", "\\\\").replace('"', '\\"')
    quoted = re.sub(r"[\x00-\x1f\x7f\ud800-\udfff]", "", quoted)
    esc_comment = re.sub(r"[\x00-\x1f\x7f\ud800-\udfff]", "", comment.replace("\\", "\\\\")
                         .replace("(", "\\(").replace(")", "\\)"))
    value = f' "{quoted} x@{decoy}" (y@{decoy} {esc_comment}) <{local}@{domain}> (z@{decoy})'
    r = _from(value.encode())
    assert r.ok, (value, r)
    assert r.domain == domain


# ---------------------------------------------------------------------------------------
# DKIM tag lists and key records (dkim/tags.py)

_FWS = st.sampled_from(("", " ", "\t", "\r\n ", "  "))
TAG_NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,5}", fullmatch=True)
TAG_VALUE = st.from_regex(r"(?:[!-:<-~]+(?:[ \t]+[!-:<-~]+)*)?", fullmatch=True)


@given(st.binary(max_size=300))
def test_tag_list_parser_raises_only_its_own_error(data):
    try:
        tags = parse_tag_list(data)
    except TagListError:
        return
    for name, tag in tags.items():
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name)
        assert data[tag.start:tag.end].strip(b" \t\r\n") == tag.value


@given(st.dictionaries(TAG_NAME, TAG_VALUE, max_size=8), st.data())
def test_tag_list_round_trip(tags, data):
    """RFC 6376 §3.2: tag=value pairs with FWS around names, "=" and ";"."""
    parts = []
    for name, value in tags.items():
        parts.append(data.draw(_FWS) + name + data.draw(_FWS) + "=" + data.draw(_FWS) + value + data.draw(_FWS))
    text = ";".join(parts) + data.draw(st.sampled_from(("", ";", "; ")))
    got = parse_tag_list(text.encode())
    assert {k: v.value.decode() for k, v in got.items()} == tags


@given(st.one_of(st.binary(max_size=200),
                 st.lists(st.sampled_from(("v=DKIM1", "k=rsa", "k=ed25519", "p=", "p=AAAA", "p=!!", "h=sha256",
                                           "t=y", "s=email", "x", "=", ";", " ", "k=", "p=MCowBQYDK2VwAyEA")),
                          max_size=8).map(lambda xs: "; ".join(xs).encode())))
def test_key_record_parser_raises_only_its_own_error(txt):
    try:
        rec = parse_key_record(txt)
    except TagListError:
        return
    assert rec.revoked or rec.key is not None


class Zone:
    """A DnsLookup over a dict: {(name, type): [records]}; anything else NXDOMAIN."""

    def __init__(self, records: dict[tuple[str, str], list]) -> None:
        self.records = {(n.lower().rstrip("."), t.upper()): v for (n, t), v in records.items()}
        self.queries: list[tuple[str, str]] = []

    def query(self, name: str, rdtype: str) -> Answer:
        key = (name.lower().rstrip("."), rdtype.upper())
        self.queries.append(key)
        if key in self.records:
            return Answer(name, rdtype, DnsStatus.OK, tuple(self.records[key]), ttl=60)
        if any(n == key[0] for n, _ in self.records):
            return Answer(name, rdtype, DnsStatus.NODATA)
        return Answer(name, rdtype, DnsStatus.NXDOMAIN)


_SIG_PIECES = ("v=1", "a=rsa-sha256", "a=ed25519-sha256", "a=rsa-sha1", "a=x", "c=relaxed/relaxed", "c=simple",
               "c=bogus/", "d=victim.example", "d=", "d=..", "d=é.example", "s=sel", "s=", "s=a_b", "h=from",
               "h=", "h=to", "h=from:from", "bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "bh=!!", "b=dGVzdA==",
               "b=", "l=0", "l=99999999999999999999", "l=-1", "t=1", "x=0", "x=9999999999999", "i=@victim.example",
               "i=x@attacker.example", "q=dns/txt", "z=a|b", "=", ";", "\r\n\t", "\x00")


@given(st.one_of(st.binary(max_size=300), st.lists(st.sampled_from(_SIG_PIECES), max_size=12).map(
    lambda xs: (" " + "; ".join(xs)).encode())))
def test_dkim_verification_of_any_signature_is_a_result_never_an_exception(sig):
    key = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    zone = Zone({("sel._domainkey.victim.example", "TXT"): [key.encode()]})
    msg = Message(headers=((b"DKIM-Signature", sig), (b"From", b" a@victim.example"), (b"To", b" b@x")),
                  body=b"body\r\n")
    results = dkim_check.verify_dkim(msg, zone)
    assert len(results) == 1
    assert results[0].result is not Result.PASS   # no signature here was made with the key


# ---------------------------------------------------------------------------------------
# DMARC records (checks/orgdomain.py)

_DMARC_TAGS = st.sampled_from(("p", "sp", "np", "adkim", "aspf", "t", "psd", "pct", "rua", "ruf", "fo", "ri", "x"))
_DMARC_VALUES = st.sampled_from(("none", "quarantine", "reject", "r", "s", "y", "n", "u", "50", "100", "-1",
                                 "mailto:d@victim.example", "mailto:x!10m", "", "REJECT", "bogus", "=", " "))


@given(st.one_of(st.text(max_size=150),
                 st.lists(st.tuples(_DMARC_TAGS, _DMARC_VALUES), max_size=8).map(
                     lambda kv: "v=DMARC1; " + "; ".join(f"{k}={v}" for k, v in kv))),
       st.sampled_from(("rfc9989", "rfc7489")))
def test_dmarc_record_parser_never_raises_and_yields_only_valid_values(text, mode):
    rec = orgdomain.parse_record(text, mode)
    if not text.split(";", 1)[0].strip(" \t").replace(" ", "").replace("\t", "").startswith("v=DMARC1"):
        assert rec is None
    if rec is None:
        return
    assert rec.p in ("none", "quarantine", "reject")
    assert rec.sp in ("", "none", "quarantine", "reject") and rec.np in ("", "none", "quarantine", "reject")
    assert rec.adkim in ("r", "s") and rec.aspf in ("r", "s") and rec.psd in ("y", "n", "u")
    assert 0 <= rec.pct <= 100


@given(p=st.sampled_from(("none", "quarantine", "reject")), sp=st.sampled_from(("none", "quarantine", "reject")),
       adkim=st.sampled_from(("r", "s")), aspf=st.sampled_from(("r", "s")), upper=st.booleans(),
       ws=st.sampled_from(("", " ", "\t", "  ")), trailing=st.booleans())
def test_dmarc_record_round_trip(p, sp, adkim, aspf, upper, ws, trailing):
    """RFC 9989 §4.7: tag names and keyword values are case-insensitive; WSP around
    tags and values is allowed."""
    def case(s: str) -> str:
        return s.upper() if upper else s
    tags = [("p", p), ("sp", sp), ("adkim", adkim), ("aspf", aspf)]
    text = "v=DMARC1" + "".join(f";{ws}{case(k)}{ws}={ws}{case(v)}{ws}" for k, v in tags) + (";" if trailing else "")
    rec = orgdomain.parse_record(text)
    assert rec is not None and rec.usable
    assert (rec.p, rec.sp, rec.adkim, rec.aspf) == (p, sp, adkim, aspf)


# ---------------------------------------------------------------------------------------
# SPF records (pyspf behind checks/spf.py)

_SPF_TERMS = ("ip4:192.0.2.0/24", "ip4:198.51.100.7", "ip6:2001:db8:1::/48", "a", "mx", "ptr", "exists:%{i}.x.example",
              "include:inc.example", "redirect=inc.example", "exp=exp.example", "-all", "~all", "?all", "+all",
              "all", "ip4:999.1.1.1", "ip4:", "a:%{l}.example", "%{", "include:", "-include:loop.example",
              "v=spf1", "ip4:0.0.0.0/0", "a/33", "mx:.", "xyz", "=", "%{ir}.%{v}._spf.%{d2}", "ip6:::1/129")


@given(terms=st.lists(st.sampled_from(_SPF_TERMS), max_size=8), inc=st.lists(st.sampled_from(_SPF_TERMS), max_size=4),
       ip=st.sampled_from(("203.0.113.9", "2001:db8::5", "::ffff:203.0.113.10")),
       sender=st.sampled_from(("x@victim.example", "", "victim.example", "\"a@b\"@victim.example", "x@")))
def test_spf_on_any_record_is_a_result_never_an_exception(terms, inc, ip, sender):
    zone = Zone({("victim.example", "TXT"): [("v=spf1 " + " ".join(terms)).encode()],
                 ("inc.example", "TXT"): [("v=spf1 " + " ".join(inc)).encode()],
                 ("loop.example", "TXT"): [b"v=spf1 include:loop.example -all"],
                 ("exp.example", "TXT"): [b"%{i} is not allowed\r\n"]})
    r = spf.check_spf(ip, sender, "victim.example", zone, receiver="mx.test", timeout_s=5)
    assert isinstance(r.result, Result)
    value = spf.received_spf_value(r, "mx.test")
    # one header: line breaks only as folding CRLF + TAB, no other control characters
    assert not re.search(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]", value.replace("\r\n\t", " "))
    if "+all" in terms or "all" in terms or "ip4:0.0.0.0/0" in terms:
        return
    assert r.result is not Result.PASS or any(t in terms for t in ("include:inc.example", "redirect=inc.example",
                                                                    "exists:%{i}.x.example", "a", "mx", "ptr"))


# ---------------------------------------------------------------------------------------
# Authentication-Results (authresults.py)

METHOD = st.sampled_from(("spf", "dkim", "dmarc", "arc", "auth", "iprev"))
PROP_KEY = st.sampled_from(("smtp.mailfrom", "smtp.helo", "header.from", "header.d", "header.i", "header.s",
                            "header.a", "header.b", "policy.dmarc"))
RESINFO = st.builds(ResInfo, METHOD, st.sampled_from(list(Result)), REMOTE_TEXT, REMOTE_TEXT,
                    st.lists(st.tuples(PROP_KEY, REMOTE_TEXT), max_size=4).map(tuple))
AUTHSERV = st.one_of(HOSTNAME, st.just("mx.test"))


def _parse_ar(value: str):  # type: ignore[no-untyped-def]
    """Parse with the authres package, an independent RFC 8601 reader. It predates RFC
    6532, so non-ASCII characters (never structural) are replaced by "x" first."""
    return authres.AuthenticationResultsHeader.parse("Authentication-Results:" + re.sub(r"[^\x00-\x7f]", "x", value))


def _ascii_x(text: str) -> str:
    return re.sub(r"[^\x00-\x7f]", "x", text)


# What may never appear in a header we write, apart from CRLF + TAB folding: C0 and C1
# controls and the characters Python's str.splitlines() breaks lines at.
_NOT_IN_HEADERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


@given(AUTHSERV, st.lists(RESINFO, max_size=5))
def test_rendered_authentication_results_parse_back_to_the_same_results(authserv_id, infos):
    """RFC 8601 §2.2: whatever remote text the results carry, the header we write parses
    to exactly our authserv-id and our (method, result) list, no more, no less."""
    value = authresults.render(authserv_id, infos)
    assert not _NOT_IN_HEADERS.search(value.replace("\r\n\t", " ")), value
    h = _parse_ar(value)
    assert h.authserv_id == authserv_id
    if not infos:
        assert value.endswith("; none")
        return
    assert [(r.method, r.result) for r in h.results] == [(i.method, i.result.value) for i in infos]
    for r, info in zip(h.results, infos, strict=True):
        if any(v.startswith('"') for v in (authresults._pvalue(one_line(v)) for _, v in info.props)):
            continue   # authres drops a quoted pvalue that another property follows
        want = [(k, _ascii_x(one_line(v))) for k, v in info.props if one_line(v)]
        # authres hands back a quoted pvalue's content with its quoted-pairs unresolved
        got = [(f"{p.type}.{p.name}", re.sub(r"\\(.)", r"\1", p.value)) for p in r.properties]
        assert got == want


@given(AUTHSERV, st.lists(RESINFO, max_size=3))
def test_our_own_header_is_recognised_as_ours(authserv_id, infos):
    value = authresults.render(authserv_id, infos)
    assert authresults.authserv_id_of(value) == authserv_id
    assert authresults.forged_indices([(b"Authentication-Results", value.encode())], authserv_id) == [1]


_CFWS = st.lists(st.sampled_from((" ", "\t", "\r\n ", "(c)", "(a (nested) comment)", "(\\))", "()")),
                 max_size=3).map("".join)


@given(prefix=_CFWS, variant=st.sampled_from(("{id}", "{ID}", "sub.{id}", "{id}.", '"{id}"', "a.b.{id}")),
       version=st.sampled_from(("", " 1", "/1")), tail=REMOTE_TEXT, position=st.integers(0, 3),
       others=st.lists(HOSTNAME, max_size=3))
def test_every_header_claiming_our_authserv_id_is_found(prefix, variant, version, tail, position, others):
    """RFC 8601 §5: a header claiming our authserv-id (any case, a host under it, quoted,
    after comments) is ours to remove, wherever it stands among the others."""
    ours = "mx.test"
    assume(not any(o == ours or o.endswith("." + ours) for o in others))
    claim = variant.format(id=ours, ID=ours.upper())
    if version == "/1":
        assume(not claim.startswith('"'))
    forged = f"{prefix}{claim}{version}; {tail}".encode("utf-8", "surrogatepass")
    headers = [(b"Authentication-Results", f" {o}; spf=pass".encode()) for o in others]
    position = min(position, len(headers))
    headers.insert(position, (b"Authentication-Results", forged))
    assert authresults.forged_indices(headers, ours) == [position + 1], forged


@pytest.mark.parametrize("ip", ["203.0.113.9", "2001:db8::5"])
def test_strategies_produce_what_they_promise(ip):
    # guards the generators above: a normalised address is its own normal form
    assert normalize_ip(ip) == str(ipaddress.ip_address(ip))


@given(AUTHSERV, st.lists(RESINFO, max_size=5))
def test_render_and_our_own_parser_agree(authserv_id, infos):
    """`authmilter analyze` reads headers with `parse_authres`: what `render` writes
    must read back as exactly the same verdicts (method, result, reason, properties)."""
    value = authresults.render(authserv_id, infos)
    parsed = parse_authres(value)
    assert parsed.authserv_id == authserv_id
    if not infos:
        assert parsed.results == ()
        return
    assert [(r.method, r.result) for r in parsed.results] == [(i.method, i.result.value) for i in infos]
    for r, info in zip(parsed.results, infos, strict=True):
        reason = one_line(info.reason)
        if len(reason) > 256:
            reason = reason[:253] + "..."
        assert r.reason == reason
        assert list(r.props) == [(k, one_line(v)) for k, v in info.props if one_line(v)]


@given(result=st.sampled_from(list(Result)), scope=st.sampled_from(("mailfrom", "helo")), identity=REMOTE_TEXT,
       helo=REMOTE_TEXT, reason=REMOTE_TEXT, ip=IP)
def test_received_spf_we_write_reads_back(result, scope, identity, helo, reason, ip):
    r = spf_results.SpfResult(result, scope, identity, "victim.example", client_ip=ip, helo=helo, reason=reason)
    value = spf.received_spf_value(r, "mx.test")
    assert not _NOT_IN_HEADERS.search(value.replace("\r\n\t", " ")), value
    parsed = parse_received_spf(value)
    assert parsed.result == result.value
    props = dict(parsed.props)
    assert props.get("client-ip") == ip and props.get("receiver") == "mx.test"
    if one_line(helo):
        assert props.get("helo") == one_line(helo)


RECEIVED_NOISE = st.lists(st.sampled_from(("from", "by", "with", "id", "for", "via", "(", ")", "[", "]", ";", " ",
                                           "\\", "helo=", "[1.2.3.4]", "IPv6:", "::1", "198.51.100.7", "x.example",
                                           "unknown", "port=25", ":", "\r\n\t", "Mon, 1 Jan 2026 00:00:00 +0000")),
                          max_size=30).map("".join)


@given(st.one_of(st.binary(max_size=300), RECEIVED_NOISE, RECEIVED_NOISE.map(lambda t: " from " + t)))
def test_received_fields_never_raise_and_agree_with_the_peer_parser(value):
    """`parse_received` (analyze) documents that its from_ip/helo follow
    `parse_received_from` (the trust path) exactly: the two must never disagree."""
    fields = received.parse_received(value)
    hop = received.parse_received_from(value)
    assert fields.from_ip == (hop[0] if hop else None)
    if hop:
        assert fields.helo == hop[1]


@given(st.one_of(st.binary(max_size=300), GRAMMAR_NOISE, REMOTE_TEXT))
def test_lenient_result_parsers_never_raise(value):
    parsed = parse_authres(value)
    assert all(isinstance(r.method, str) and isinstance(r.result, str) for r in parsed.results)
    parse_received_spf(value)
    authresults.authserv_id_of(value)


_UNITS = ["(", "((", "\\(", '"', "from (", "a=b; ", "(a) ", "[", "from [1.2.3.4] (helo=[", "helo=", ";", "\r\n\t"]


def _tags(value: bytes) -> None:
    try:
        parse_tag_list(value)
    except TagListError:
        pass


_LINEAR = {
    "parse_received_from": received.parse_received_from,
    "parse_received": received.parse_received,
    "authserv_id_of": authresults.authserv_id_of,
    "forged_indices": lambda v: authresults.forged_indices([(b"Authentication-Results", v)], "mx.test"),
    "parse_from": lambda v: fromhdr.parse_from(Message(headers=((b"From", v),), body=b"")),
    "parse_tag_list": _tags,
    "dmarc parse_record": lambda v: orgdomain.parse_record(v.decode()),
    "parse_authres": parse_authres,
}


@pytest.mark.parametrize("parser", sorted(_LINEAR))
def test_parsers_stay_linear_on_long_adversarial_input(parser):
    """Headers are remote input of any length: 200 kB of a repeated fragment must parse
    without backtracking or quadratic rescans. Linear parsers take milliseconds; the
    bound is an anti-hang net 500x wider than that, not a speed target (a quadratic
    parser, such as parse_authres building each word by copying, took ~30 s)."""
    for unit in _UNITS:
        value = (unit * (200_000 // len(unit))).encode()
        started = time.monotonic()
        _LINEAR[parser](value)
        assert time.monotonic() - started < 15.0, unit


