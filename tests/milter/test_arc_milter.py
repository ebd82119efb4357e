"""ARC sealing, the trusted-sealer override and RFC 9989 enforcement over the real milter
socket (issue 12, items 1, 2 and 4), DNS from the loopback server.

Four daemons, one per role, share a KeyTable:

* ``forwarder`` (seal_inbound = true): seals inbound mail after its checks, the AAR
  carrying its Authentication-Results;
* ``listhost`` (seal_inbound = false): checks inbound mail, and seals what its list
  software re-submits from an internal host, after signing it with DKIM;
* ``mx``: a final MX that trusts ``list.example`` as a sealer, default
  ``on_dmarc_reject = "evidence"``, with a store for the report records;
* ``strict``: the same with ``on_dmarc_reject = "reject"`` and no trusted sealer.

Every chain we produce is checked with our verifier and with dkimpy's ``arc_verify``.
"""
from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from milterclient import MilterResult, split_message
from milterd import Daemon, merge

from authmilter import keys
from authmilter.authresults import parse_authres
from authmilter.checks.arc import check_arc
from authmilter.dkim.arc import seal
from authmilter.dkim.sign import SigningKey, sign
from authmilter.dkim.tags import parse_tag_list
from authmilter.model import Message
from authmilter.resolver import Resolver, dkim_dnsfunc
from authmilter.results import Result
from authmilter.store.rows import COLUMNS, from_row

WAIT_S = 60.0
SIGN = ("From", "To", "Subject", "Date", "Message-ID")
LIST_IP, FORWARDER_IP, SPOOFER_IP = "203.0.113.9", "203.0.113.20", "198.51.100.66"


# -- keys and DNS ---------------------------------------------------------------------------

def _key(directory: Path, name: str, domain: str, selector: str) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / f"{name}.private"
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    path.chmod(0o600)
    return SigningKey(domain, selector, "rsa-sha256", private, 2048, str(path))


@pytest.fixture(scope="module")
def keyset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SigningKey]:
    d = tmp_path_factory.mktemp("arckeys")
    d.chmod(0o700)
    return {
        "bank": _key(d, "bank", "bank.example", "s1"),              # the author's DKIM key
        "upstream": _key(d, "upstream", "upstream.example", "arc"),  # an untrusted sealer
        "arc": _key(d, "arc", "list.example", "arc"),               # our sealing key (KeyTable)
        "dkim": _key(d, "dkim", "list.example", "dkim"),            # our DKIM key (KeyTable)
    }


def publish(dns: Any, keyset: dict[str, SigningKey], *domains: str) -> None:
    """Keys of every party, and SPF + DMARC p=reject for each author domain."""
    for k in keyset.values():
        dns.add_txt(f"{k.selector}._domainkey.{k.domain}", keys.dns_record(k.private_key))
    dns.add_txt("list.example", f"v=spf1 ip4:{LIST_IP} -all")
    for d in domains:
        dns.add_txt(d, "v=spf1 ip4:192.0.2.0/24 -all")
        dns.add_txt(f"_dmarc.{d}", "v=DMARC1; p=reject")


# -- daemons ----------------------------------------------------------------------------------

def _daemon(tmp: Path, dns: Any, authserv: str, keyset: dict[str, SigningKey], **extra: Any) -> Daemon:
    key_table = tmp / "KeyTable"
    key_table.write_text("".join(f"{n} {k.domain}:{k.selector}:{k.path}\n" for n, k in keyset.items()
                                 if n in ("arc", "dkim")))
    signing_table = tmp / "SigningTable"
    signing_table.write_text("* dkim\n")
    sealing_table = tmp / "SealingTable"
    sealing_table.write_text("* arc\n")
    config: dict[str, Any] = {
        "socket": f"unix:{tmp}/m.sock", "authserv_id": authserv, "workers": 1,
        "dns": {"servers": [dns.address], "timeout_s": 1.0, "message_budget_s": 4.0},
        "signing": {"enabled": True, "key_table": str(key_table), "signing_table": f"refile:{signing_table}",
                    "internal_hosts": ["10.0.0.0/8"]},
        "arc": {"sealing_table": f"file:{sealing_table}"},
    }
    return Daemon(tmp, merge(config, extra)).start()


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory, _shared_dns_server: Any,
            keyset: dict[str, SigningKey]) -> Any:
    dns = _shared_dns_server
    started: dict[str, Daemon] = {}
    try:
        started["forwarder"] = _daemon(tmp_path_factory.mktemp("forwarder"), dns, "fwd.list.example", keyset,
                                       arc={"seal_inbound": True})
        started["listhost"] = _daemon(tmp_path_factory.mktemp("listhost"), dns, "lists.list.example", keyset)
        mx_dir = tmp_path_factory.mktemp("mx")
        started["mx"] = _daemon(mx_dir, dns, "mx.test", keyset, signing={"enabled": False},
                                arc={"sealing_table": "", "trusted_sealers": ["list.example"]},
                                store={"enabled": True, "url": f"sqlite://{mx_dir}/state.db",
                                       "flush_interval_s": 0.05})
        started["strict"] = _daemon(tmp_path_factory.mktemp("strict"), dns, "strict.test", keyset,
                                    signing={"enabled": False}, arc={"sealing_table": ""},
                                    policy={"on_dmarc_reject": "reject"})
        yield started
    finally:
        problems = [f"{name}: exit {code}:\n{d.log()}" for name, d in started.items() if (code := d.stop()) != 0]
        assert not problems, "\n".join(problems)


# -- messages -----------------------------------------------------------------------------------

def author_message(domain: str, *, extra: str = "", body: str = "Pay the invoice today.\r\n") -> bytes:
    return (f"From: Bank <news@{domain}>\r\n{extra}To: members@list.example\r\nSubject: statement\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@{domain}>\r\n\r\n{body}").encode()


def author_key(dns: Any, keyset: dict[str, SigningKey], domain: str) -> SigningKey:
    """The author's DKIM key for *domain* (s1), published."""
    key = SigningKey(domain, "s1", "rsa-sha256", keyset["bank"].private_key, 2048, "mem")
    dns.add_txt(f"s1._domainkey.{domain}", keys.dns_record(key.private_key))
    return key


def dkim_signed(raw: bytes, key: SigningKey) -> bytes:
    value = sign(Message.from_bytes(raw), key, sign_headers=SIGN)
    return b"DKIM-Signature:" + value.encode() + b"\r\n" + raw


def arc_sealed(raw: bytes, key: SigningKey, aar_results: str, *, srv_id: str, cv: str = "none") -> bytes:
    msg = Message.from_bytes(raw)
    aar, ams, as_value = seal(msg, key, srv_id=srv_id, aar_results=aar_results, chain_validation=cv,
                              sign_headers=["from", "to", "subject", "date", "message-id"])
    return (b"ARC-Seal:" + as_value.encode() + b"\r\nARC-Message-Signature:" + ams.encode()
            + b"\r\nARC-Authentication-Results:" + aar.encode() + b"\r\n" + raw)


def add_footer(raw: bytes, footer: str = "--\r\nlist footer\r\n", header: str = "") -> bytes:
    head, _, body = raw.partition(b"\r\n\r\n")
    extra = header.encode() + b"\r\n" if header else b""
    return head + b"\r\n" + extra + b"\r\n" + body + footer.encode()


def stored(raw: bytes, result: MilterResult) -> bytes:
    """The message as the MTA keeps it after our edits."""
    headers, body = split_message(raw)
    edited = result.apply([(n.decode(), v.decode()) for n, v in headers])
    head = b"".join(n.encode() + b":" + v.replace("\r\n", "\n").replace("\n", "\r\n").encode() + b"\r\n"
                    for n, v in edited)
    return head + b"\r\n" + body


def send(daemon: Daemon, raw: bytes, *, ip: str, mail_from: str, rcpts: tuple[str, ...] = ("alice@list.example",),
         qid: str = "4ARC") -> MilterResult:
    with daemon.client() as c:
        return c.session(ip=ip, helo="mail.example", mail_from=mail_from, rcpts=list(rcpts), message=raw,
                         macros={"i": qid, "j": daemon.config["authserv_id"]})


def header(result: MilterResult, name: str) -> str:
    (value,) = result.headers_named(name)
    return value


def unfold(value: str) -> str:
    return re.sub(r"\s+", " ", value).strip()


def verify_both(raw: bytes, resolver: Resolver) -> tuple[Any, bytes]:
    ours = check_arc(Message.from_bytes(raw), resolver)
    cv, _results, reason = dkim.arc_verify(raw, dnsfunc=dkim_dnsfunc(resolver))
    return ours, cv


def dmarc_of(result: MilterResult) -> Any:
    (info,) = [r for r in parse_authres(header(result, "Authentication-Results")).results if r.method == "dmarc"]
    return info


# -- 1. sealing ---------------------------------------------------------------------------------

def test_seal_inbound_adds_a_set_whose_aar_is_our_authentication_results(daemons, dns_server, keyset, resolver):
    publish(dns_server, keyset, "sealin.example")
    raw = dkim_signed(author_message("sealin.example"), author_key(dns_server, keyset, "sealin.example"))
    r = send(daemons["forwarder"], raw, ip="192.0.2.10", mail_from="bounce@sealin.example")
    assert r.action == "accept", r
    ar, aar = header(r, "Authentication-Results"), header(r, "ARC-Authentication-Results")
    assert "dmarc=pass" in ar and "spf=pass" in ar
    assert unfold(aar) == "i=1; " + unfold(ar)
    assert parse_tag_list(header(r, "ARC-Seal").encode())["cv"].value == b"none"
    sealed = stored(raw, r)
    ours, cv = verify_both(sealed, resolver)
    assert ours.result is Result.PASS and ours.instances == 1 and ours.domains == ("list.example",), ours.reason
    assert cv == b"pass"
    assert daemons["forwarder"].wait_log(r"4ARC: action=accept dir=inbound .* sealed=i=1/d=list.example/s=arc/cv=none")


def _resubmit(daemons: Any, dns_server: Any, keyset: dict[str, SigningKey], domain: str, *,
              upstream: bool, qid: str) -> tuple[bytes, MilterResult, bytes]:
    """An author's signed p=reject message reaches the list host (inbound pass: our AR),
    the list software adds a footer and List-Id and re-submits it from an internal host."""
    publish(dns_server, keyset, domain)
    raw = dkim_signed(author_message(domain), author_key(dns_server, keyset, domain))
    if upstream:   # an earlier hop sealed i=1 (it saw the author's mail pass)
        raw = arc_sealed(raw, keyset["upstream"], f"spf=pass smtp.mailfrom={domain}; dmarc=pass header.from={domain}",
                         srv_id="mx.upstream.example")
    first = send(daemons["listhost"], raw, ip="192.0.2.10", mail_from=f"bounce@{domain}", qid=qid + "A")
    assert first.action == "accept" and not first.headers_named("ARC-Seal"), first
    received = stored(raw, first)
    ar = header(first, "Authentication-Results")
    assert "dmarc=pass" in ar and (("arc=pass" in ar) if upstream else True)
    modified = add_footer(received, header="List-Id: <members.list.example>")
    second = send(daemons["listhost"], modified, ip="10.1.2.3", mail_from="members-bounces@list.example",
                  rcpts=("carol@mx.test",), qid=qid + "B")
    assert second.action == "accept", second
    return modified, second, ar.encode()


def test_resubmission_continues_the_chain_and_the_seal_covers_our_dkim_signature(daemons, dns_server, keyset,
                                                                                  resolver):
    modified, r, ar = _resubmit(daemons, dns_server, keyset, "chain2.example", upstream=True, qid="4RS1")
    # DKIM signing happened (list.example), then sealing i=2 with cv=pass: the footer broke
    # i=1's AMS, but our inbound pass had validated the chain (arc=pass in our AR).
    ours_sig = header(r, "DKIM-Signature")
    assert b"list.example" == parse_tag_list(ours_sig.encode())["d"].value
    seal_tags = parse_tag_list(header(r, "ARC-Seal").encode())
    assert (seal_tags["i"].value, seal_tags["cv"].value, seal_tags["d"].value) == (b"2", b"pass", b"list.example")
    assert unfold(header(r, "ARC-Authentication-Results")) == "i=2; " + unfold(ar.decode())
    ams = parse_tag_list(header(r, "ARC-Message-Signature").encode())
    assert [h for h in ams["h"].value.decode().lower().split(":") if h == "dkim-signature"] == ["dkim-signature"] * 2
    # Our AR from the first pass moved into the AAR: the header itself is removed.
    assert any(v == "" and n == "Authentication-Results" for _, n, v in r.changed)
    sealed = stored(modified, r)
    ours, cv = verify_both(sealed, resolver)
    assert ours.result is Result.PASS and ours.instances == 2 and ours.oldest_pass == 2, ours.reason
    assert cv == b"pass"
    # The seal covers the DKIM-Signature we added: alter it and the newest AMS fails.
    m = Message.from_bytes(sealed)
    headers = list(m.headers)
    (at,) = [i for i, (n, v) in enumerate(headers) if n.lower() == b"dkim-signature" and b"d=list.example" in v]
    headers[at] = (headers[at][0], headers[at][1].replace(b"s=dkim;", b"s=dkim2;"))
    tampered = Message(headers=tuple(headers), body=m.body).as_bytes()
    assert tampered != sealed
    assert verify_both(tampered, resolver)[0].result is Result.FAIL
    assert daemons["listhost"].wait_log(r"4RS1B: action=accept dir=outbound via=\"internal host\" .*signed=d=list"
                                        r"\.example/s=dkim/rsa-sha256 sealed=i=2/d=list\.example/s=arc/cv=pass")


def test_resubmission_without_a_chain_starts_one(daemons, dns_server, keyset, resolver):
    modified, r, ar = _resubmit(daemons, dns_server, keyset, "chain1.example", upstream=False, qid="4RS2")
    seal_tags = parse_tag_list(header(r, "ARC-Seal").encode())
    assert (seal_tags["i"].value, seal_tags["cv"].value) == (b"1", b"none")
    ours, cv = verify_both(stored(modified, r), resolver)
    assert ours.result is Result.PASS and ours.instances == 1 and cv == b"pass"


def test_outbound_mail_without_our_authentication_results_is_not_sealed(daemons, dns_server, keyset):
    raw = author_message("list.example")
    r = send(daemons["listhost"], raw, ip="10.1.2.3", mail_from="x@list.example", rcpts=("y@mx.test",), qid="4RS3")
    assert r.headers_named("DKIM-Signature") and not r.headers_named("ARC-Seal")


def test_a_chain_that_already_failed_is_not_sealed_again(daemons, dns_server, keyset):
    publish(dns_server, keyset, "ended.example")
    raw = arc_sealed(author_message("ended.example"), keyset["upstream"], "spf=fail", srv_id="up", cv="none")
    raw = arc_sealed(raw, keyset["upstream"], "arc=fail", srv_id="up", cv="fail")
    r = send(daemons["forwarder"], raw, ip="192.0.2.10", mail_from="bounce@ended.example", qid="4END")
    assert not r.headers_named("ARC-Seal")
    assert daemons["forwarder"].wait_log(r"4END: .*sealed=\"no \(ARC-Seal i=2 already says cv=fail")


# -- 2. trusted sealers, across two daemons -------------------------------------------------------

def _through_the_list(daemons: Any, dns_server: Any, keyset: dict[str, SigningKey], domain: str, qid: str
                      ) -> bytes:
    modified, r, _ = _resubmit(daemons, dns_server, keyset, domain, upstream=False, qid=qid)
    return stored(modified, r)


def _records(daemon: Daemon, qid: str) -> list[Any]:
    path = daemon.config["store"]["url"].removeprefix("sqlite://")
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            with sqlite3.connect(path) as conn:
                rows = [from_row(r) for r in conn.execute(f"SELECT {', '.join(COLUMNS)} FROM message_records")]
        except sqlite3.OperationalError:
            rows = []
        found = [r for r in rows if r.queue_id == qid]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_trusted_sealer_delivers_a_forwarded_p_reject_failure(daemons, dns_server, keyset, resolver):
    msg = _through_the_list(daemons, dns_server, keyset, "trusted.example", "4TS1")
    r = send(daemons["mx"], msg, ip=LIST_IP, mail_from="members-bounces@list.example", rcpts=("carol@mx.test",),
             qid="4TS1C")
    assert r.action == "accept" and not r.quarantine, r
    ar = header(r, "Authentication-Results")
    assert "dkim=fail" in ar and "arc=pass" in ar, ar        # the footer broke the author's signature
    dmarc = dmarc_of(r)
    assert dmarc.result == "fail"                              # ARC never turns a fail into a pass
    assert dmarc.prop("policy.dmarc") == "none" and "arc=pass sealed by list.example" in dmarc.reason
    assert daemons["mx"].wait_log(r"4TS1C: action=accept dir=inbound .*dmarc=fail:p=reject policy\.dmarc=none "
                                  r"override=\"trusted_forwarder:arc=pass sealed by list\.example\"")
    (rec,) = _records(daemons["mx"], "4TS1C")
    assert rec.disposition == "none" and rec.dmarc_result == "fail"
    assert rec.overrides == (("trusted_forwarder", "arc=pass sealed by list.example"),)


def test_an_untrusted_sealer_is_quarantined_or_rejected(daemons, dns_server, keyset):
    msg = _through_the_list(daemons, dns_server, keyset, "untrusted.example", "4TS2")
    r = send(daemons["strict"], msg, ip=LIST_IP, mail_from="members-bounces@list.example", rcpts=("c@strict.test",),
             qid="4TS2S")
    assert r.action in ("reject", "reply") and r.reply.startswith("550 5.7.1"), r
    # An untrusted sealer on the evidence MX: ARC and List-Id suggest a list -> quarantine.
    signed = dkim_signed(author_message("untrusted.example"), author_key(dns_server, keyset, "untrusted.example"))
    raw = add_footer(arc_sealed(signed, keyset["upstream"], "dmarc=pass header.from=untrusted.example",
                                srv_id="mx.upstream.example"))
    r = send(daemons["mx"], raw, ip=FORWARDER_IP, mail_from="bounce@upstream.example", rcpts=("c@mx.test",),
             qid="4TS2M")
    assert r.action == "accept" and r.quarantine and "untrusted.example" in r.quarantine, r


def test_a_failed_chain_gets_no_override(daemons, dns_server, keyset):
    msg = _through_the_list(daemons, dns_server, keyset, "broken.example", "4TS3")
    tampered = msg.replace(b"list footer", b"list f00ter")      # after the seal: the newest AMS fails
    r = send(daemons["mx"], tampered, ip=LIST_IP, mail_from="members-bounces@list.example", rcpts=("c@mx.test",),
             qid="4TS3M")
    assert "arc=fail" in header(r, "Authentication-Results")
    assert r.action == "accept" and r.quarantine, r           # evidence: quarantined, never delivered
    assert dmarc_of(r).prop("policy.dmarc") == "quarantine"
    r = send(daemons["strict"], tampered, ip=LIST_IP, mail_from="members-bounces@list.example",
             rcpts=("c@strict.test",), qid="4TS3S")
    assert r.action in ("reject", "reply"), r


# -- 4. RFC 9989: on_dmarc_reject = "evidence" ------------------------------------------------------

def _spoof(kind: str, domain: str, keyset: dict[str, SigningKey], dns: Any) -> bytes:
    raw = author_message(domain)
    if kind == "list-id":
        return author_message(domain, extra="List-Id: <x.lists.example>\r\n")
    if kind == "list-post":
        return author_message(domain, extra="List-Post: <mailto:x@lists.example>\r\n")
    if kind == "arc":
        return arc_sealed(raw, keyset["upstream"], "spf=pass", srv_id="mx.upstream.example")
    if kind == "broken-signature":
        return add_footer(dkim_signed(raw, author_key(dns, keyset, domain)))
    return raw


@pytest.mark.parametrize("kind,hint", [
    ("list-id", "List-Id header"), ("list-post", "List-Post header"), ("arc", "ARC chain"),
    ("broken-signature", "failed DKIM signature of {d}"),
])
def test_evidence_quarantines_a_p_reject_failure_that_looks_indirect(daemons, dns_server, keyset, kind, hint):
    d = f"ev-{kind}.example"
    publish(dns_server, keyset, d)
    qid = "4EV" + kind.replace("-", "").upper()[:6]
    r = send(daemons["mx"], _spoof(kind, d, keyset, dns_server), ip=SPOOFER_IP, mail_from=f"x@{d}", rcpts=("c@mx.test",), qid=qid)
    assert r.action == "accept" and r.quarantine, r
    dmarc = dmarc_of(r)
    assert dmarc.result == "fail" and dmarc.prop("policy.dmarc") == "quarantine"
    assert hint.format(d=d) in dmarc.reason and "RFC 9989" in dmarc.reason
    assert daemons["mx"].wait_log(rf"{qid}: action=quarantine .*policy\.dmarc=quarantine "
                                  rf"override=\"local_policy:indirect flow: {re.escape(hint.format(d=d))}")
    (rec,) = _records(daemons["mx"], qid)
    assert rec.disposition == "quarantine" and rec.overrides[0][0] == "local_policy"
    # The strict setting keeps today's behaviour: rejected.
    r = send(daemons["strict"], _spoof(kind, d, keyset, dns_server), ip=SPOOFER_IP, mail_from=f"x@{d}", rcpts=("c@strict.test",),
             qid=qid + "S")
    assert r.action in ("reject", "reply") and r.reply.startswith("550 5.7.1"), r


def test_evidence_still_rejects_a_plain_spoof(daemons, dns_server, keyset):
    d = "plainspoof.example"
    publish(dns_server, keyset, d)
    r = send(daemons["mx"], _spoof("plain", d, keyset, dns_server), ip=SPOOFER_IP, mail_from=f"x@{d}", rcpts=("c@mx.test",),
             qid="4EVPLAIN")
    assert r.action in ("reject", "reply") and r.reply.startswith("550 5.7.1") and d in r.reply, r
