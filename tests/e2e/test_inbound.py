"""Inbound checks and policy through a real Postfix, DNS from knot (issue 3, issue 4 item 1).

Every message is presented as coming from a realistic remote client through XCLIENT
(192.0.2.10 or 2001:db8::25, HELO mail.example.org) — SPF on a 127.x client tells
nothing. The sender domains and their records are listed in conftest.build_zones.
"""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from .conftest import SENDER_IP, SENDER_IP6
from .harness import (
    MX_NAME,
    auth_results,
    dkim_sign,
    header_values,
    headers_of,
    make_message,
    results,
    wait_for,
)

pytestmark = pytest.mark.e2e

HELO = "mail.example.org"


def _send(e2e, raw: bytes, mail_from: str, **kw):
    return e2e.postfix.smtp(raw, mail_from=mail_from, helo=HELO, client_name=HELO, **kw)


def _deliver(e2e, token: str, raw: bytes, mail_from: str, **kw) -> bytes:
    reply = _send(e2e, raw, mail_from, **kw)
    assert reply.accepted, reply
    return e2e.postfix.wait_delivered(token)


def _assert_rejected(e2e, token: str, reply, domain: str | None = None) -> None:
    """5xx at end of DATA (not earlier: the milter decides at end-of-message)."""
    assert reply.stage == "data" and 500 <= reply.code < 600, reply
    if domain is not None:
        assert domain in reply.text, f"the reply should name {domain}: {reply}"
    assert e2e.postfix.deliveries(token) == []


def _mailfrom_spf(delivered: bytes) -> list[str]:
    return [r for r, props in results(delivered, "spf") if "smtp.mailfrom" in props]


# -- SPF (RFC 7208) --------------------------------------------------------------------


@pytest.mark.parametrize("domain,expected", [
    ("spfpass.test", "pass"), ("spffail.test", "fail"), ("spfsoft.test", "softfail")])
def test_spf_result_for_mail_from(e2e, token, domain, expected):
    raw = make_message(token, from_=f"bob@{domain}", subject=f"spf {expected}")
    delivered = _deliver(e2e, token, raw, f"bob@{domain}")
    assert _mailfrom_spf(delivered) == [expected]
    props = next(p for _, p in results(delivered, "spf") if "smtp.mailfrom" in p)
    assert props["smtp.mailfrom"].endswith(domain)


# -- DKIM (RFC 6376, RFC 8463) ---------------------------------------------------------


def test_dkim_pass(e2e, token):
    key = e2e.keys["rsa"]
    raw = dkim_sign(make_message(token, from_="bob@dkim.test", subject="dkim pass"), key, domain="dkim.test")
    delivered = _deliver(e2e, token, raw, "bob@dkim.test")
    dkim = results(delivered, "dkim")
    assert [r for r, _ in dkim] == ["pass"]
    props = dkim[0][1]
    assert props["header.d"] == "dkim.test"
    assert props.get("header.s") == "s1"
    assert props.get("header.a") == "rsa-sha256"
    sig_b = re.search(r"\bb=([^;]+)", header_values(raw, "DKIM-Signature")[0]).group(1).replace(" ", "")
    assert sig_b.startswith(props["header.b"]) and len(props["header.b"]) >= 8


def test_dkim_body_altered_fails(e2e, token):
    key = e2e.keys["rsa"]
    raw = dkim_sign(make_message(token, from_="bob@dkim.test", subject="altered"), key, domain="dkim.test")
    raw = raw.replace(b"Hello from the e2e suite.", b"Hello from a man in the middle.")
    delivered = _deliver(e2e, token, raw, "bob@dkim.test")
    assert [r for r, _ in results(delivered, "dkim")] == ["fail"]


def test_ed25519_signed_message_passes_dkim_and_dmarc(e2e, token):
    """ed25519-sha256 (RFC 8463) is the only thing that can satisfy ed.test's p=reject."""
    raw = dkim_sign(make_message(token, from_="bob@ed.test", subject="ed25519"), e2e.keys["ed25519"],
                    domain="ed.test")
    delivered = _deliver(e2e, token, raw, "bob@ed.test")
    dkim = results(delivered, "dkim")
    assert [(r, p.get("header.a")) for r, p in dkim] == [("pass", "ed25519-sha256")]
    assert [r for r, _ in results(delivered, "dmarc")] == ["pass"]


# -- DMARC (RFC 9989 by default, RFC 7489 mode) -----------------------------------------


def test_dmarc_pass_via_spf_only(e2e, token):
    raw = make_message(token, from_="bob@dmarcspf.test", subject="dmarc via spf")
    delivered = _deliver(e2e, token, raw, "bob@dmarcspf.test")
    assert _mailfrom_spf(delivered) == ["pass"]
    assert "pass" not in [r for r, _ in results(delivered, "dkim")]
    dmarc = results(delivered, "dmarc")
    assert [r for r, _ in dmarc] == ["pass"]
    assert dmarc[0][1].get("header.from") == "dmarcspf.test"


def test_dmarc_pass_via_dkim_only(e2e, token):
    raw = dkim_sign(make_message(token, from_="bob@dmarcdkim.test", subject="dmarc via dkim"),
                    e2e.keys["rsa"], domain="dmarcdkim.test")
    delivered = _deliver(e2e, token, raw, "bob@dmarcdkim.test")
    assert _mailfrom_spf(delivered) == ["fail"]
    assert [r for r, _ in results(delivered, "dkim")] == ["pass"]
    assert [r for r, _ in results(delivered, "dmarc")] == ["pass"]


def test_dmarc_reject_is_5xx_at_end_of_data(e2e, token):
    raw = make_message(token, from_="bob@reject.test", subject="p=reject")
    _assert_rejected(e2e, token, _send(e2e, raw, "bob@reject.test"), "reject.test")


def _held_or_delivered(e2e, token: str, reply) -> str:
    """Where an accepted message ended up: Postfix's hold queue or the Maildir."""
    def where():
        if e2e.postfix.deliveries(token):
            return "delivered"
        m = e2e.postfix.queued(reply.queue_id)
        return "hold" if m and m["queue_name"] == "hold" else None
    return wait_for(where, f"{token} to be delivered or held")


def test_dmarc_quarantine_goes_to_the_hold_queue(e2e, token):
    raw = make_message(token, from_="bob@quarantine.test", subject="p=quarantine")
    reply = _send(e2e, raw, "bob@quarantine.test")
    assert reply.accepted and reply.queue_id, reply
    try:
        assert _held_or_delivered(e2e, token, reply) == "hold"
        assert e2e.postfix.queued(reply.queue_id)["sender"] == "bob@quarantine.test"
    finally:
        e2e.postfix.delete(reply.queue_id)


def test_pct0_applies_in_rfc7489_mode_only(e2e, token, reconfigure):
    """p=quarantine; pct=0: RFC 7489 §6.6.4 samples 0 % -> next-lower policy (none) ->
    delivered. RFC 9989 has no pct, so the default mode quarantines the same message."""
    raw = make_message(token, from_="bob@pct0.test", subject="pct=0 rfc9989")
    reply = _send(e2e, raw, "bob@pct0.test")
    assert reply.accepted, reply
    try:
        assert _held_or_delivered(e2e, token, reply) == "hold"
    finally:
        e2e.postfix.delete(reply.queue_id)

    reconfigure({"verify": {"dmarc_mode": "rfc7489"}})
    token2 = token + "b"
    raw = make_message(token2, from_="bob@pct0.test", subject="pct=0 rfc7489")
    reply = _send(e2e, raw, "bob@pct0.test")
    assert reply.accepted, reply
    try:
        assert _held_or_delivered(e2e, token2, reply) == "delivered"
    finally:
        e2e.postfix.delete(reply.queue_id)
    assert [r for r, _ in results(e2e.postfix.deliveries(token2)[0], "dmarc")] == ["fail"]


def test_sp_applies_to_a_subdomain(e2e, token):
    """sp.test: p=none; sp=reject. The organizational domain itself is only reported."""
    raw = make_message(token, from_="bob@sub.sp.test", subject="sp=reject")
    _assert_rejected(e2e, token, _send(e2e, raw, "bob@sub.sp.test"), "sub.sp.test")

    token2 = token + "b"
    raw = make_message(token2, from_="bob@sp.test", subject="p=none")
    delivered = _deliver(e2e, token2, raw, "bob@sp.test")
    dmarc = results(delivered, "dmarc")
    assert [r for r, _ in dmarc] == ["fail"]
    assert dmarc[0][1].get("policy.dmarc") == "none"


def _aligned_only_relaxed(e2e, token: str, domain: str) -> bytes:
    """SPF passes for mail.DOMAIN and DKIM passes with d=mail.DOMAIN; the From is DOMAIN."""
    raw = make_message(token, from_=f"bob@{domain}", subject=f"alignment {domain}")
    return dkim_sign(raw, e2e.keys["rsa"], domain=f"mail.{domain}")


def test_strict_alignment_rejects_subdomain_identifiers(e2e, token):
    raw = _aligned_only_relaxed(e2e, token, "strict.test")
    _assert_rejected(e2e, token, _send(e2e, raw, "bounce@mail.strict.test"), "strict.test")


def test_relaxed_alignment_accepts_subdomain_identifiers(e2e, token):
    raw = _aligned_only_relaxed(e2e, token, "relaxed.test")
    delivered = _deliver(e2e, token, raw, "bounce@mail.relaxed.test")
    assert _mailfrom_spf(delivered) == ["pass"]
    assert [r for r, _ in results(delivered, "dkim")] == ["pass"]
    assert [r for r, _ in results(delivered, "dmarc")] == ["pass"]


def test_ipv6_client(e2e, token):
    """v6.test authorises only 2001:db8::/32 and publishes p=reject."""
    raw = make_message(token, from_="bob@v6.test", subject="ipv6")
    delivered = _deliver(e2e, token, raw, "bob@v6.test", client_ip=SENDER_IP6)
    assert _mailfrom_spf(delivered) == ["pass"]
    assert [r for r, _ in results(delivered, "dmarc")] == ["pass"]


# -- From header rules (OpenDMARC CVE-2019-16378 / CVE-2021-34555) ----------------------


def test_multiple_from_headers_rejected(e2e, token):
    raw = make_message(token, from_=["bob@spfpass.test", "ceo@dmarcspf.test"], subject="two From")
    _assert_rejected(e2e, token, _send(e2e, raw, "bob@spfpass.test"))


def test_missing_from_header_rejected(e2e, token):
    raw = make_message(token, from_=None, subject="no From")
    _assert_rejected(e2e, token, _send(e2e, raw, "bob@spfpass.test"))


def test_own_domain_spoof_from_outside_rejected(e2e, token):
    """reject_own_domain_spoof (default on): From one of our signing domains, no aligned pass."""
    raw = make_message(token, from_="ceo@example.com", subject="spoof")
    _assert_rejected(e2e, token, _send(e2e, raw, "ceo@example.com"))


# -- Authentication-Results (RFC 8601 §5, OpenDKIM CVE-2022-48521) -----------------------

FORGED = [
    f"{MX_NAME}; spf=pass smtp.mailfrom=forged.test; dkim=pass header.d=forged.test",
    "MX.INBOX.TEST; dmarc=pass header.from=forged.test",
    "Mx.Inbox.Test 1; dkim=pass header.d=bank.example.net",
    f"{MX_NAME} (checked by the sender, honest); arc=pass",
    f"(a comment first) {MX_NAME}; dkim=pass header.d=forged.test",
    f"{MX_NAME};\r\n\tdkim=pass\r\n\theader.d=forged.test",
]
FOREIGN = "relay.example.net; spf=fail smtp.mailfrom=forged.test"


def test_forged_authentication_results_removed(e2e, token):
    """Six adjacent forgeries (mixed case, version, comments, folding) around a foreign one."""
    headers = [("Authentication-Results", v) for v in FORGED[:3]]
    headers += [("Authentication-Results", FOREIGN)]
    headers += [("Authentication-Results", v) for v in FORGED[3:]]
    raw = make_message(token, from_="bob@forged.test", subject="forged A-R", headers=headers)
    delivered = _deliver(e2e, token, raw, "bob@forged.test")
    ours = auth_results(delivered)
    assert len(ours) == 1, header_values(delivered, "Authentication-Results")
    # ... and it is ours: the message is unsigned, SPF really passes.
    assert [r for r, _ in results(delivered, "dkim")] in ([], ["none"])
    assert _mailfrom_spf(delivered) == ["pass"]
    assert auth_results(delivered, "relay.example.net"), "a foreign authserv-id must survive"
    # Ours is the topmost header: inserted at the top, above Postfix's Received.
    top_ar = next(i for i, (n, _) in enumerate(headers_of(delivered)) if n.lower() == "authentication-results")
    first_received = next(i for i, (n, _) in enumerate(headers_of(delivered)) if n.lower() == "received")
    assert top_ar < first_received


# -- `authmilter verify` reproduces what the milter added (issue 4 item 2) ----------------


def _norm(ar: str) -> str:
    value = ar.split(":", 1)[1] if ar.lower().startswith("authentication-results:") else ar
    return re.sub(r"\s+", " ", value).strip()


def test_verify_command_reproduces_authentication_results(e2e, token, tmp_path):
    raw = dkim_sign(make_message(token, from_="bob@verify.test", subject="verify me"), e2e.keys["rsa"],
                    domain="verify.test")
    delivered = _deliver(e2e, token, raw, "bob@verify.test")
    ours = [v for v in header_values(delivered, "Authentication-Results")
            if _norm(v).lower().startswith(MX_NAME)]
    assert len(ours) == 1
    saved = tmp_path / "inbound.eml"
    saved.write_bytes(delivered)
    proc = subprocess.run([e2e.exe, "verify", str(saved), "--client-ip", SENDER_IP, "--helo", HELO,
                           "--mail-from", "bob@verify.test", "-c", str(e2e.milter.config), "--json"],
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    report = json.loads(proc.stdout)
    assert report["action"] == "accept"
    assert _norm(report["authentication_results"]) == _norm(ours[0])
